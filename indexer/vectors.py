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
        """Vectors of one batch of shard ``number``'s chunks (rows of ``keys``)."""
        return self.vectors_many([(number, keys, tokens, pmids)])[0][0]

    def vectors_many(
        self, batches: list[tuple[int, list[str], list[np.ndarray], np.ndarray]]
    ) -> list[tuple[np.ndarray, int, float]]:
        """``(vectors, chunks embedded, model seconds)`` of each batch ``(shard number, keys, tokens,
        pmids)``, given in shard order.

        Whatever the cache and the old shards do not hold is embedded in one model call for
        all the batches, so small ranges still reach the model in large, length-sorted calls;
        its seconds are shared among the batches by their chunks embedded.
        """
        outs: list[np.ndarray] = []
        missing: list[list[int]] = []
        for number, keys, _tokens, pmids in batches:
            self.cache.open(number)
            out = np.zeros((len(keys), self.embedder.dim), dtype=np.float32)
            rows: list[int] = []
            for row, key in enumerate(keys):
                cached = self.cache.get(key)
                if cached is not None:
                    out[row] = cached
                else:
                    rows.append(row)
            if self.old is not None and rows:
                rows = self._from_old(keys, pmids, rows, out)
            self.reused += len(keys) - len(rows)
            outs.append(out)
            missing.append(rows)
        todo = [tokens[r] for (_, _, tokens, _), rows in zip(batches, missing, strict=True) for r in rows]
        if not todo:
            return [(out, 0, 0.0) for out in outs]
        started = time.perf_counter()
        vectors = self.embedder.encode_tokens(todo)
        seconds = time.perf_counter() - started
        at = 0
        for (number, keys, _, _), out, rows in zip(batches, outs, missing, strict=True):
            if rows:
                part = vectors[at : at + len(rows)]
                at += len(rows)
                out[rows] = part
                self.cache.add(number, [keys[r] for r in rows], part)
        self.embedded += len(todo)
        self.embed_seconds += seconds
        if self.on_embed is not None:
            self.on_embed(len(todo), seconds)
        return [(out, len(rows), seconds * len(rows) / len(todo)) for out, rows in zip(outs, missing, strict=True)]

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
