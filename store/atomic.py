"""Atomic file writes: temp name in the same folder, fsync, ``os.replace``, fsync the folder.

A reader sees either the old file or the complete new one, never a torn file. The temp
file is removed when the write fails. Temp names start with ``.tmp-`` so readers that
list a folder can skip them (`is_temp_name`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".tmp-"


def is_temp_name(name: str) -> bool:
    """True for the names `atomic_write` uses for files not yet published."""
    return name.startswith(TEMP_PREFIX)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit publish it at ``path`` atomically."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + target.name + ".", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding if mode == "w" else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def remove_stale_temps(folder: str | os.PathLike[str], older_than_s: float = 3600.0) -> int:
    """Delete temp files a killed writer left, older than ``older_than_s``; returns the count.

    The age guard keeps the temp file of a writer that is still running (another
    process) out of harm's way.
    """
    removed = 0
    base = Path(folder)
    if not base.is_dir():
        return 0
    now = time.time()
    for entry in base.iterdir():
        if is_temp_name(entry.name) and entry.is_file() and now - entry.stat().st_mtime >= older_than_s:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed += 1
    return removed
