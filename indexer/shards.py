"""Shard files: ``shards/shard-NNNNN-<digest>.faiss`` with ``.ids.parquet`` beside it.

A shard holds the chunks of the articles whose PMID // shard_size is NNNNN. Its name
carries a digest of its content, so a rebuild never overwrites a file the published
manifest points at, and a resumed rebuild finds shards it already wrote. The ids
Parquet maps each FAISS id (``pmid << 8 | chunk``) to pmid, chunk, text span, article
and chunk hashes, the chunk text and the vector's slot in the FAISS file (inverted list
and offset for IVF, position for IDMap); its rows are sorted by id in row groups of
`IDS_ROW_GROUP` rows, so a reader finds any id's row group from the footer statistics
and reads texts only for hits. Shards of an IVF index share one trained quantizer;
`check_same_quantizer` proves it before any merge (FAISS does not).

Memory: writing holds one shard; `open_index_mmap` maps the FAISS file (IVF lists and
flat codes stay on disk, paged in by the kernel) and holds only the coarse quantizer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.errors import CorruptShardError
from indexer.factory import ivf_of, quantizer_fingerprint
from store.atomic import atomic_write, atomic_write_bytes

SHARDS_DIR = "shards"
IDS_ROW_GROUP = 1024
"""Rows per row group of an ids Parquet: the most texts read to return one hit."""
NO_SLOT = -1

IDS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("pmid", pa.int64(), nullable=False),
        pa.field("chunk", pa.int16(), nullable=False),
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
        pa.field("doc_hash", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
    ]
)
SLOT_FIELD = pa.field("slot", pa.int64(), nullable=False)
"""Where a vector lives in its FAISS file: ``list << 32 | offset`` (IVF), position (IDMap), or -1."""


@dataclass(frozen=True)
class ShardEntry:
    """A shard as the manifest records it."""

    number: int
    digest: str
    index_file: str
    ids_file: str
    index_sha256: str
    ids_sha256: str
    n_vectors: int
    n_articles: int
    pmid_min: int
    pmid_max: int
    index_bytes: int | None = None
    ids_bytes: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardEntry:
        optional = {"index_bytes", "ids_bytes"}
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data or name not in optional})


def shard_stem(number: int, digest: str) -> str:
    return f"shard-{number:05d}-{digest[:12]}"


def shard_digest(parts: list[str], pmids: np.ndarray, doc_hashes: list[str]) -> str:
    """Digest of what a shard holds: build settings plus every (pmid, article hash)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(np.ascontiguousarray(pmids, dtype=np.int64).tobytes())
    digest.update("\n".join(doc_hashes).encode())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(index_dir: Path, number: int, digest: str, index: Any, table: pa.Table) -> ShardEntry:
    """Write index then ids atomically under the shard's content name; return its entry.

    The ids rows are written sorted by id with each vector's slot, in row groups of
    `IDS_ROW_GROUP` rows with id statistics.
    """
    import faiss

    folder = index_dir / SHARDS_DIR
    stem = shard_stem(number, digest)
    index_path, ids_path = folder / f"{stem}.faiss", folder / f"{stem}.ids.parquet"
    atomic_write_bytes(index_path, faiss.serialize_index(index).tobytes())
    table = table.select(IDS_SCHEMA.names).cast(IDS_SCHEMA)
    table = table.take(np.argsort(table.column("id").to_numpy(), kind="stable"))
    table = table.append_column(SLOT_FIELD, pa.array(vector_slots(index, table.column("id").to_numpy())))
    with atomic_write(ids_path) as handle:
        pq.write_table(
            table,
            handle,
            compression="zstd",
            row_group_size=IDS_ROW_GROUP,
            write_statistics=["id", "pmid"],
        )
    return entry_for(number, digest, index_path, ids_path, table)


