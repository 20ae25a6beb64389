"""Vectors for a shard's chunk keys: the embedding cache first, then exact old shards, then the model.

`VectorSource` is what a range build and a training sample ask for vectors; it records
how many chunks the model embedded, how many were reused, and the model's seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.cache import EmbeddingCache
from indexer.manifest import Manifest, read_manifest
from indexer.shards import read_ids, read_index, reconstruct

if TYPE_CHECKING:
    from indexer.ranges import Settings, Worker


class VectorSource:
    """Vectors for chunk keys: the embedding cache, then old Flat shards, then the model."""

    def __init__(self, settings: Settings, worker: Worker, on_embed: Callable[[int, float], Any] | None = None) -> None:
        self.settings = settings
        self.index_dir = Path(settings.index)
        self.embedder = worker.embedder
        self.old: Manifest | None = read_manifest(self.index_dir) if settings.vectors_from_old else None
        self.old_by_number = {e.number: e for e in self.old.shards} if self.old else {}
        self.cache = EmbeddingCache(
            self.index_dir, self.embedder.model_id, settings.cache_every, self.embedder.precision
        )
        self._loaded: tuple[int, Any, dict[str, int]] | None = None
        self.embedded = 0
        self.reused = 0
        self.embed_seconds = 0.0
        self.on_embed = on_embed

    def _old_shard(self, number: int) -> tuple[Any, dict[str, int]] | None:
        if self._loaded is not None and self._loaded[0] == number:
            return self._loaded[1], self._loaded[2]
        entry = self.old_by_number.get(number)
        if entry is None:
            return None
        index = read_index(self.index_dir, entry)
        table = read_ids(self.index_dir, entry, ["id", "key"])
        keys = dict(zip(table.column("key").to_pylist(), table.column("id").to_pylist(), strict=True))
        self._loaded = (number, index, keys)
        return index, keys

    def vectors(self, number: int, keys: list[str], tokens: list[np.ndarray], pmids: np.ndarray) -> np.ndarray:
        self.cache.open(number)
        out = np.zeros((len(keys), self.embedder.dim), dtype=np.float32)
        missing: list[int] = []
        for row, key in enumerate(keys):
            cached = self.cache.get(key)
            if cached is not None:
                out[row] = cached
            else:
                missing.append(row)
        if self.old is not None and missing:
            missing = self._from_old(keys, pmids, missing, out)
        self.reused += len(keys) - len(missing)
        if missing:
            started = time.perf_counter()
            vectors = self.embedder.encode_tokens([tokens[r] for r in missing])
            seconds = time.perf_counter() - started
            out[missing] = vectors
            self.cache.add(number, [keys[r] for r in missing], vectors)
            self.embedded += len(missing)
            self.embed_seconds += seconds
            if self.on_embed is not None:
                self.on_embed(len(missing), seconds)
        return out

    def _from_old(self, keys: list[str], pmids: np.ndarray, rows: list[int], out: np.ndarray) -> list[int]:
        assert self.old is not None
        numbers = pmids[rows] // self.old.shard_size
        still: list[int] = []
        for number in np.unique(numbers):
            group = [r for r, n in zip(rows, numbers, strict=True) if n == number]
            loaded = self._old_shard(int(number))
            if loaded is None:
                still.extend(group)
                continue
            index, known = loaded
            hits = [(r, known[keys[r]]) for r in group if keys[r] in known]
            if hits:
                out[[r for r, _ in hits]] = reconstruct(index, np.array([i for _, i in hits], dtype=np.int64))
            found = {r for r, _ in hits}
            still.extend(r for r in group if r not in found)
        return sorted(still)
