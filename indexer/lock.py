"""One rebuild per index folder: an exclusive ``flock`` on ``<index>/rebuild.lock``.

The kernel drops the lock when its holder exits, however it exits (SIGKILL included),
so a crashed rebuild never leaves the folder locked. While held, the file names its
holder (pid, host, start time) so that a second rebuild can say who has it. The lock
is advisory and local to one machine's kernel (and to file systems that pass flock
through, such as NFSv4): with the Ray engine only the driver takes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from indexer.errors import IndexerError
from indexer.manifest import LOCK_NAME

log = logging.getLogger(__name__)


class IndexLockedError(IndexerError):
    """Another process holds the index folder's rebuild lock."""


def _holder(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(data, dict) or "pid" not in data:
        return "another process"
    return f"pid {data['pid']} on {data.get('host', '?')} (since {data.get('started', '?')})"


@contextlib.contextmanager
def index_lock(index_dir: Path, wait: bool = False, poll_s: float = 0.5) -> Iterator[None]:
    """Hold the rebuild lock of ``index_dir``; without ``wait``, raise `IndexLockedError` if it is taken."""
    import fcntl

    index_dir.mkdir(parents=True, exist_ok=True)
    path = index_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(path)
                if not wait:
                    raise IndexLockedError(
                        f"{index_dir}: another rebuild is running here ({holder}); wait for it, or pass --wait"
                    ) from None
                if not announced:
                    log.warning("%s: waiting for the rebuild of %s to finish", index_dir, holder)
                    announced = True
                time.sleep(poll_s)
        # The holder's record lives in the locked file itself: only the lock holder writes it,
        # and the lock (not the content) is what protects the folder.
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