def vector_slots(index: Any, ids: np.ndarray) -> np.ndarray:
    """The slot of each of ``ids`` in ``index`` (see `SLOT_FIELD`); -1 where the layout has none."""
    import faiss

    out = np.full(len(ids), NO_SLOT, dtype=np.int64)
    if not len(ids):
        return out
    top: Any = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexIVF):
        stored, slots = [], []
        invlists: Any = top.invlists
        for number in range(top.nlist):
            size = invlists.list_size(number)
            if size:
                stored.append(faiss.rev_swig_ptr(invlists.get_ids(number), size).copy())
                slots.append((np.int64(number) << np.int64(32)) | np.arange(size, dtype=np.int64))
        if not stored:
            return out
        all_ids, all_slots = np.concatenate(stored), np.concatenate(slots)
    elif hasattr(top, "id_map") and not isinstance(faiss.downcast_index(top.index), faiss.IndexIVF):
        all_ids = faiss.vector_to_array(top.id_map).astype(np.int64)
        all_slots = np.arange(len(all_ids), dtype=np.int64)
    else:
        return out
    order = np.argsort(all_ids, kind="stable")
    where = np.searchsorted(all_ids[order], ids)
    where = np.minimum(where, len(all_ids) - 1)
    found = all_ids[order][where] == ids
    out[found] = all_slots[order][where[found]]
    return out


def entry_for(number: int, digest: str, index_path: Path, ids_path: Path, table: pa.Table) -> ShardEntry:
    pmids = table.column("pmid").to_numpy()
    return ShardEntry(
        number=number,
        digest=digest,
        index_file=f"{SHARDS_DIR}/{index_path.name}",
        ids_file=f"{SHARDS_DIR}/{ids_path.name}",
        index_sha256=sha256_file(index_path),
        ids_sha256=sha256_file(ids_path),
        n_vectors=table.num_rows,
        n_articles=len(np.unique(pmids)),
        pmid_min=int(pmids.min()) if len(pmids) else 0,
        pmid_max=int(pmids.max()) if len(pmids) else 0,
        index_bytes=index_path.stat().st_size,
        ids_bytes=ids_path.stat().st_size,
    )


def find_written(index_dir: Path, number: int, digest: str) -> tuple[Path, Path] | None:
    """Both files of a shard an earlier (possibly killed) run already published, if any."""
    stem = shard_stem(number, digest)
    index_path = index_dir / SHARDS_DIR / f"{stem}.faiss"
    ids_path = index_dir / SHARDS_DIR / f"{stem}.ids.parquet"
    return (index_path, ids_path) if index_path.is_file() and ids_path.is_file() else None


def read_ids(index_dir: Path, entry: ShardEntry, columns: list[str] | None = None) -> pa.Table:
    """The whole ids table of a shard (the `IDS_SCHEMA` columns unless ``columns`` are named)."""
    path = index_dir / entry.ids_file
    try:
        return pq.read_table(path, columns=columns or IDS_SCHEMA.names)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShardError(f"{path}: corrupt shard ids file ({exc}); run `indexer rebuild --full`") from exc


def read_index(index_dir: Path, entry: ShardEntry, check: bool = True) -> Any:
    """Load a shard's FAISS index; with ``check``, its checksum and size must match the entry."""
    import faiss

    path = index_dir / entry.index_file
    if not path.is_file():
        raise CorruptShardError(f"{path}: shard file missing; run `indexer rebuild --full`")
    data = path.read_bytes()
    if check and hashlib.sha256(data).hexdigest() != entry.index_sha256:
        raise CorruptShardError(f"{path}: corrupt shard (checksum mismatch); run `indexer rebuild --full`")
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise CorruptShardError(f"{path}: corrupt shard (unreadable by FAISS); run `indexer rebuild --full`") from exc
    if index.ntotal != entry.n_vectors:
        raise CorruptShardError(f"{path}: corrupt shard ({index.ntotal} vectors, manifest says {entry.n_vectors})")
    return index


