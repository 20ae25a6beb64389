"""Side cache of embeddings computed by a rebuild that has not published yet.

Vectors are appended in small ``.npz`` files under ``<index>/cache/<model>/`` (each
written atomically), so a rebuild killed mid-way does not embed them again. The
cache is emptied once a manifest that covers them is published.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np

from store.atomic import atomic_write_bytes, is_temp_name


class EmbeddingCache:
    """Chunk key -> vector, persisted in batches."""

    def __init__(self, index_dir: Path, model_id: str, every: int) -> None:
        tag = hashlib.blake2b(model_id.encode(), digest_size=6).hexdigest()
        self.root = index_dir / "cache"
        self.folder = self.root / tag
        self.every = every
        self.vectors: dict[str, np.ndarray] = {}
        self._pending_keys: list[str] = []
        self._pending: list[np.ndarray] = []
        self._written = 0
        if self.folder.is_dir():
            for path in sorted(self.folder.glob("emb-*.npz")):
                if is_temp_name(path.name):
                    continue
                self._written += 1
                with np.load(path) as data:
                    for key, vector in zip(data["keys"].tolist(), data["vectors"], strict=True):
                        self.vectors[str(key)] = vector

    def __len__(self) -> int:
        return len(self.vectors)

    def get(self, key: str) -> np.ndarray | None:
        return self.vectors.get(key)

    def add(self, keys: list[str], vectors: np.ndarray) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            self.vectors[key] = vector
        self._pending_keys.extend(keys)
        self._pending.append(vectors)
        if len(self._pending_keys) >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self._pending_keys:
            return
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.array(self._pending_keys), vectors=np.concatenate(self._pending))
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / f"emb-{self._written:06d}.npz", buffer.getvalue())
        self._written += 1
        self._pending_keys, self._pending = [], []

    def clear(self) -> None:
        """Drop everything (after a manifest that covers these vectors is published)."""
        self.vectors.clear()
        self._pending_keys, self._pending = [], []
        shutil.rmtree(self.root, ignore_errors=True)
