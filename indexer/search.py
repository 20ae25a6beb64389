"""Searching a published index: `open_index(path).search(queries, k, pmids)` -> `Hit` lists.

All shards named by the manifest are loaded and checked; IVF shards, once their
quantizers are proven identical, are merged into one index. A ``pmids`` filter is
answered exactly: the stored vectors of those articles' chunks are scored directly,
so a question's own documents are ranked whatever nprobe is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from indexer.embedding import Embedder
from indexer.errors import DimensionMismatchError, NotAnIndexError
from indexer.factory import is_plain_ivf, set_nprobe
from indexer.manifest import Manifest, read_manifest
from indexer.shards import check_same_quantizer, merge_ivf, read_ids, read_index, reconstruct

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: its article, chunk number, inner-product score and text."""

    pmid: int
    chunk: int
    score: float
    text: str


class ShardSet:
    """The loaded shards of one manifest, searchable by vector."""

    def __init__(self, index_dir: Path, manifest: Manifest, check: bool = True) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        entries = sorted(manifest.shards, key=lambda e: e.number)
        indexes = [read_index(index_dir, e, check=check) for e in entries]
        if manifest.quantizer_sha256 is not None:
            check_same_quantizer(indexes, [str(index_dir / e.index_file) for e in entries], manifest.quantizer_sha256)
        if len(indexes) > 1 and all(is_plain_ivf(i) for i in indexes):
            indexes = [merge_ivf(indexes)]
        self.indexes = indexes
        tables = [read_ids(index_dir, e) for e in entries]
        self.ids = pa.concat_tables(tables) if tables else None
        ids = self.ids.column("id").to_numpy() if self.ids is not None else np.zeros(0, np.int64)
        self.order = np.argsort(ids, kind="stable")
        self.sorted_ids = ids[self.order]
        self.owner = self._owners(entries, tables)
        self.nprobe = manifest.nprobe or 1

    def _owners(self, entries: Sequence[Any], tables: Sequence[pa.Table]) -> np.ndarray:
        """Index (into self.indexes) that holds each id, aligned with sorted_ids."""
        if len(self.indexes) == 1:
            return np.zeros(len(self.sorted_ids), dtype=np.int32)
        owner = np.concatenate([np.full(t.num_rows, n, dtype=np.int32) for n, t in enumerate(tables)])
        return owner[self.order]

    @property
    def ntotal(self) -> int:
        return int(sum(i.ntotal for i in self.indexes))

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) over every shard."""
        nq = len(queries)
        scores, ids = [], []
        for index in self.indexes:
            set_nprobe(index, nprobe or self.nprobe)
            d, i = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, max(index.ntotal, 1)))
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

    def positions_of_pmids(self, pmids: Iterable[int]) -> np.ndarray:
        """Positions in sorted_ids of every chunk of the given articles (ids sort by pmid)."""
        wanted = np.unique(np.fromiter((int(p) for p in pmids), dtype=np.int64))
        lo = np.searchsorted(self.sorted_ids, wanted << 8, side="left")
        hi = np.searchsorted(self.sorted_ids, (wanted + 1) << 8, side="left")
        if not len(wanted):
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)]).astype(np.int64)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """Stored vectors for positions into sorted_ids."""
        out = np.zeros((len(positions), self.manifest.dim), dtype=np.float32)
        owners = self.owner[positions]
        for n in np.unique(owners):
            mask = owners == n
            out[mask] = reconstruct(self.indexes[int(n)], self.sorted_ids[positions[mask]])
        return out

    def search_within(self, query: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of one query among the chunks at ``positions``."""
        if not len(positions):
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores = self.vectors_at(positions) @ query
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top], self.sorted_ids[positions[top]]

    def row_of(self, ids: np.ndarray) -> np.ndarray:
        """Row numbers in the concatenated ids table for faiss ids."""
        return self.order[np.searchsorted(self.sorted_ids, ids)]


class Index:
    """A published index opened for search."""

    def __init__(
        self, index_dir: Path, manifest: Manifest, embedder: Embedder | None, check: bool = True, device: str = "auto"
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

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.manifest.model, device=self.device)
            self._check_embedder(self._embedder)
        return self._embedder

    def __len__(self) -> int:
        return self.shards.ntotal

    def pmids(self) -> set[int]:
        """PMIDs that have at least one chunk in the index."""
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
            return [self._hits(s, i) for s, i in zip(scores, ids, strict=True)]
        filters = _per_query_filters(pmids, len(vectors))
        results = []
        cache: dict[int, np.ndarray] = {}
        for vector, wanted in zip(vectors, filters, strict=True):
            key = id(wanted)
            if key not in cache:
                cache[key] = self.shards.positions_of_pmids(wanted)
            s, i = self.shards.search_within(vector, cache[key], k)
            results.append(self._hits(s, i))
        return results

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
        keep = ids >= 0
        scores, ids = scores[keep], ids[keep]
        if not len(ids) or self.shards.ids is None:
            return []
        rows = self.shards.row_of(ids)
        table = self.shards.ids.take(pa.array(rows))
        pmid, chunk, text = (table.column(c).to_pylist() for c in ("pmid", "chunk", "text"))
        return [Hit(int(p), int(c), float(s), t) for p, c, s, t in zip(pmid, chunk, scores, text, strict=True)]


def _per_query_filters(pmids: Iterable[int] | list[Iterable[int]], n_queries: int) -> list[Sequence[int]]:
    items = list(pmids)
    if items and not isinstance(items[0], int | np.integer):
        if len(items) != n_queries:
            raise ValueError(f"got {len(items)} pmid filters for {n_queries} queries")
        return [list(x) for x in items]  # type: ignore[call-overload]
    shared = [int(x) for x in items]  # type: ignore[call-overload]
    return [shared] * n_queries


def open_index(
    path: str | os.PathLike[str], embedder: Embedder | None = None, check: bool = True, device: str = "auto"
) -> Index:
    """Open the index at ``path``; queries are embedded by the manifest's model, loaded on first
    search on ``device``, unless ``embedder`` is given. ``check`` verifies shard checksums."""
    index_dir = Path(path)
    manifest = read_manifest(index_dir)
    if manifest is None:
        raise NotAnIndexError(f"{index_dir}: no index here (no manifest.json); run `indexer rebuild` first")
    return Index(index_dir, manifest, embedder, check=check, device=device)