def check_sizes(index_dir: Path, entry: ShardEntry) -> None:
    """Both files of a shard exist with the sizes the manifest records (no hashing)."""
    for name, size in ((entry.index_file, entry.index_bytes), (entry.ids_file, entry.ids_bytes)):
        path = index_dir / name
        try:
            found = path.stat().st_size
        except OSError:
            raise CorruptShardError(f"{path}: shard file missing; run `indexer rebuild --full`") from None
        if size is not None and found != size:
            raise CorruptShardError(
                f"{path}: corrupt shard ({found} bytes, manifest says {size}); run `indexer rebuild --full`"
            )


def check_checksums(index_dir: Path, entry: ShardEntry) -> None:
    """Both files of a shard hash to the manifest's SHA-256 (reads every byte: `indexer verify`)."""
    for name, expected in ((entry.index_file, entry.index_sha256), (entry.ids_file, entry.ids_sha256)):
        path = index_dir / name
        if not path.is_file():
            raise CorruptShardError(f"{path}: shard file missing; run `indexer rebuild --full`")
        if sha256_file(path) != expected:
            raise CorruptShardError(f"{path}: corrupt shard (checksum mismatch); run `indexer rebuild --full`")


def open_index_mmap(index_dir: Path, entry: ShardEntry) -> Any:
    """A shard's FAISS index, memory-mapped: IVF lists and flat codes stay in the file.

    The mapping outlives the file's removal, so a reader keeps working on a generation
    that a later rebuild has replaced.
    """
    import faiss

    check_sizes(index_dir, entry)
    path = index_dir / entry.index_file
    with path.open("rb") as handle:
        head = handle.read(4)
    ivf = head[:2] in (b"Iw", b"Iv")
    flags = faiss.IO_FLAG_MMAP if ivf else getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_READ_ONLY)
    try:
        index = faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise CorruptShardError(f"{path}: corrupt shard (unreadable by FAISS); run `indexer rebuild --full`") from exc
    if index.ntotal != entry.n_vectors:
        raise CorruptShardError(f"{path}: corrupt shard ({index.ntotal} vectors, manifest says {entry.n_vectors})")
    return index


def vectors_at_slots(index: Any, slots: np.ndarray) -> np.ndarray:
    """Stored vectors at ``slots`` (from the ids Parquet), decoded without a direct map."""
    import faiss

    out = np.zeros((len(slots), index.d), dtype=np.float32)
    top: Any = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexIVF):
        for row, slot in enumerate(slots.tolist()):
            top.reconstruct_from_offset(slot >> 32, slot & 0xFFFFFFFF, faiss.swig_ptr(out[row]))
        return out
    inner = faiss.downcast_index(top.index)
    if len(slots):
        out[:] = inner.reconstruct_batch(np.ascontiguousarray(slots, dtype=np.int64))
    return out


def check_same_quantizer(indexes: list[Any], names: list[str], expected: str | None) -> None:
    """Every shard's coarse quantizer must be the trained one; raise naming the first that is not."""
    for index, name in zip(indexes, names, strict=True):
        found = quantizer_fingerprint(index)
        if found != expected:
            raise CorruptShardError(f"{name}: quantizer differs from the trained one; run `indexer rebuild --full`")


def reconstruct(index: Any, ids: np.ndarray) -> np.ndarray:
    """Stored vectors of ``ids`` (exact for Flat codes, decoded for SQ/PQ)."""
    import faiss

    if len(ids) == 0:
        return np.zeros((0, index.d), dtype=np.float32)
    ivf = ivf_of(index)
    wrapped = type(faiss.downcast_index(index)).__name__.startswith("IndexIDMap")
    direct_map: Any = faiss.DirectMap  # type: ignore[attr-defined]
    if ivf is not None and not wrapped and ivf.direct_map.type == direct_map.NoMap:
        ivf.set_direct_map_type(direct_map.Hashtable)
    return np.asarray(index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64)), dtype=np.float32)


def merge_ivf(indexes: list[Any]) -> Any:
    """One IVF index holding every shard's vectors (quantizers must already be checked)."""
    import faiss

    merged = faiss.clone_index(indexes[0])
    for other in indexes[1:]:
        merged.merge_from(faiss.clone_index(other), 0)
    return merged
