"""The one request-rate limiter of a crawl, and the downloader middleware that applies it.

`RateLimiter` is the small interface every limiter implements (``acquire`` before each
request, ``penalise`` after a 429, ``observe`` of each answer's rate headers), so a
shared implementation (for example one backed by Redis, for several crawl processes
on one IP) can replace `LocalRateLimiter` through the ``PUBMED_RATE_LIMITER`` setting.

`LocalRateLimiter` never lets more than ``rate`` requests start in any 1-second window:
requests are spaced evenly, ``1/rate`` seconds plus a safety margin (10 ms by default)
apart, since a request reaches the server a few milliseconds after it starts and that
delay varies, and a sliding window of the last ``floor(rate)`` start times is checked
too. A request that starts after a quiet spell (the first one above all) opens a new
connection and may arrive later still: the window counts it as starting a
``cold_allowance`` (0.1 s by default) later. There is no randomness. After a 429 it
waits for ``Retry-After`` (1 s when absent), halves its rate, and climbs back to the
configured rate over the following successes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from scrapy.exceptions import NotConfigured
from scrapy.utils.misc import load_object

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.settings import BaseSettings

log = logging.getLogger(__name__)

WINDOW_S = 1.0


@runtime_checkable
class RateLimiter(Protocol):
    """What the crawl needs from a rate limiter."""

    async def acquire(self) -> float:
        """Wait until one more request may start; returns the start time (``time.monotonic``)."""
        ...

    def penalise(self, retry_after: float | None) -> None:
        """The server answered 429: pause for ``retry_after`` seconds (None: a default) and slow down."""
        ...

    def observe(self, limit: int | None, remaining: int | None, sent_at: float | None) -> None:
        """An answer arrived (not 429) with these X-RateLimit headers, for a request started at ``sent_at``."""
        ...


class LocalRateLimiter:
    """In-process limiter: at most ``rate`` request starts in any ``WINDOW_S`` window."""

    def __init__(
        self,
        rate: float,
        *,
        margin: float = 0.01,
        cold_allowance: float = 0.1,
        recover_after: int = 10,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.max_rate = float(rate)
        self.rate = float(rate)
        self.margin = margin
        self.cold_allowance = cold_allowance
        self.recover_after = max(1, recover_after)
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque(maxlen=max(1, math.floor(rate)))
        self._blocked_until = 0.0
        self._lock: asyncio.Lock | None = None
        self.penalties = 0

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> LocalRateLimiter:
        return cls(
            settings.getfloat("PUBMED_RATE"),
            margin=settings.getfloat("PUBMED_RATE_MARGIN", 0.01),
            cold_allowance=settings.getfloat("PUBMED_RATE_COLD_ALLOWANCE", 0.1),
        )

    def _interval(self) -> float:
        return 1.0 / self.rate + self.margin

    def next_start(self, now: float) -> float:
        """The earliest time the next request may start (window times include any cold allowance)."""
        at = max(now, self._blocked_until)
        if self._starts:
            at = max(at, self._starts[-1] + self._interval())
            window_count = math.floor(self.rate) if self.rate >= 1 else 1
            if len(self._starts) >= window_count:
                at = max(at, self._starts[-window_count] + WINDOW_S + self.margin)
        return at

    async def acquire(self) -> float:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self._clock()
                wait = self.next_start(now) - now
                if wait <= 0:
                    break
                await self._sleep(wait)
            cold = not self._starts or now - self._starts[-1] > max(WINDOW_S, 2 * self._interval())
            self._starts.append(now + self.cold_allowance if cold else now)
            return now

    def penalise(self, retry_after: float | None) -> None:
        pause = 1.0 if retry_after is None else max(0.0, retry_after)
        self._blocked_until = max(self._blocked_until, self._clock() + pause)
        self.rate = max(self.max_rate / 8, self.rate / 2)
        self._resize()
        self.penalties += 1
        log.info("HTTP 429: pausing %.1f s, rate now %.2f requests/s", pause, self.rate)

    def observe(self, limit: int | None, remaining: int | None, sent_at: float | None) -> None:
        if limit is not None and 0 < limit < self.max_rate:
            log.info("server allows %d requests/s; lowering the crawl rate from %.2f", limit, self.max_rate)
            self.max_rate = float(limit)
            self.rate = min(self.rate, self.max_rate)
            self._resize()
        if remaining is not None and limit is not None and sent_at is not None:
            ours = sum(1 for t in self._starts if sent_at - WINDOW_S < t <= sent_at)
            if remaining < limit - ours:
                # Someone else spends this IP's budget: leave them one slot before our next request.
                self._blocked_until = max(self._blocked_until, self._clock() + 1.0 / limit)
        if self.rate < self.max_rate:
            self.rate = min(self.max_rate, self.rate + self.max_rate / self.recover_after)
            self._resize()

    def _resize(self) -> None:
        size = max(1, math.floor(self.rate))
        if size != self._starts.maxlen:
            self._starts = deque(self._starts, maxlen=size)


def _header_number(response: Response, name: str) -> float | None:
    raw = response.headers.get(name)
    if raw is None:
        return None
    try:
        return float(raw.decode("latin-1").strip())
    except ValueError:
        return None


class RateLimitMiddleware:
    """Downloader middleware: every request waits for the crawl's one limiter before it is sent.

    Put it last before the download handler (a high order number) so retries pass through
    it too. A request's ``meta["pubmed_not_before"]`` (a ``time.monotonic`` value, set by
    the retry middleware for backoff) delays that request alone.
    """

    def __init__(self, crawler: Crawler, limiter: RateLimiter) -> None:
        self.crawler = crawler
        self.limiter = limiter

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RateLimitMiddleware:
        settings = crawler.settings
        if settings.getfloat("PUBMED_RATE") <= 0:
            raise NotConfigured("PUBMED_RATE is not positive")
        factory = load_object(settings.get("PUBMED_RATE_LIMITER", "crawler.ratelimit.LocalRateLimiter"))
        return cls(crawler, factory.from_settings(settings))

    async def process_request(self, request: Request) -> None:
        not_before = request.meta.get("pubmed_not_before")
        if not_before is not None:
            delay = float(not_before) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        request.meta["pubmed_sent_at"] = await self.limiter.acquire()
        assert self.crawler.stats is not None
        self.crawler.stats.inc_value("pubmed/requests")

    def process_response(self, request: Request, response: Response) -> Response:
        limit = _header_number(response, "X-RateLimit-Limit")
        remaining = _header_number(response, "X-RateLimit-Remaining")
        if response.status == 429:
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("pubmed/http_429")
            self.limiter.penalise(_header_number(response, "Retry-After"))
        else:
            self.limiter.observe(
                None if limit is None else int(limit),
                None if remaining is None else int(remaining),
                request.meta.get("pubmed_sent_at"),
            )
        return response
