"""One job at a time on a folder: an exclusive ``flock`` on a lock file that names its holder.

`store compact` and `indexer rebuild` both use it. The kernel drops the lock when its
holder exits, however it exits (SIGKILL included), so a crashed job never leaves the
folder locked. While held, the file records the holder (pid, host, start time) as one
JSON line, so that a second job can say who has it. The lock is advisory and local to
one machine's kernel (and to file systems that pass flock through, such as NFSv4).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def lock_holder(path: Path) -> str:
    """Who holds the lock file at ``path``, in words ("pid 12 on host (since ...)")."""
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(data, dict) or "pid" not in data:
        return "another process"
    return f"pid {data['pid']} on {data.get('host', '?')} (since {data.get('started', '?')})"


@contextlib.contextmanager
def exclusive_lock(
    path: Path,
    *,
    refuse: Callable[[str], Exception],
    waiting: str,
    wait: bool = False,
    poll_s: float = 0.5,
) -> Iterator[None]:
    """Hold the lock file ``path`` (its folder is created).

    When another process holds it: without ``wait``, raise ``refuse(holder)``; with
    ``wait``, log ``waiting`` (formatted with ``holder=``) once and poll until it is free.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = lock_holder(path)
                if not wait:
                    raise refuse(holder) from None
                if not announced:
                    log.warning(waiting.format(holder=holder))
                    announced = True
                time.sleep(poll_s)
        # Only the lock holder writes the record, and the lock (not the content) is what
        # protects the folder.
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
