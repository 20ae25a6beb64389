"""Shard files: ``shards/shard-NNNNN-<digest>.faiss`` with ``.ids.parquet`` beside it.

A shard holds the chunks of the articles whose PMID // shard_size is NNNNN. Its name
carries a digest of its content, so a rebuild never overwrites a file the published
manifest points at, and a resumed rebuild finds shards it already wrote. The ids
Parquet maps each FAISS id (``pmid << 8 | chunk``) to pmid, chunk, text span, article
and chunk hashes and the chunk text. Shards of an IVF index share one trained
quantizer; `check_same_quantizer` proves it before any merge (FAISS does not).
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

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardEntry:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


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
    """Write index then ids atomically under the shard's content name; return its entry."""
    import faiss

    folder = index_dir / SHARDS_DIR
    stem = shard_stem(number, digest)
    index_path, ids_path = folder / f"{stem}.faiss", folder / f"{stem}.ids.parquet"
    atomic_write_bytes(index_path, faiss.serialize_index(index).tobytes())
    with atomic_write(ids_path) as handle:
        pq.write_table(table.cast(IDS_SCHEMA), handle, compression="zstd")
    return entry_for(number, digest, index_path, ids_path, table)


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
    )


def find_written(index_dir: Path, number: int, digest: str) -> tuple[Path, Path] | None:
    """Both files of a shard an earlier (possibly killed) run already published, if any."""
    stem = shard_stem(number, digest)
    index_path = index_dir / SHARDS_DIR / f"{stem}.faiss"
    ids_path = index_dir / SHARDS_DIR / f"{stem}.ids.parquet"
    return (index_path, ids_path) if index_path.is_file() and ids_path.is_file() else None


def read_ids(index_dir: Path, entry: ShardEntry, columns: list[str] | None = None) -> pa.Table:
    path = index_dir / entry.ids_file
    try:
        return pq.read_table(path, columns=columns)
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
