"""The distributed mode is switched on by ``PUBMED_REDIS_URL`` alone, through the add-on."""

from __future__ import annotations

import re
from typing import Any

import pytest
from crawl_helpers import REPO
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.settings import Settings

from crawler.distributed import DistributedCrawl
from crawler.redis_crawl import LeasedStorePipeline, LeaseFailureMiddleware, SeedMiddleware
from crawler.redis_queue import RedisScheduler
from crawler.redis_ratelimit import RedisRateLimiter
from crawler.spiders.pubmed import PubmedSpider

URL = "redis://127.0.0.1:1/0"  # never connected to: only the settings are looked at


def configured(**cmdline: Any) -> Crawler:
    """A crawler of the project's settings plus ``-s`` values, with its add-ons applied."""
    settings = Settings()
    settings.setmodule("crawler.settings", priority="project")
    settings.setdict(cmdline, priority="cmdline")
    crawler = Crawler(PubmedSpider, settings)
    crawler.addons.load_settings(crawler.settings)
    return crawler


def test_the_spider_module_never_mentions_redis() -> None:
    source = (REPO / "crawler" / "spiders" / "pubmed.py").read_text()
    assert not re.search("redis", source, re.IGNORECASE)
    assert "PUBMED_REDIS" not in "".join(vars(PubmedSpider))


def test_without_a_redis_url_no_redis_component_is_configured() -> None:
    crawler = configured()
    settings = crawler.settings

    assert crawler.addons.addons == []
    assert settings["SCHEDULER"] == "scrapy.core.scheduler.Scheduler"
    assert settings["PUBMED_RATE_LIMITER"] == "crawler.ratelimit.LocalRateLimiter"
    assert settings.getdict("ITEM_PIPELINES") == {"crawler.pipelines.StorePipeline": 300}
    assert "crawler.redis_crawl.SeedMiddleware" not in settings.getdict("SPIDER_MIDDLEWARES")
    assert "crawler.redis_crawl.LeaseFailureMiddleware" not in settings.getdict("DOWNLOADER_MIDDLEWARES")
    assert settings.getbool("PUBMED_CUT_LAZILY") is True
    for build in (
        SeedMiddleware.from_crawler,
        LeaseFailureMiddleware.from_crawler,
        LeasedStorePipeline.from_crawler,
        RedisScheduler.from_crawler,
        lambda c: RedisRateLimiter.from_settings(c.settings),
    ):
        with pytest.raises(NotConfigured, match="PUBMED_REDIS_URL is not set"):
            build(crawler)
    with pytest.raises(NotConfigured):
        DistributedCrawl.from_crawler(crawler)


def test_a_redis_url_alone_switches_every_distributed_component_on() -> None:
    crawler = configured(PUBMED_REDIS_URL=URL)
    settings = crawler.settings

    assert [type(addon) for addon in crawler.addons.addons] == [DistributedCrawl]
    assert settings["SCHEDULER"] == "crawler.redis_queue.RedisScheduler"
    assert settings["DUPEFILTER_CLASS"] == "scrapy_redis.dupefilter.RFPDupeFilter"
    assert settings["PUBMED_RATE_LIMITER"] == "crawler.redis_ratelimit.RedisRateLimiter"
    assert settings.getbool("PUBMED_CUT_LAZILY") is False
    pipelines = settings.getdict("ITEM_PIPELINES")
    assert pipelines == {"crawler.pipelines.StorePipeline": None, "crawler.redis_crawl.LeasedStorePipeline": 300}
    spider_mws = settings.getdict("SPIDER_MIDDLEWARES")
    retries = spider_mws["crawler.middlewares.ParseErrorRetryMiddleware"]
    assert spider_mws["crawler.redis_crawl.SeedMiddleware"] < retries  # sees the output after the retries
    downloader_mws = settings.getdict("DOWNLOADER_MIDDLEWARES")
    assert downloader_mws["crawler.redis_crawl.LeaseFailureMiddleware"] == min(
        v for v in downloader_mws.values() if v is not None
    )
    # Components switched off in the project's settings stay off (and unimported).
    assert downloader_mws["scrapy.downloadermiddlewares.cookies.CookiesMiddleware"] is None


def test_settings_given_on_the_command_line_win_over_the_add_on() -> None:
    settings = configured(
        PUBMED_REDIS_URL=URL, SCHEDULER="tests.Scheduler", PUBMED_CUT_LAZILY=True, ITEM_PIPELINES={"x.Pipe": 5}
    ).settings

    assert settings["SCHEDULER"] == "tests.Scheduler"
    assert settings.getbool("PUBMED_CUT_LAZILY") is True
    assert settings["PUBMED_RATE_LIMITER"] == "crawler.redis_ratelimit.RedisRateLimiter"
    assert settings.getdict("ITEM_PIPELINES") == {
        "x.Pipe": 5,
        "crawler.pipelines.StorePipeline": None,
        "crawler.redis_crawl.LeasedStorePipeline": 300,
    }
