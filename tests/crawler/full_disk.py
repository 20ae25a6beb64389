"""Imported by a crawl subprocess (``-s EXTENSIONS``) where no small tmpfs can be mounted: every
Parquet part write fails with ENOSPC, as on a full disk."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import store.writer


def _full(folder: Path, table: Any) -> Path:
    raise OSError(errno.ENOSPC, "No space left on device", str(folder))


class FullDisk:
    """Scrapy extension whose only job is to make the store's disk full for this process."""

    @classmethod
    def from_crawler(cls, crawler: Any) -> FullDisk:
        store.writer.write_table = _full  # type: ignore[assignment]
        return cls()
