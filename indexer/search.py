"""Searching a published index: `open_index(path).search(queries, k, pmids)` -> `Hit` lists.

Opening reads the manifest, checks every shard's file sizes and vector count, and
memory-maps the shards: IVF inverted lists and flat codes stay in their files and the
kernel pages in what a query touches (checksums are `indexer verify`'s job, or
``check=True``). Shards are searched one by one and their top-k merged; IVF shards
share one trained quantizer (proven on open), so a query's lists are chosen once and
probed in every shard. Texts are read only for the hits, from the row groups of the
ids Parquet that hold them. A ``pmids`` filter is answered exactly: the row groups
holding those articles give their chunks' slots, whose stored vectors are scored
directly, so a question's own documents are ranked whatever nprobe is.

Memory: the coarse quantizer and the Parquet footers (a few bytes per row group of
`IDS_ROW_GROUP` rows) per shard, plus what one batch of queries touches; it does not
grow with the vectors or texts of the index. An ``IndexIDMap2`` (Flat) shard also keeps
its id map in memory, about 50 bytes per vector; the 4-bit PQ tier keeps its codes in
memory (their layout cannot be mapped).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from indexer.embedding import Embedder
from indexer.errors import CorruptShardError, DimensionMismatchError, NotAnIndexError
from indexer.factory import is_plain_ivf, ivf_of, set_nprobe
from indexer.idsfile import IdsFile
from indexer.manifest import Manifest, read_manifest
from indexer.shards import (
    ShardEntry,
    check_checksums,
    check_same_quantizer,
    open_index_mmap,
    reconstruct,
    vectors_at_slots,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its article, chunk number, inner-product score and text."""

    pmid: int
    chunk: int
    score: float
    text: str


@dataclass
class Shard:
    """One memory-mapped shard: its manifest entry, FAISS index and ids file."""

    entry: ShardEntry
    index: Any
    ids: IdsFile

    def vectors(self, table: pa.Table) -> np.ndarray:
        """Stored vectors of the rows of ``table`` (read with the slot column when the file has it)."""
        if "slot" in table.column_names:
            slots = table.column("slot").to_numpy()
            if len(slots) and slots.min() >= 0:
                return vectors_at_slots(self.index, slots)
        return reconstruct(self.index, table.column("id").to_numpy())


