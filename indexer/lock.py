"""One rebuild per index folder: the store's `exclusive_lock` on ``<index>/rebuild.lock``.

A second rebuild of the same folder waits (``--wait``) or exits 1 naming the holder. The
lock is local to one machine's kernel: with the Ray engine only the driver takes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexer.errors import IndexerError
from indexer.manifest import LOCK_NAME
from store.lock import exclusive_lock


class IndexLockedError(IndexerError):
    """Another process holds the index folder's rebuild lock."""


@contextmanager
def index_lock(index_dir: Path, wait: bool = False, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the rebuild lock of ``index_dir``; without ``wait``, raise `IndexLockedError` if it is taken."""

    def refuse(holder: str) -> IndexLockedError:
        return IndexLockedError(f"{index_dir}: another rebuild is running here ({holder}); wait for it, or pass --wait")

    with exclusive_lock(
        index_dir / LOCK_NAME,
        refuse=refuse,
        waiting=f"{index_dir}: waiting for the rebuild of {{holder}} to finish",
        wait=wait,
        poll_s=poll_s,
    ):
        yield
