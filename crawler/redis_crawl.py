"""Scrapy components of a distributed crawl, switched on by ``-s PUBMED_REDIS_URL=redis://...``.

Any number of ``scrapy crawl pubmed`` processes given the same input and the same Redis
share one job: one request queue (`crawler.redis_queue`, on scrapy-redis), one rate
limit (`crawler.redis_ratelimit`) and one store folder (each writes its own parts).

The add-on `crawler.distributed.DistributedCrawl` lists these components when
``PUBMED_REDIS_URL`` is set; each raises `NotConfigured` without it.

- `SeedMiddleware` (spider middleware) turns the spider's start batches into
  deterministic chunks of the job's PMID list, each pushed once per job by whichever
  worker claims it first, and marks a leased request's output as handled by appending a
  `LeaseDone` item after it. It uses only the spider's public crawl contract (see
  `crawler.spiders.pubmed`): ``batch_size``, ``input_ids``, ``stored``, ``efetch()`` and
  the request meta ``pmids`` / ``round`` / ``span``.
- `LeaseFailureMiddleware` (downloader middleware) marks a lease handled when its
  request finally failed (the errback then re-requests or reports the PMIDs).
- `LeasedStorePipeline` (the store pipeline plus leases) renews this worker's leases and
  acknowledges handled ones only after the articles they produced are published, so a
  worker killed at any moment loses nothing: unacknowledged leases expire and return.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy.http import Request
from twisted.internet import task

from crawler.distributed import require_redis
from crawler.pipelines import StorePipeline

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from crawler.redis_queue import LeasedQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseDone:
    """Item marking the end of a leased request's output (consumed by `LeasedStorePipeline`)."""

    lease: str


def leased_queue(crawler: Crawler) -> LeasedQueue | None:
    """The job's leased queue once the scheduler is open, else None."""
    from crawler.redis_queue import LeasedQueue

    engine = crawler.engine
    queue = getattr(engine.scheduler if engine is not None else None, "queue", None)
    return queue if isinstance(queue, LeasedQueue) else None


def _require_redis(crawler: Crawler) -> None:
    require_redis(crawler.settings)


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SeedMiddleware:
    """Spider middleware: seeds the job's start batches once per job and marks leased outputs handled."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SeedMiddleware:
        _require_redis(crawler)
        return cls(crawler)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        from crawler.redis_queue import SEED_META

        queue = leased_queue(self.crawler)
        if queue is not None and queue.begin():
            log.info("job %s had finished; seeding it again from what the store lacks", queue.keys.job)
        spider: Any = self.crawler.spider
        async for item in start:
            if isinstance(item, Request) and item.meta.get("round") == 0 and "pmids" in item.meta:
                continue  # start batches are re-cut below into chunks every worker agrees on
            if isinstance(item, Request) and "span" in item.meta and item.meta["span"] is None:
                item.meta[SEED_META] = "esearch"
            yield item
        # After the spider's start: ``stored`` is read from the store by then.
        stored: set[int] = spider.stored
        seeded = 0
        for number, chunk in enumerate(_chunks(list(spider.input_ids), spider.batch_size)):
            todo = [p for p in chunk if p not in stored]
            if todo:
                request = spider.efetch(todo)
                request.meta[SEED_META] = f"efetch:{number}"
                seeded += 1
                yield request
        log.info("offered %d start batches to the shared queue (each is queued once per job)", seeded)

    async def process_spider_output(self, response: Response, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for item in result:
            yield item
        lease = _lease_of(response)
        if lease:
            yield LeaseDone(lease)

    def process_spider_exception(self, response: Response, exception: Exception) -> Iterable[Any] | None:
        lease = _lease_of(response)
        if not lease:
            return None
        log.error("unhandled error parsing %s: %r; its batch is given up", response.request, exception)
        return [LeaseDone(lease)]


def _lease_of(response: Response) -> str | None:
    from crawler.redis_queue import LEASE_META

    request = response.request
    lease = request.meta.get(LEASE_META) if request is not None else None
    return str(lease) if lease else None


class LeaseFailureMiddleware:
    """Downloader middleware (first in line): a leased request that finally failed is handled by its errback."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LeaseFailureMiddleware:
        _require_redis(crawler)
        return cls(crawler)

    def process_exception(self, request: Request, exception: Exception) -> None:
        from crawler.redis_queue import LEASE_META

        lease = request.meta.get(LEASE_META)
        queue = leased_queue(self.crawler)
        if lease and queue is not None:
            queue.mark_done(str(lease))


def _wake_engine(crawler: Crawler) -> None:
    """Ask the engine to look at the scheduler now rather than at its next 5-second heartbeat."""
    slot = getattr(crawler.engine, "_slot", None)
    nextcall = getattr(slot, "nextcall", None)
    if nextcall is not None:
        nextcall.schedule()


class LeasedStorePipeline(StorePipeline):
    """The store pipeline of a distributed worker: acknowledges leases once their articles are published."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        lease_seconds = crawler.settings.getfloat("PUBMED_REDIS_LEASE_SECONDS")
        self.tick_seconds = max(0.2, min(1.0, lease_seconds / 3))
        self._lease_timer: task.LoopingCall | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LeasedStorePipeline:
        _require_redis(crawler)
        return cls(crawler)

    def open_spider(self) -> None:
        super().open_spider()
        self._lease_timer = task.LoopingCall(self.tick)
        self._lease_timer.start(self.tick_seconds, now=False)

    def process_item(self, item: Any) -> Any:
        if isinstance(item, LeaseDone):
            queue = leased_queue(self.crawler)
            if queue is not None:
                queue.mark_done(item.lease)
            return item
        return super().process_item(item)

    def tick(self) -> None:
        """Renew this worker's leases; acknowledge handled ones when nothing is waiting to be flushed."""
        queue = leased_queue(self.crawler)
        if queue is None:
            return
        try:
            if self.writer is not None and self.writer.pending == 0:
                queue.ack_done()
            queue.renew()
            if queue.held or len(queue) or queue.leases_elsewhere():
                _wake_engine(self.crawler)
        except Exception:  # a Redis hiccup must not stop the crawl; the next tick tries again
            log.warning("could not renew or acknowledge leases", exc_info=True)

    def _flush(self) -> bool:
        if not super()._flush():
            return False  # nothing acknowledged: the leases expire and the batches come back
        queue = leased_queue(self.crawler)
        if queue is not None:
            queue.ack_done()
        return True

    def close_spider(self) -> None:
        if self._lease_timer is not None and self._lease_timer.running:
            self._lease_timer.stop()
        super().close_spider()
        queue = leased_queue(self.crawler)
        if queue is not None and not self.unpublished:
            acked = queue.ack_done()
            log.info("%d leases acknowledged at close", acked)