class ShardSet:
    """The memory-mapped shards of one manifest, searchable by vector."""

    def __init__(self, index_dir: Path, manifest: Manifest, check: bool = False) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        entries = sorted(manifest.shards, key=lambda e: e.number)
        if check:
            for entry in entries:
                check_checksums(index_dir, entry)
        self.shards = [Shard(e, open_index_mmap(index_dir, e), IdsFile(index_dir / e.ids_file)) for e in entries]
        for shard in self.shards:
            if shard.ids.num_rows != shard.entry.n_vectors:
                raise CorruptShardError(
                    f"{shard.ids.path}: {shard.ids.num_rows} ids for {shard.entry.n_vectors} vectors; "
                    "run `indexer rebuild --full`"
                )
        self.indexes = [s.index for s in self.shards]
        if manifest.quantizer_sha256 is not None:
            names = [str(index_dir / e.index_file) for e in entries]
            check_same_quantizer(self.indexes, names, manifest.quantizer_sha256)
        self.shared_quantizer = (
            manifest.quantizer_sha256 is not None and len(self.indexes) > 1 and all(map(is_plain_ivf, self.indexes))
        )
        self._by_number = {s.entry.number: s for s in self.shards}
        self._lock = threading.Lock()
        self._all: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.nprobe = manifest.nprobe or 1

    @property
    def ntotal(self) -> int:
        return int(sum(i.ntotal for i in self.indexes))

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) over every shard."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nq = len(queries)
        scores, ids = [], []
        with self._lock:
            for index, (d, i) in zip(self.indexes, self._per_shard(queries, k, nprobe or self.nprobe), strict=True):
                if index.ntotal:
                    scores.append(d)
                    ids.append(i)
        if not scores:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        d_all, i_all = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
        d_all = np.where(i_all < 0, -np.inf, d_all)
        top = np.argsort(-d_all, axis=1, kind="stable")[:, :k]
        d_top, i_top = np.take_along_axis(d_all, top, 1), np.take_along_axis(i_all, top, 1)
        if d_top.shape[1] < k:
            pad = k - d_top.shape[1]
            d_top = np.pad(d_top, ((0, 0), (0, pad)), constant_values=-np.inf)
            i_top = np.pad(i_top, ((0, 0), (0, pad)), constant_values=-1)
        return d_top, i_top

    def _per_shard(self, queries: np.ndarray, k: int, nprobe: int) -> Iterable[tuple[np.ndarray, np.ndarray]]:
        """Each shard's top-k; with a shared quantizer the probed lists are chosen once for all shards."""
        if self.shared_quantizer:
            first: Any = ivf_of(self.indexes[0])
            set_nprobe(self.indexes[0], nprobe)
            probe = int(first.nprobe)
            coarse_d, coarse_i = first.quantizer.search(queries, probe)
            for index in self.indexes:
                ivf: Any = ivf_of(index)
                ivf.nprobe = probe
                yield ivf.search_preassigned(queries, min(k, max(index.ntotal, 1)), coarse_i, coarse_d)
            return
        for index in self.indexes:
            set_nprobe(index, nprobe)
            yield index.search(queries, min(k, max(index.ntotal, 1)))

    def shard_of_pmid(self, pmid: int) -> Shard | None:
        shard = self._by_number.get(pmid // self.manifest.shard_size)
        if shard is not None:
            return shard
        return next((s for s in self.shards if s.entry.pmid_min <= pmid <= s.entry.pmid_max), None)

    def _group_by_shard(self, pmids: np.ndarray) -> list[tuple[Shard, np.ndarray]]:
        """Positions of ``pmids`` grouped by the shard that holds their range."""
        groups: dict[int, list[int]] = {}
        shards: dict[int, Shard] = {}
        for row, pmid in enumerate(pmids.tolist()):
            shard = self.shard_of_pmid(int(pmid))
            if shard is not None:
                groups.setdefault(shard.entry.number, []).append(row)
                shards[shard.entry.number] = shard
        return [(shards[n], np.asarray(rows, dtype=np.int64)) for n, rows in groups.items()]

    def rows_for_ids(self, ids: np.ndarray, columns: Sequence[str]) -> dict[int, tuple[Any, ...]]:
        """``id -> (values of columns)`` read from only the row groups that hold these ids."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        out: dict[int, tuple[Any, ...]] = {}
        for shard, rows in self._group_by_shard(ids >> 8):
            table = shard.ids.read_ids(ids[rows], columns)
            values = [table.column(c).to_pylist() for c in ("id", *columns)]
            for found in zip(*values, strict=True):
                out[int(found[0])] = found[1:]
        return out

    def candidates(self, pmids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Ids and stored vectors of every chunk of these articles."""
        wanted = np.unique(np.fromiter((int(p) for p in pmids), dtype=np.int64))
        ids, vectors = [np.zeros(0, np.int64)], [np.zeros((0, self.manifest.dim), np.float32)]
        for shard, rows in self._group_by_shard(wanted):
            table = shard.ids.read_pmids(wanted[rows], ["slot"] if shard.ids.has_slots else [])
            if table.num_rows:
                ids.append(table.column("id").to_numpy())
                with self._lock:
                    vectors.append(shard.vectors(table))
        return np.concatenate(ids), np.concatenate(vectors)

    def indexed(self, pmids: Iterable[int]) -> set[int]:
        """Which of ``pmids`` have at least one chunk in the index."""
        wanted = np.unique(np.fromiter((int(p) for p in pmids), dtype=np.int64))
        found: set[int] = set()
        for shard, rows in self._group_by_shard(wanted):
            ids = shard.ids.read_pmids(wanted[rows], []).column("id").to_numpy()
            found.update(int(p) for p in np.unique(ids >> 8).tolist())
        return found

    # Whole-index views, for recall measurement in build and verify (they read every id).

    def _all_ids(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._all is None:
            ids, owners, slots = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
            for n, shard in enumerate(self.shards):
                table = shard.ids.read_all(["id", "slot"] if shard.ids.has_slots else ["id"])
                ids.append(table.column("id").to_numpy())
                owners.append(np.full(table.num_rows, n, dtype=np.int32))
                has = "slot" in table.column_names
                slots.append(table.column("slot").to_numpy() if has else np.full(table.num_rows, -1, np.int64))
            all_ids = np.concatenate(ids)
            order = np.argsort(all_ids, kind="stable")
            self._all = (all_ids[order], np.concatenate(owners)[order], np.concatenate(slots)[order])
        return self._all

    @property
    def sorted_ids(self) -> np.ndarray:
        """Every id of the index, sorted (reads the id column of every shard)."""
        return self._all_ids()[0]

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """Stored vectors for positions into `sorted_ids`."""
        sorted_ids, owners, slots = self._all_ids()
        out = np.zeros((len(positions), self.manifest.dim), dtype=np.float32)
        owner = owners[positions]
        for n in np.unique(owner).tolist():
            mask = owner == n
            table = pa.table({"id": sorted_ids[positions[mask]], "slot": slots[positions[mask]]})
            with self._lock:
                out[mask] = self.shards[n].vectors(table)
        return out


class Index:
    """A published index opened for search."""

    def __init__(
        self, index_dir: Path, manifest: Manifest, embedder: Embedder | None, check: bool = False, device: str = "auto"
    ) -> None:
        self.path = index_dir
        self.device = device
        self.manifest = manifest
        self.shards = ShardSet(index_dir, manifest, check=check)
        self._embedder = embedder
        if embedder is not None:
            self._check_embedder(embedder)

    def _check_embedder(self, embedder: Embedder) -> None:
        if embedder.dim != self.manifest.dim:
            raise DimensionMismatchError(
                f"{self.path}: model {embedder.model_id} has dimension {embedder.dim}, "
                f"the index was built with {self.manifest.model} (dimension {self.manifest.dim})"
            )

    def use_embedder(self, embedder: Embedder) -> None:
        """Embed queries with ``embedder`` (its dimension must match the manifest)."""
        self._check_embedder(embedder)
        self._embedder = embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.manifest.model, device=self.device)
            self._check_embedder(self._embedder)
        return self._embedder

    def __len__(self) -> int:
        return self.shards.ntotal

    def summary(self) -> dict[str, Any]:
        """What the manifest says about this index, for `/health` and logs."""
        m = self.manifest
        return {
            "index": str(self.path),
            "model": m.model,
            "dim": m.dim,
            "factory": m.factory,
            "nprobe": m.nprobe,
            "recall_at_10": m.recall_at_10,
            "shards": len(m.shards),
            "vectors": m.n_vectors,
            "articles": m.n_articles,
            "created_at": m.created_at,
        }

    def indexed(self, pmids: Iterable[int]) -> set[int]:
        """Which of ``pmids`` have at least one chunk in the index (reads only their row groups)."""
        return self.shards.indexed(pmids)

    def pmids(self) -> set[int]:
        """Every PMID with a chunk in the index. Reads every id: prefer `indexed` with the PMIDs you have."""
        return {int(p) for p in np.unique(self.shards.sorted_ids >> 8).tolist()}

    def search(
        self,
        queries: list[str] | str,
        k: int = 10,
        pmids: Iterable[int] | list[Iterable[int]] | None = None,
    ) -> list[list[Hit]]:
        """Top-k chunks per query; ``pmids`` (one set for all, or one per query) restricts the articles."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        vectors = self.embedder.encode(texts)
        return self.search_vectors(vectors, k, pmids)

    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, pmids: Iterable[int] | list[Iterable[int]] | None = None
    ) -> list[list[Hit]]:
        """Like `search`, for query vectors already embedded (normalised)."""
        if pmids is None:
            scores, ids = self.shards.search(vectors, k)
            return self._hits(list(zip(scores, ids, strict=True)))
        filters = _per_query_filters(pmids, len(vectors))
        found = []
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for vector, wanted in zip(vectors, filters, strict=True):
            key = id(wanted)
            if key not in cache:
                cache[key] = self.shards.candidates(wanted)
            ids, stored = cache[key]
            scores = stored @ np.asarray(vector, dtype=np.float32)
            top = np.argsort(-scores, kind="stable")[:k]
            found.append((scores[top], ids[top]))
        return self._hits(found)

    def _hits(self, results: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[list[Hit]]:
        """Hits with their texts, read once for all queries of a batch."""
        wanted = [i[i >= 0] for _, i in results]
        all_ids = np.concatenate(wanted) if wanted else np.zeros(0, np.int64)
        rows = self.shards.rows_for_ids(all_ids, ["pmid", "chunk", "text"]) if len(all_ids) else {}
        out = []
        for scores, ids in results:
            hits = []
            for score, found in zip(scores.tolist(), ids.tolist(), strict=True):
                row = rows.get(int(found)) if found >= 0 else None
                if row is not None:
                    hits.append(Hit(int(row[0]), int(row[1]), float(score), row[2]))
            out.append(hits)
        return out


def _per_query_filters(pmids: Iterable[int] | list[Iterable[int]], n_queries: int) -> list[Sequence[int]]:
    items = list(pmids)
    if items and not isinstance(items[0], int | np.integer):
        if len(items) != n_queries:
            raise ValueError(f"got {len(items)} pmid filters for {n_queries} queries")
        return [list(x) for x in items]  # type: ignore[call-overload]
    shared = [int(x) for x in items]  # type: ignore[call-overload]
    return [shared] * n_queries


def open_index(
    path: str | os.PathLike[str], embedder: Embedder | None = None, check: bool = False, device: str = "auto"
) -> Index:
    """Open the index at ``path`` (memory-mapped; sizes and counts checked, checksums only with ``check``).

    Queries are embedded by the manifest's model, loaded on first search on ``device``,
    unless ``embedder`` is given.
    """
    index_dir = Path(path)
    manifest = read_manifest(index_dir)
    if manifest is None:
        raise NotAnIndexError(f"{index_dir}: no index here (no manifest.json); run `indexer rebuild` first")
    return Index(index_dir, manifest, embedder, check=check, device=device)
