"""The Scrapy add-on that turns a crawl into a worker of a distributed job.

Listed in ``ADDONS`` (crawler.settings) for every crawl, `DistributedCrawl` is not
configured (Scrapy's `NotConfigured`) unless ``PUBMED_REDIS_URL`` is set; then its
``update_settings`` switches on every distributed component, so ``-s
PUBMED_REDIS_URL=redis://host:6379/0`` alone is the switch and no spider knows about it:

- ``SCHEDULER`` and ``DUPEFILTER_CLASS``: the shared leased queue (`crawler.redis_queue`);
- ``PUBMED_RATE_LIMITER``: the shared rate limit (`crawler.redis_ratelimit`);
- ``ITEM_PIPELINES``: the store pipeline replaced by `LeasedStorePipeline` at its order;
- ``SPIDER_MIDDLEWARES``: `SeedMiddleware`, outside the parse-error retries;
- ``DOWNLOADER_MIDDLEWARES``: `LeaseFailureMiddleware`, first in line;
- ``PUBMED_CUT_LAZILY`` off: `SeedMiddleware` re-cuts the start batches itself.

A plain setting is changed only when nothing above the project's settings set it, so a
``-s`` on the command line still wins; the component dictionaries are edited in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import NotConfigured
from scrapy.settings import SETTINGS_PRIORITIES

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

REDIS_URL = "PUBMED_REDIS_URL"
STORE_PIPELINE = "crawler.pipelines.StorePipeline"
LEASED_STORE_PIPELINE = "crawler.redis_crawl.LeasedStorePipeline"
SEED_MIDDLEWARE = "crawler.redis_crawl.SeedMiddleware"
LEASE_FAILURE_MIDDLEWARE = "crawler.redis_crawl.LeaseFailureMiddleware"

# Plain settings of distributed mode (the component dictionaries are edited in `update_settings`).
DISTRIBUTED_SETTINGS = {
    "SCHEDULER": "crawler.redis_queue.RedisScheduler",
    "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
    "PUBMED_RATE_LIMITER": "crawler.redis_ratelimit.RedisRateLimiter",
    "PUBMED_CUT_LAZILY": False,
}


def require_redis(settings: BaseSettings) -> str:
    """The Redis URL of the crawl; `NotConfigured` (with the reason) when distributed mode is off."""
    url = settings.get(REDIS_URL)
    if not url:
        raise NotConfigured(f"{REDIS_URL} is not set")
    return str(url)


class DistributedCrawl:
    """Scrapy add-on: with ``PUBMED_REDIS_URL`` set, the crawl shares its queue, rate and store via Redis."""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DistributedCrawl:
        if not crawler.settings.get(REDIS_URL):
            # Raised without a message: Scrapy would log one as a warning on every single-process crawl.
            raise NotConfigured
        return cls()

    def update_settings(self, settings: BaseSettings) -> None:
        require_redis(settings)
        given = SETTINGS_PRIORITIES["project"]
        for name, value in DISTRIBUTED_SETTINGS.items():
            if (settings.getpriority(name) or 0) <= given:
                settings.set(name, value, priority="project")
        pipelines = settings.getdict("ITEM_PIPELINES")
        order = pipelines.get(STORE_PIPELINE)
        leased = 300 if order is None else order
        _edit_components(settings, "ITEM_PIPELINES", {STORE_PIPELINE: None, LEASED_STORE_PIPELINE: leased})
        _edit_components(settings, "SPIDER_MIDDLEWARES", {SEED_MIDDLEWARE: 40})
        _edit_components(settings, "DOWNLOADER_MIDDLEWARES", {LEASE_FAILURE_MIDDLEWARE: 10})


def _edit_components(settings: BaseSettings, name: str, changes: dict[str, int | None]) -> None:
    """Set entries of a component dictionary, keeping the setting's priority.

    Unlike Scrapy's ``set_in_component_priority_dict`` this imports nothing, so components
    switched off with None (cookies, remote control) stay unimported.
    """
    components = settings.getdict(name)
    components.update(changes)
    settings.set(name, components, priority=settings.getpriority(name) or 0)
