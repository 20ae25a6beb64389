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

Memory: writing holds one shard's FAISS index and one batch of its ids rows (the rest
are staged on disk, `IdsStaging`); `open_index_mmap` maps the FAISS file (IVF lists and
flat codes stay on disk, paged in by the kernel) and holds only the coarse quantizer.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.errors import CorruptShardError
from indexer.factory import ivf_of, quantizer_fingerprint
from store.atomic import TEMP_PREFIX, atomic_write

SHARDS_DIR = "shards"
IDS_ROW_GROUP = 1024
"""Rows per row group of an ids Parquet: the most texts read to return one hit."""
NO_SLOT = -1
_COPY_ROWS = 16 * IDS_ROW_GROUP
"""Rows copied at a time from a shard's staged ids into its published file."""

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


class IdsStaging:
    """The ids rows of a shard being built, appended to a staging Parquet beside the shard files.

    Rows arrive batch by batch in ascending id order (a range is read in PMID order), so a
    shard's chunk texts are never all held in memory; `write_shard` then copies them into
    the published ids file, adding each vector's slot. The staging file has a ``.tmp-``
    name (`indexer.files` removes one a killed rebuild left behind) and is deleted once
    the shard is written, or by `discard`.
    """

    def __init__(self, index_dir: Path, number: int, digest: str) -> None:
        folder = index_dir / SHARDS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{TEMP_PREFIX}{shard_stem(number, digest)}.ids.parquet."
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".staging", dir=folder)
        os.close(fd)
        self.path = Path(name)
        self.rows = 0
        self._last = -1
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(self.path, IDS_SCHEMA, compression="lz4")

    def append(self, table: pa.Table) -> None:
        """Stage ``table``'s rows; their ids must follow every id staged so far."""
        ids = table.column("id").to_numpy()
        if not len(ids):
            return
        if self._writer is None:
            raise ValueError(f"{self.path}: staging already closed")
        if ids[0] <= self._last or bool(np.any(np.diff(ids) <= 0)):
            raise ValueError(f"{self.path}: ids rows must arrive in ascending id order")
        self._writer.write_table(table.select(IDS_SCHEMA.names).cast(IDS_SCHEMA))
        self._last = int(ids[-1])
        self.rows += len(ids)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The staged rows, in order, a few row groups at a time (closes the staging writer)."""
        self.close()
        yield from pq.ParquetFile(self.path).iter_batches(batch_size=_COPY_ROWS)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def write_shard(index_dir: Path, number: int, digest: str, index: Any, rows: pa.Table | IdsStaging) -> ShardEntry:
    """Write index then ids atomically under the shard's content name; return its entry.

    ``rows`` is the whole ids table (sorted here) or the staged rows of a build (already
    in id order, copied a few row groups at a time and then deleted). The ids rows are
    written sorted by id with each vector's slot, in row groups of `IDS_ROW_GROUP` rows
    with id and pmid statistics. Memory: the FAISS index and one copied batch; the index
    is streamed to its file, not serialised to a buffer first.
    """
    import faiss

    folder = index_dir / SHARDS_DIR
    stem = shard_stem(number, digest)
    index_path, ids_path = folder / f"{stem}.faiss", folder / f"{stem}.ids.parquet"
    if isinstance(rows, pa.Table):
        table = rows.select(IDS_SCHEMA.names).cast(IDS_SCHEMA)
        table = table.take(np.argsort(table.column("id").to_numpy(), kind="stable"))
        batches: Iterable[pa.RecordBatch] = table.to_batches(max_chunksize=_COPY_ROWS)
    else:
        batches = rows.batches()
    callback_writer: Any = faiss.PyCallbackIOWriter  # type: ignore[attr-defined]
    with atomic_write(index_path) as handle:
        faiss.write_index(index, callback_writer(handle.write))
    lookup = slot_lookup(index)
    with atomic_write(ids_path) as handle:
        writer = pq.ParquetWriter(
            handle, IDS_SCHEMA.append(SLOT_FIELD), compression="zstd", write_statistics=["id", "pmid"]
        )
        try:
            for batch in batches:
                slots = slots_for(lookup, batch.column(0).to_numpy())
                writer.write_table(
                    pa.Table.from_batches([batch]).append_column(SLOT_FIELD, pa.array(slots)),
                    row_group_size=IDS_ROW_GROUP,
                )
        finally:
            writer.close()
    if isinstance(rows, IdsStaging):
        rows.discard()
    return entry_for(number, digest, index_path, ids_path)


SlotLookup = tuple[np.ndarray, np.ndarray] | None
"""Every id of an index, sorted, with its slot; None where the layout has no slots."""


def slot_lookup(index: Any) -> SlotLookup:
    """Ids and slots of every vector of ``index`` (16 bytes a vector), sorted by id."""
    import faiss

    top: Any = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexIVF):
        stored, slots = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        invlists: Any = top.invlists
        for number in range(top.nlist):
            size = invlists.list_size(number)
            if size:
                stored.append(faiss.rev_swig_ptr(invlists.get_ids(number), size).copy())
                slots.append((np.int64(number) << np.int64(32)) | np.arange(size, dtype=np.int64))
        all_ids, all_slots = np.concatenate(stored), np.concatenate(slots)
    elif hasattr(top, "id_map") and not isinstance(faiss.downcast_index(top.index), faiss.IndexIVF):
        all_ids = faiss.vector_to_array(top.id_map).astype(np.int64)
        all_slots = np.arange(len(all_ids), dtype=np.int64)
    else:
        return None
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], all_slots[order]


def slots_for(lookup: SlotLookup, ids: np.ndarray) -> np.ndarray:
    """The slot of each of ``ids`` (see `SLOT_FIELD`); -1 where the layout has none or an id is absent."""
    out = np.full(len(ids), NO_SLOT, dtype=np.int64)
    if lookup is None or not len(ids) or not len(lookup[0]):
        return out
    sorted_ids, sorted_slots = lookup
    where = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
    found = sorted_ids[where] == ids
    out[found] = sorted_slots[where[found]]
    return out


def entry_for(number: int, digest: str, index_path: Path, ids_path: Path) -> ShardEntry:
    """The manifest entry of a written shard (reads only the ids file's pmid column)."""
    pmids = pq.read_table(ids_path, columns=["pmid"]).column("pmid").to_numpy()
    return ShardEntry(
        number=number,
        digest=digest,
        index_file=f"{SHARDS_DIR}/{index_path.name}",
        ids_file=f"{SHARDS_DIR}/{ids_path.name}",
        index_sha256=sha256_file(index_path),
        ids_sha256=sha256_file(ids_path),
        n_vectors=len(pmids),
        n_articles=int(np.count_nonzero(np.diff(pmids))) + 1 if len(pmids) else 0,
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
