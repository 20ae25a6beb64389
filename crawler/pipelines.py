"""Item pipeline that writes crawled articles (and DeleteCitation PMIDs) to the Parquet store.

Rows go through `store.writer.ArticleWriter`, which validates them and publishes bounded
parts atomically. The buffer is flushed every ``PUBMED_FLUSH_ITEMS`` articles and every
``PUBMED_FLUSH_SECONDS`` seconds, so a killed crawl loses at most that much work; the
spider skips PMIDs already stored, so a rerun fetches only what is missing. A PMID is
written at most once per crawl.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet import task

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
        self.writer.write(item)
        self.written.add(pmid)
        self.crawler.stats.inc_value("pubmed/stored")
        if self.writer.pending >= self.flush_items:
            self._flush()
        return item

    def _flush_if_due(self) -> None:
        if (
            self.writer is not None
            and self.writer.pending
            and time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self._flush()

    def _flush(self) -> None:
        assert self.writer is not None
        self.writer.flush()
        self._last_flush = time.monotonic()

    def close_spider(self) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if self.writer is not None:
            self.writer.close()
            log.info(
                "store %s: %d articles and %d deletions written in %d parts",
                self.store_path,
                self.writer.articles_written,
                self.writer.deletions_written,
                len(self.writer.parts_written),
            )
