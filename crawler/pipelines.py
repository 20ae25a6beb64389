"""Item pipeline that writes crawled articles (and DeleteCitation PMIDs) to the Parquet store.

Rows go through `store.writer.ArticleWriter`, which validates them and publishes bounded
parts atomically. The buffer is flushed every ``PUBMED_FLUSH_ITEMS`` articles and every
``PUBMED_FLUSH_SECONDS`` seconds, so a killed crawl loses at most that much work; the
spider skips PMIDs already stored, so a rerun fetches only what is missing. A PMID is
written at most once per crawl. Only published rows count as stored: when a part cannot
be written (a full disk) the error is logged, the rows stay buffered for the next flush,
and whatever is still unpublished at the end is reported as failed (exit 1), so the
next run fetches it again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import task

from store.schema import SchemaError
from store.writer import ArticleWriter

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

log = logging.getLogger(__name__)


@dataclass
class DeletedPmids:
    """Item: PMIDs an efetch answer listed in ``DeleteCitation``."""

    pmids: list[int] = field(default_factory=list)
    source: str = "efetch"


class StorePipeline:
    """Buffers articles into the store at ``PUBMED_STORE``; flushes on size, on a timer and on close."""

    def __init__(self, crawler: Crawler) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.store_path = settings.get("PUBMED_STORE")
        self.part_rows = settings.getint("PUBMED_PART_ROWS")
        self.flush_items = settings.getint("PUBMED_FLUSH_ITEMS")
        self.flush_seconds = settings.getfloat("PUBMED_FLUSH_SECONDS")
        self.writer: ArticleWriter | None = None
        self.written: set[int] = set()
        self.unpublished: set[int] = set()  # buffered PMIDs whose part is not written yet
        self.write_errors = 0
        self._last_flush = time.monotonic()
        self._timer: task.LoopingCall | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        return cls(crawler)

    def open_spider(self) -> None:
        self.writer = ArticleWriter(self.store_path, part_rows=self.part_rows)
        if self.flush_seconds > 0:
            self._timer = task.LoopingCall(self._flush_if_due)
            self._timer.start(min(1.0, self.flush_seconds), now=False)

    def process_item(self, item: Any) -> Any:
        assert self.writer is not None and self.crawler.stats is not None
        if isinstance(item, DeletedPmids):
            self.writer.delete(item.pmids, item.source)
            self.crawler.stats.inc_value("pubmed/deleted", len(item.pmids))
            return item
        pmid = item["pmid"]
        if pmid in self.written:
            self.crawler.stats.inc_value("pubmed/duplicates_skipped")
            return item
        published = self.writer.articles_written
        try:
            self.writer.write(item)
        except SchemaError as exc:
            self._failed([pmid], f"unusable record: {exc}")
            return item
        except OSError as exc:  # the part this row filled could not be written; the row stays buffered
            self._write_failed(exc)
        self.written.add(pmid)
        self.unpublished.add(pmid)
        self._published(published)
        if self.writer.pending >= self.flush_items:
            self._flush()
        return item

    def _published(self, before: int) -> None:
        """A flush that published articles published every buffered one."""
        assert self.writer is not None and self.crawler.stats is not None
        if self.writer.articles_written != before:
            self.unpublished.clear()
        self.crawler.stats.set_value("pubmed/stored", self.writer.articles_written)

    def _write_failed(self, exc: OSError) -> None:
        assert self.writer is not None and self.crawler.stats is not None
        self.write_errors += 1
        self.crawler.stats.inc_value("pubmed/write_errors")
        log.error(
            "cannot write to the store %s: %s; %d rows kept for the next try", self.store_path, exc, self.writer.pending
        )

    def _failed(self, pmids: list[int], reason: str) -> None:
        log.error("%d PMIDs not stored: %s", len(pmids), reason)
        failed = getattr(self.crawler.spider, "failed", None)
        if isinstance(failed, dict):
            failed.update(dict.fromkeys(pmids, reason))
        assert self.crawler.stats is not None
        self.crawler.stats.set_value("pubmed/failed", len(failed) if isinstance(failed, dict) else len(pmids))

    def _flush_if_due(self) -> None:
        if (
            self.writer is not None
            and self.writer.pending
            and time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self._flush()

    def _flush(self) -> bool:
        """Publish what is buffered; False (logged, rows kept) when it cannot be written."""
        assert self.writer is not None
        published = self.writer.articles_written
        self._last_flush = time.monotonic()
        try:
            self.writer.flush()
        except OSError as exc:
            self._write_failed(exc)
            self._published(published)
            return False
        self._published(published)
        return True

    def close_spider(self) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if self.writer is not None:
            if not self._flush() and self.unpublished:
                self._failed(sorted(self.unpublished), "could not be written to the store")
                self.crawler.stats.set_value("pubmed/unwritten", len(self.unpublished))
            log.info(
                "store %s: %d articles and %d deletions written in %d parts",
                self.store_path,
                self.writer.articles_written,
                self.writer.deletions_written,
                len(self.writer.parts_written),
            )
