"""Appends articles and deletions to a store as Parquet parts of bounded size.

Layout: ``<store>/articles/part-*.parquet`` and ``<store>/deletions/part-*.parquet``.
Rows are validated against the schema, buffered, and every ``part_rows`` rows one part
is written through `store.atomic`, so a closed part is always complete and readable and
a crash loses only the rows not yet flushed. A part that cannot be written (a full disk)
raises and leaves its rows buffered for the next flush; only published rows count in
``articles_written``. Memory is bounded by one part's buffer. Each part is sorted by PMID
and cut into row groups of `ROW_GROUP_ROWS` rows whose pmid min/max statistics let range
readers (`store.stream`) skip what a range cannot hold. Part names carry a UTC timestamp,
the process id and a random token, so any number of writers (processes, machines sharing
a folder) can append to one store side by side.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from store.atomic import atomic_write
from store.schema import ARTICLE_SCHEMA, DELETION_SCHEMA, PMID_MAX, SchemaError, check_pmid, validate_article

log = logging.getLogger(__name__)

ARTICLES_DIR = "articles"
DELETIONS_DIR = "deletions"
DEFAULT_PART_ROWS = 10_000
ROW_GROUP_ROWS = 2_000
"""Rows per Parquet row group: a range read skips every row group whose PMIDs it cannot hold."""
STATS_COLUMNS = ("pmid", "version", "fetched_at", "deleted_at")
"""Columns with row-group min/max statistics (those absent from a table are skipped)."""


def new_part_name() -> str:
    """A part file name that sorts by creation time and never collides with another writer's."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"part-{stamp}-{os.getpid()}-{secrets.token_hex(4)}.parquet"


def sort_by_pmid(table: pa.Table) -> pa.Table:
    """``table`` in PMID order; rows of one PMID keep their order (the sort is stable)."""
    return table.take(pc.sort_indices(table, sort_keys=[("pmid", "ascending")]))


def write_parquet(table: pa.Table, where: Any) -> None:
    """Write ``table`` (already PMID-sorted) the way every part is written: zstd, row groups of
    at most `ROW_GROUP_ROWS`, statistics on the key columns only (small footers)."""
    pq.write_table(
        table, where, compression="zstd", row_group_size=ROW_GROUP_ROWS, write_statistics=list(STATS_COLUMNS)
    )


def write_table(folder: Path, table: pa.Table, name: str | None = None) -> Path:
    """Publish ``table`` sorted by PMID as a Parquet part in ``folder``; returns the part's path."""
    path = folder / (name or new_part_name())
    with atomic_write(path, "wb") as handle:
        write_parquet(sort_by_pmid(table), handle)
    return path


def warm_up() -> None:
    """Pay now the one-off cost of this process's first part: pyarrow loads its row conversion and
    imports pandas on first use (0.2-0.4 s of CPU)."""
    pa.Table.from_pylist([], schema=ARTICLE_SCHEMA)


class ArticleWriter:
    """Buffered, validated writer of article rows and deletions into one store folder."""

    def __init__(self, store_path: str | os.PathLike[str], part_rows: int = DEFAULT_PART_ROWS) -> None:
        if part_rows < 1:
            raise ValueError(f"part_rows must be at least 1, got {part_rows}")
        self.store_path = Path(store_path)
        self.part_rows = part_rows
        self._articles: list[dict[str, Any]] = []
        self._deletions: list[dict[str, Any]] = []
        self.parts_written: list[Path] = []
        self.articles_written = 0
        self.deletions_written = 0
        (self.store_path / ARTICLES_DIR).mkdir(parents=True, exist_ok=True)
        (self.store_path / DELETIONS_DIR).mkdir(parents=True, exist_ok=True)
        # Paid here rather than inside the first flush, where it would stall a crawl's event loop in mid-flight.
        warm_up()

    def write(self, row: Mapping[str, Any]) -> None:
        """Validate and buffer one article; publishes a part when the buffer is full."""
        self._articles.append(validate_article(row))
        if len(self._articles) >= self.part_rows:
            self._flush_articles()

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def delete(self, pmids: Iterable[int], source: str) -> None:
        """Record DeleteCitation PMIDs; readers drop articles fetched before the deletion."""
        now = dt.datetime.now(dt.UTC)
        for pmid in pmids:
            try:
                check_pmid(pmid)
            except ValueError:
                raise SchemaError(
                    f"field 'pmid' of a deletion must be a PMID (1 to {PMID_MAX}), got {pmid!r}"
                ) from None
            self._deletions.append({"pmid": pmid, "source": source, "deleted_at": now})
        if len(self._deletions) >= self.part_rows:
            self._flush_deletions()

    @property
    def pending(self) -> int:
        """Rows buffered but not yet published."""
        return len(self._articles) + len(self._deletions)

    def flush(self) -> None:
        """Publish everything buffered now (articles first, then deletions)."""
        self._flush_articles()
        self._flush_deletions()

    def _flush_articles(self) -> None:
        if not self._articles:
            return
        table = pa.Table.from_pylist(self._articles, schema=ARTICLE_SCHEMA)
        self.parts_written.append(write_table(self.store_path / ARTICLES_DIR, table))
        self.articles_written += len(self._articles)
        log.debug("published %d articles in %s", len(self._articles), self.parts_written[-1].name)
        self._articles = []

    def _flush_deletions(self) -> None:
        if not self._deletions:
            return
        table = pa.Table.from_pylist(self._deletions, schema=DELETION_SCHEMA)
        self.parts_written.append(write_table(self.store_path / DELETIONS_DIR, table))
        self.deletions_written += len(self._deletions)
        self._deletions = []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ArticleWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Rows validated before the failure are sound: keep them.
        self.close()
