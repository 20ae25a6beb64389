"""Side cache of embeddings computed by a rebuild that has not published yet, one group per shard.

Vectors are appended in small ``.npz`` files ``<index>/cache/<model tag>/emb-<shard>-<n>.npz``
(each written atomically), so a rebuild killed mid-way does not embed them again. Memory
holds the vectors found on disk for one shard at a time (`open`: what a killed run or the
training sample cached) and at most ``every`` vectors waiting to be written; a group is
dropped once its shard is written (the shard file then holds the vectors), and `clear`
deletes only the files the cache wrote. The tag covers the model and its precision, so
vectors of one precision are never served to a build in another.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from pathlib import Path

import numpy as np

from store.atomic import atomic_write_bytes

CACHE_DIR = "cache"
_FILE = re.compile(r"emb-(\d{5})-(\d{6})\.npz")
_TEMP = re.compile(r"\.tmp-emb-\d{5}-\d{6}\.npz\..*")


class EmbeddingCache:
    """Chunk key -> vector for the shard being built, persisted in batches."""

    def __init__(self, index_dir: Path, model_id: str, every: int, precision: str = "") -> None:
        tag = hashlib.blake2b(f"{model_id}\x00{precision}".encode(), digest_size=6).hexdigest()
        self.root = index_dir / CACHE_DIR
        self.folder = self.root / tag
        self.every = every
        self.number: int | None = None
        self.vectors: dict[str, np.ndarray] = {}
        self._pending: dict[int, tuple[list[str], list[np.ndarray]]] = {}
        self._seq: dict[int, int] = {}

    def _files(self, number: int | None = None) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.iterdir()):
            match = _FILE.fullmatch(path.name)
            if match and (number is None or int(match.group(1)) == number):
                found.append(path)
        return found

    def open(self, number: int) -> None:
        """Load the vectors cached for shard ``number`` (and forget the previous shard's)."""
        if self.number == number:
            return
        self.number = number
        self.vectors = {}
        for path in self._files(number):
            with np.load(path) as data:
                for key, vector in zip(data["keys"].tolist(), data["vectors"], strict=True):
                    self.vectors[str(key)] = vector

    def __len__(self) -> int:
        return len(self.vectors)

    def get(self, key: str) -> np.ndarray | None:
        return self.vectors.get(key)

    def add(self, number: int, keys: list[str], vectors: np.ndarray) -> None:
        """Remember vectors of chunks of shard ``number``; written out every ``every`` vectors.

        They are not kept for `get`: the caller has them, and holding every vector of a
        shard would make memory grow with the shard (a resumed run reads them back, `open`).
        """
        pending_keys, pending = self._pending.setdefault(number, ([], []))
        pending_keys.extend(keys)
        pending.append(np.asarray(vectors, dtype=np.float32))
        if len(pending_keys) >= self.every:
            self.flush(number)

    def flush(self, number: int | None = None) -> None:
        for shard in [number] if number is not None else list(self._pending):
            keys, vectors = self._pending.pop(shard, ([], []))
            if not keys:
                continue
            if shard not in self._seq:
                self._seq[shard] = len(self._files(shard))
            buffer = io.BytesIO()
            np.savez(buffer, keys=np.array(keys), vectors=np.concatenate(vectors))
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.folder / f"emb-{shard:05d}-{self._seq[shard]:06d}.npz", buffer.getvalue())
            self._seq[shard] += 1

    def drop(self, number: int) -> None:
        """Forget shard ``number`` (its shard file is written and holds the vectors)."""
        self._pending.pop(number, None)
        for path in self._files(number):
            path.unlink(missing_ok=True)
        if self.number == number:
            self.number, self.vectors = None, {}

    def clear(self) -> None:
        """Delete every file the cache wrote (after a manifest that covers them is published)."""
        self.vectors, self._pending, self.number = {}, {}, None
        if not self.root.is_dir():
            return
        for folder in [p for p in self.root.iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{12}", p.name)]:
            for path in folder.iterdir():
                if _FILE.fullmatch(path.name) or _TEMP.fullmatch(path.name):
                    path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a user's files stay
        with contextlib.suppress(OSError):
            self.root.rmdir()
