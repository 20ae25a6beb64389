"""Stages a baseline file while it is still downloading; the download's checksum decides whether it is published.

`stage_following` runs in the loading process. It reads ``<folder>/.tmp-<name>`` (the
file `crawler.baseline_fetch.Fetcher` is writing) as its bytes arrive, parses them into
``<store>/_staging/<name>/`` with `crawler.baseline_load.stage_stream`, and hashes every
byte it read. It returns the publication plan with that MD5, publishing nothing: the
caller publishes it (`crawler.baseline_load.publish_staged`) only when the MD5 equals the
one the download verified against NCBI's ``.md5``, so unverified rows never reach the
store; otherwise it discards the staged parts and loads the verified file afresh.

`FollowingReader` knows the file is complete when the download renames it to
``<folder>/<name>`` (the same inode, after the checksum verified). When the temp file is
deleted or replaced (a checksum mismatch, a server that ignored the ``Range`` request) or
the run is stopping (``cancel``), the bytes it read are not the file's: it raises
`Abandoned` and `stage_following` returns None after dropping the staged parts. A parse
error of unverified bytes does the same: the verified file, if any, is loaded normally
and a real error is reported from there.

Memory: one 1 MiB read buffer and the parser's streaming state, as for a file on disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crawler.baseline_load import drop_staging, file_markers, stage_stream
from store.atomic import TEMP_PREFIX

log = logging.getLogger(__name__)

POLL_S = 0.01  # how often a reader that caught up with the download looks for more bytes


class Abandoned(Exception):
    """The file being followed was deleted or replaced, or the run is stopping."""


def _same(path: Path, st: os.stat_result) -> bool:
    try:
        now = path.stat()
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


class FollowingReader(io.RawIOBase):
    """Reads ``folder/.tmp-<name>`` while it grows, until it becomes ``folder/<name>``; hashes what it reads."""

    def __init__(self, folder: Path, name: str, cancel: Callable[[], bool], poll: float = POLL_S) -> None:
        self.partial = folder / f"{TEMP_PREFIX}{name}"
        self.target = folder / name
        self.cancel = cancel
        self.poll = poll
        self.digest = hashlib.md5(usedforsecurity=False)
        self.complete = False
        self._handle = self._open()
        self._stat = os.fstat(self._handle.fileno())

    def _open(self) -> Any:
        while True:
            for path, complete in ((self.partial, False), (self.target, True)):
                try:
                    handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
                except FileNotFoundError:
                    continue
                self.complete = complete
                return handle
            self._wait()

    def _wait(self) -> None:
        if self.cancel():
            raise Abandoned(f"{self.target.name}: the run is stopping")
        time.sleep(self.poll)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            n: int = self._handle.readinto(buffer)
            if n:
                self.digest.update(memoryview(buffer)[:n])
                return n
            if self.complete:
                return 0
            # The partial name first: the rename moves the inode from it to the target in one step,
            # so checking the target first could miss the file at both names during the rename.
            if _same(self.partial, self._stat):  # still downloading
                self._wait()
            elif _same(self.target, self._stat):  # renamed once verified: read what is left, then the end
                self.complete = True
            else:
                raise Abandoned(f"{self.target.name}: the partial download was replaced")

    def close(self) -> None:
        handle = getattr(self, "_handle", None)  # None when the constructor raised
        if handle is not None:
            handle.close()
        super().close()


def stage_following(
    folder: Path, name: str, store: Path, part_rows: int, fetched_at: dt.datetime, cancel: Callable[[], bool]
) -> dict[str, Any] | None:
    """Stage ``name`` from its download as it arrives; the plan (with ``md5`` of the bytes read), or None."""
    staging = file_markers(store, name)[2]
    if staging.exists():
        shutil.rmtree(staging)  # parts of a load that never finished
    try:
        with FollowingReader(folder, name, cancel) as reader:
            stream = io.BufferedReader(reader, buffer_size=1 << 20)
            plan = stage_stream(stream, name, staging, part_rows, fetched_at)
            while stream.read(1 << 20):  # the rest, which the parser did not need, is hashed too
                pass
    except (Abandoned, ValueError, OSError, EOFError) as exc:  # ValueError: MalformedXMLError of unverified bytes
        log.info("%s: not staged while downloading (%s); it loads once verified", name, exc)
        drop_staging(staging)
        return None
    except BaseException:
        drop_staging(staging)
        raise
    plan["md5"] = reader.digest.hexdigest()
    return plan
