"""Live progress of a PubMed crawl and its one-line end summary (a Scrapy extension).

While the crawl runs: a tqdm bar on stderr when it is a terminal, and every
``PUBMED_PROGRESS_INTERVAL`` seconds a log line with PMIDs fetched / missing, retries and
429s. At the end: one summary line (requested, already stored, stored, not in PubMed, failed,
retries, 429s, requests, seconds, requests/second). PMIDs NCBI does not have are listed
(the first ``PUBMED_MISSING_SHOWN``) and all written to ``<store>/crawl-missing.txt``;
PMIDs whose requests or writes failed go to ``<store>/crawl-failed.txt`` (the next run
fetches them again); the counts go to ``<store>/crawl-summary.json``. The line is logged
when the engine has stopped, so it is the crawl's last (after "Spider closed" and
Scrapy's stats dump, which is off unless ``STATS_DUMP``: see `crawler.commands.crawl`).
`exit_code` says how the crawl ended: 1 when any PMID failed, a write failed, the store
could not be read, a search failed or the crawl did not finish; else 0. Only published
rows count as stored.
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
FAILED_FILE = "crawl-failed.txt"
SUMMARY_FILE = "crawl-summary.json"
EXIT_STAT = "pubmed/exit_code"


def exit_code(spider: Spider, counts: dict[str, int], reason: str) -> tuple[int, list[str]]:
    """0 when the crawl did everything it was asked, else 1; with the reasons it did not."""
    why: list[str] = []
    if getattr(spider, "store_error", None):
        why.append(f"store unreadable: {spider.store_error}")  # type: ignore[attr-defined]
    if getattr(spider, "failed", None):
        why.append(f"{len(spider.failed)} PMIDs failed")  # type: ignore[attr-defined]
    if counts.get("write_errors"):
        why.append(f"{counts['write_errors']} store writes failed")
    why += list(getattr(spider, "search_failures", []))
    if reason != "finished":
        why.append(f"crawl ended: {reason}")
    return (1 if why else 0), why


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
        self.summary: list[tuple[int, str]] = []  # (level, line) logged when the engine has stopped

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CrawlProgress:
        ext = cls(crawler)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(ext.engine_stopped, signal=signals.engine_stopped)
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
            "failed": self._get("pubmed/failed"),
            "write_errors": self._get("pubmed/write_errors"),
            "unexpected_pmids": self._get("pubmed/unexpected_pmids"),
            "redirects_refused": self._get("pubmed/redirects_refused"),
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
            "progress: %d/%d PMIDs fetched, %d stored, %d not in PubMed, %d failed, %d re-requested, %d retries, "
            "%d 429s, %d requests",
            c["fetched"],
            max(0, c["requested"] - c["already_stored"]),
            c["stored"],
            c["missing"],
            c["failed"],
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
        failed: dict[int, str] = dict(getattr(spider, "failed", {}))
        c["missing"], c["failed"] = len(missing), len(failed)
        problems: list[str] = list(getattr(spider, "search_problems", []))
        code, why = exit_code(spider, c, reason)
        assert self.crawler.stats is not None
        self.crawler.stats.set_value(EXIT_STAT, code)
        files = self._write_files(missing, failed, c, reason, seconds, problems, why)
        line = (
            f"pubmed crawl {reason}: requested {c['requested']}, already stored {c['already_stored']}, "
            f"stored {c['stored']}, not in PubMed {len(missing)}{self._listed(missing, files.get(MISSING_FILE))}, "
            f"failed {len(failed)}{self._listed(failed, files.get(FAILED_FILE))}, retries {c['retries']}, "
            f"429s {c['http_429']}, {c['requests']} requests in {seconds:.1f} s "
            f"({c['requests'] / seconds if seconds > 0 else 0.0:.2f} req/s)"
        )
        self.summary = [(logging.ERROR, f"pubmed crawl incomplete (exit 1): {'; '.join(why)}")] if code else []
        self.summary.append((logging.INFO, line))

    def engine_stopped(self) -> None:
        """Log the summary last, after Scrapy's own closing lines (and its stats dump, when on)."""
        for level, line in self.summary:
            log.log(level, "%s", line)
        self.summary = []

    def _listed(self, pmids: dict[int, str], where: Path | None) -> str:
        if not pmids:
            return ""
        listed = ", ".join(map(str, sorted(pmids)[: self.shown]))
        more = f" (+{len(pmids) - self.shown} more)" if len(pmids) > self.shown else ""
        return f" [{listed}{more}; all in {where}]" if where else f" [{listed}{more}]"

    def _write_files(
        self,
        missing: dict[int, str],
        failed: dict[int, str],
        counts: dict[str, int],
        reason: str,
        seconds: float,
        problems: list[str],
        why: list[str],
    ) -> dict[str, Path]:
        """The PMID lists and the JSON summary; a store that cannot take them is logged, not fatal."""
        written: dict[str, Path] = {}
        if not self.store_path.is_dir():
            return written
        try:
            for name, pmids in ((MISSING_FILE, missing), (FAILED_FILE, failed)):
                path = self.store_path / name
                if pmids:
                    atomic_write_text(path, "".join(f"{p}\t{why}\n" for p, why in sorted(pmids.items())))
                    written[name] = path
                else:
                    path.unlink(missing_ok=True)  # a list from an earlier run is no longer true
            atomic_write_json(
                self.store_path / SUMMARY_FILE,
                {
                    **counts,
                    "reason": reason,
                    "seconds": round(seconds, 3),
                    "missing_pmids": sorted(missing),
                    "failed_pmids": sorted(failed),
                    "search_problems": problems,
                    "incomplete": why,
                },
            )
        except OSError as exc:
            log.error("cannot write the crawl summary files to %s: %s", self.store_path, exc)
        return written
