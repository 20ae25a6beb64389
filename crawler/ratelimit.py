"""The one request-rate limiter of a crawl, and the downloader middleware that applies it.

`RateLimiter` is the small interface every limiter implements (``acquire`` before each
request, ``penalise`` after a 429, ``observe`` of each answer's rate headers), so a
shared implementation (for example one backed by Redis, for several crawl processes
on one IP) can replace `LocalRateLimiter` through the ``PUBMED_RATE_LIMITER`` setting.

What the server counts is arrivals, and a request arrives some time after the limiter
granted it: the process may send it late (descheduled, or its loop busy parsing), the
network and the server's front end add their own delay. `LocalRateLimiter` counts each
request from when it really left (`crawler.delay_gauge.probe_send`), spaces grants
``(1 + margin) / floor(rate)`` seconds apart and never lets more than ``floor(rate)``
sends fall in any ``1 + margin`` seconds, so **the server never sees more than
``floor(rate)`` arrivals in any 1-second window as long as the network-and-server
arrival jitter stays below ``PUBMED_RATE_MARGIN``** (0.03 s). The margin is that
allowance plus the longest loop turn seen after the last ``floor(rate) + 1`` grants
(`crawler.delay_gauge.DelayGauge`; answer times are not used), widened after every 429,
at most ``PUBMED_RATE_MARGIN_MAX`` (0.25 s). A request that starts after a quiet spell
(the first one above all) opens a new connection and may arrive later still: the window
counts it as starting a ``cold_allowance`` (0.1 s by default) later. There is no
randomness.

After a 429 it waits for ``Retry-After`` (1 s when absent; capped at
``PUBMED_RETRY_AFTER_MAX``), halves its rate, doubles its margin, and climbs back to the
configured rate over the following successes, still spaced: requests held back by the
pause go out one interval apart, never in a burst. Header values a server sends
(``Retry-After``, ``X-RateLimit-Limit``/``-Remaining``) are bounded before use
(`bounded_header`) and logged when they are out of range.
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

from crawler.delay_gauge import DelayGauge, probe_send
from eutils import policy

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.settings import BaseSettings

log = logging.getLogger(__name__)

WINDOW_S = 1.0
RETRY_AFTER_MAX_S = policy.RETRY_AFTER_MAX_S  # default cap on a server's Retry-After (the one policy)
RATE_LIMIT_MAX = 1000.0  # an announced X-RateLimit-Limit/-Remaining above this is taken as this


def bounded_header(name: str, raw: str | bytes | None, low: float, high: float) -> float | None:
    """A numeric header value clamped to ``[low, high]``; None when absent or not a number.

    ``inf``, ``nan`` and values out of range are logged (once per value) and clamped, so a
    hostile or broken server cannot make the crawl sleep forever or overflow.
    """
    if raw is None:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    try:
        value = float(text.strip())
    except ValueError:
        return None  # e.g. an HTTP date in Retry-After: the caller's own default applies
    if math.isnan(value):
        log.warning("ignoring %s: %r is not a number", name, text[:40])
        return None
    if value < low or value > high:
        clamped = min(high, max(low, value))
        log.warning("%s %r is out of range; using %g", name, text[:40], clamped)
        return clamped
    return value


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
    """In-process limiter: at most ``floor(rate)`` arrivals in any ``WINDOW_S`` window (see module docs)."""

    def __init__(
        self,
        rate: float,
        *,
        margin: float = policy.ARRIVAL_JITTER_S,
        max_margin: float = 0.25,
        initial_delay: float = 0.1,
        cold_allowance: float = 0.1,
        recover_after: int = 10,
        retry_after_max: float = RETRY_AFTER_MAX_S,
        probe_sends: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be positive, got {rate}")
        self.max_rate = float(rate)
        self.rate = float(rate)
        self.gauge = DelayGauge(margin, max_margin, initial=initial_delay, window=math.floor(rate) + 1)
        self.probe_sends = probe_sends
        self.cold_allowance = cold_allowance
        self.recover_after = max(1, recover_after)
        self.retry_after_max = retry_after_max
        self._clock = clock
        self._sleep = sleep
        # Each start as a one-element list: its time, moved later when its send is measured to be later.
        self._starts: deque[list[float]] = deque(maxlen=max(1, math.floor(rate)))
        self._blocked_until = 0.0
        self._last_due = 0.0  # when the latest grant was due: the even spacing counts from there
        self._lock: asyncio.Lock | None = None
        self.penalties = 0

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> LocalRateLimiter:
        return cls(
            settings.getfloat("PUBMED_RATE"),
            margin=settings.getfloat("PUBMED_RATE_MARGIN", policy.ARRIVAL_JITTER_S),
            max_margin=settings.getfloat("PUBMED_RATE_MARGIN_MAX", 0.25),
            cold_allowance=settings.getfloat("PUBMED_RATE_COLD_ALLOWANCE", 0.1),
            retry_after_max=settings.getfloat("PUBMED_RETRY_AFTER_MAX", RETRY_AFTER_MAX_S),
        )

    @property
    def margin(self) -> float:
        """Seconds of grant-to-arrival delay spread the spacing allows for now."""
        return self.gauge.margin

    def _window_count(self) -> int:
        return max(1, math.floor(self.rate))

    def _interval(self) -> float:
        if self.rate < 1:
            return 1.0 / self.rate + self.margin
        return (WINDOW_S + self.margin) / self._window_count()

    def next_start(self, now: float) -> float:
        """The earliest time the next request may start (window times include any cold allowance)."""
        at = max(now, self._blocked_until)
        if self._starts:
            at = max(at, self._last_due + self._interval())
            window_count = self._window_count()
            if len(self._starts) >= window_count:
                at = max(at, self._starts[-window_count][0] + WINDOW_S + self.margin)
        return at

    async def acquire(self) -> float:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = self._clock()
                due = self.next_start(now)
                wait = due - now
                if wait <= 0:
                    break
                await self._sleep(wait)
            self._last_due = due
            cold = not self._starts or now - self._starts[-1][0] > max(WINDOW_S, 2 * self._interval())
            offset = self.cold_allowance if cold else 0.0
            start = [now + offset]
            self._starts.append(start)
            if self.probe_sends:
                probe_send(now, self._clock, lambda sent, turn: self._sent(start, offset, due, sent, turn))
            else:
                self.gauge.delay(now - due, 0.0)
            return now

    def _sent(self, start: list[float], offset: float, due: float, sent: float, turn: float) -> None:
        """A granted request was sent at ``sent``: count it from then, and measure how late it left."""
        start[0] = max(start[0], sent + offset)
        self.gauge.delay(sent - due, turn)

    def penalise(self, retry_after: float | None) -> None:
        pause = 1.0 if retry_after is None else min(self.retry_after_max, max(0.0, retry_after))
        if retry_after is not None and retry_after > self.retry_after_max:
            log.warning("Retry-After %g s capped at %g s (PUBMED_RETRY_AFTER_MAX)", retry_after, pause)
        self._blocked_until = max(self._blocked_until, self._clock() + pause)
        self.rate = max(self.max_rate / 8, self.rate / 2)
        self._resize()
        self.gauge.widen()
        self.penalties += 1
        log.info(
            "HTTP 429: pausing %.1f s, rate now %.2f requests/s, margin %.0f ms", pause, self.rate, 1000 * self.margin
        )

    def observe(self, limit: int | None, remaining: int | None, sent_at: float | None) -> None:
        self.gauge.answered()
        if limit is not None and 0 < limit < self.max_rate:
            log.info("server allows %d requests/s; lowering the crawl rate from %.2f", limit, self.max_rate)
            self.max_rate = float(limit)
            self.rate = min(self.rate, self.max_rate)
            self._resize()
        if remaining is not None and limit is not None and sent_at is not None:
            ours = sum(1 for (t,) in self._starts if sent_at - WINDOW_S < t <= sent_at)
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


def _header_number(response: Response, name: str, low: float, high: float) -> float | None:
    return bounded_header(name, response.headers.get(name), low, high)


class RateLimitMiddleware:
    """Downloader middleware: every request waits for the crawl's one limiter before it is sent.

    Put it last before the download handler (a high order number) so retries pass through
    it too. A request's ``meta["pubmed_not_before"]`` (a ``time.monotonic`` value, set by
    the retry middleware for backoff) delays that request alone.
    """

    def __init__(self, crawler: Crawler, limiter: RateLimiter) -> None:
        self.crawler = crawler
        self.limiter = limiter
        self.retry_after_max = crawler.settings.getfloat("PUBMED_RETRY_AFTER_MAX", RETRY_AFTER_MAX_S)

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
        limit = _header_number(response, "X-RateLimit-Limit", 1.0, RATE_LIMIT_MAX)
        remaining = _header_number(response, "X-RateLimit-Remaining", 0.0, RATE_LIMIT_MAX)
        if response.status == 429:
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("pubmed/http_429")
            self.limiter.penalise(_header_number(response, "Retry-After", 0.0, self.retry_after_max))
        else:
            self.limiter.observe(
                None if limit is None else int(limit),
                None if remaining is None else int(remaining),
                request.meta.get("pubmed_sent_at"),
            )
        return response
