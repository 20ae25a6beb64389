"""Live progress of a PubMed crawl and its one-line end summary (a Scrapy extension).

While the crawl runs: a tqdm bar on stderr when it is a terminal, and every
``PUBMED_PROGRESS_INTERVAL`` seconds a log line with PMIDs fetched / missing, retries and
429s. At the end: one summary line (requested, already stored, stored, missing, retries,
429s, requests, seconds, requests/second); the missing PMIDs are listed (the first
``PUBMED_MISSING_SHOWN``) and all of them written to ``<store>/crawl-missing.txt``, and
the counts to ``<store>/crawl-summary.json``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals
from tqdm import tqdm
from twisted.internet import task

from store.atomic import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.crawler import Crawler

log = logging.getLogger(__name__)

MISSING_FILE = "crawl-missing.txt"
SUMMARY_FILE = "crawl-summary.json"


class CrawlProgress:
    """Counts from the crawl stats, shown live and summarised when the spider closes."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.interval = crawler.settings.getfloat("PUBMED_PROGRESS_INTERVAL")
        self.shown = crawler.settings.getint("PUBMED_MISSING_SHOWN")
        self.store_path = Path(crawler.settings.get("PUBMED_STORE"))
        self.started = time.monotonic()
        self.bar: tqdm[Any] | None = None
        self._timer: task.LoopingCall | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CrawlProgress:
        ext = cls(crawler)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def _get(self, key: str) -> int:
        stats = self.crawler.stats
        assert stats is not None
        return int(stats.get_value(key, 0) or 0)

    def counts(self) -> dict[str, int]:
        return {
            "requested": self._get("pubmed/requested"),
            "already_stored": self._get("pubmed/already_stored"),
            "fetched": self._get("pubmed/fetched"),
            "stored": self._get("pubmed/stored"),
            "missing": self._get("pubmed/missing"),
            "refetched": self._get("pubmed/refetched"),
            "retries": self._get("pubmed/retries"),
            "http_429": self._get("pubmed/http_429"),
            "requests": self._get("pubmed/requests"),
        }

    def spider_opened(self, spider: Spider) -> None:
        self.started = time.monotonic()
        self.bar = tqdm(desc="PMIDs", unit="pmid", disable=not sys.stderr.isatty(), leave=False)
        if self.interval > 0:
            self._timer = task.LoopingCall(self.log_progress)
            self._timer.start(self.interval, now=False)

    def item_scraped(self, item: Any, spider: Spider) -> None:
        if self.bar is None or self.bar.disable:
            return
        c = self.counts()
        todo = c["requested"] - c["already_stored"]
        if todo > 0 and self.bar.total != todo:
            self.bar.total = todo
        self.bar.n = c["fetched"]
        self.bar.set_postfix(missing=c["missing"], retries=c["retries"], refresh=False)
        self.bar.refresh()

    def log_progress(self) -> None:
        c = self.counts()
        log.info(
            "progress: %d/%d PMIDs fetched, %d missing, %d re-requested, %d retries, %d 429s, %d requests",
            c["fetched"],
            max(0, c["requested"] - c["already_stored"]),
            c["missing"],
            c["refetched"],
            c["retries"],
            c["http_429"],
            c["requests"],
        )

    def spider_closed(self, spider: Spider, reason: str) -> None:
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if self.bar is not None:
            self.bar.close()
        seconds = time.monotonic() - self.started
        c = self.counts()
        missing: dict[int, str] = dict(getattr(spider, "missing", {}))
        problems: list[str] = list(getattr(spider, "search_problems", []))
        missing_file = self.store_path / MISSING_FILE
        if self.store_path.is_dir():
            if missing:
                atomic_write_text(missing_file, "".join(f"{p}\t{why}\n" for p, why in sorted(missing.items())))
            else:
                missing_file.unlink(missing_ok=True)  # a list from an earlier run is no longer true
            atomic_write_json(
                self.store_path / SUMMARY_FILE,
                {
                    **c,
                    "reason": reason,
                    "seconds": round(seconds, 3),
                    "missing_pmids": sorted(missing),
                    "search_problems": problems,
                },
            )
        listed = ", ".join(map(str, sorted(missing)[: self.shown]))
        more = f" (+{len(missing) - self.shown} more)" if len(missing) > self.shown else ""
        where = f" [{listed}{more}; all in {missing_file}]" if missing else ""
        log.info(
            "pubmed crawl %s: requested %d, already stored %d, stored %d, missing %d%s, retries %d, 429s %d, "
            "%d requests in %.1f s (%.2f req/s)",
            reason,
            c["requested"],
            c["already_stored"],
            c["stored"],
            len(missing),
            where,
            c["retries"],
            c["http_429"],
            c["requests"],
            seconds,
            c["requests"] / seconds if seconds > 0 else 0.0,
        )
