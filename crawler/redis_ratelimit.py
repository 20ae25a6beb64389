"""A request-rate limiter shared through Redis by every crawl process on one route to NCBI.

`RedisRateLimiter` implements `crawler.ratelimit.RateLimiter` for several crawl
processes (on one or many machines behind one IP or API key): every request start is
reserved by one Lua script run atomically inside Redis, against Redis's own clock, at
most ``2/rate``
seconds ahead, on a schedule that spaces starts ``(1 + margin) / floor(rate)`` seconds
apart; the process sleeps until its start and records the real start time. All
processes together never start more than ``floor(rate)`` requests in any ``1 + margin``
seconds, counted over real start times, so the server sees at most ``floor(rate)``
arrivals in any second while the grant-to-arrival delays of the requests differ by less
than the margin. Each process follows its event loop after every start
(`crawler.delay_gauge.probe_send`): when the request has really left, later than a few
milliseconds after its start, the start is recorded again at that time; and it reports
its margin (`crawler.delay_gauge.DelayGauge`), ``PUBMED_REDIS_RATE_MARGIN`` (the arrival
jitter tolerated) plus the longest loop turn seen after its recent starts (at least a
warm-up guess until it has measured a few), at most ``PUBMED_RATE_MARGIN_MAX``. The
shared schedule uses the widest measured margin any process reported in the last
``MARGIN_TTL_S`` seconds, so one stalled process widens everyone's spacing, and the widest
of every process's latest margin, so a process still warming up widens it while it does
(its warm-up guess is no measurement and does not outlast it; a process's latest report
lapses ``MARGIN_TTL_S`` seconds after its last reservation). The state lives under one
key per route (``PUBMED_REDIS_RATE_KEY``, by default derived from the E-utilities host
and a hash of the API key, never the key itself). A process that wakes more than
``LATE_TOLERANCE_S`` late for its reserved start (it was stalled) gives that start up and
reserves a new one, so processes stalled together cannot all fire when they wake:

- ``<route>:starts``: sorted set of the reserved, then real, start times of the last two
  seconds (a process's first start is recorded ``PUBMED_REDIS_COLD_ALLOWANCE`` seconds
  late: it opens a new connection and reaches the server later than started);
- ``<route>:state``: hash with ``max`` (the lowest ``PUBMED_RATE`` of any process, or a
  lower ``X-RateLimit-Limit`` the server announced), ``rate`` (the current rate, halved
  after each 429 and climbing back over the following answers), ``next`` (the earliest
  time of the next reservation) and ``blocked`` (a ``Retry-After`` pause every process
  honours), ``margin`` and ``margin_at`` (the widest measured margin reported lately);
- ``<route>:margins``: hash of each process's latest margin and when it reported it.

Switched on by ``PUBMED_REDIS_URL``: the add-on `crawler.distributed.DistributedCrawl`
sets ``PUBMED_RATE_LIMITER`` to `RedisRateLimiter`, which raises `NotConfigured` without it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import secrets
import time
from itertools import count
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from crawler.delay_gauge import DelayGauge, probe_send
from crawler.distributed import require_redis
from crawler.ratelimit import RETRY_AFTER_MAX_S
from eutils import policy

if TYPE_CHECKING:
    from redis import Redis
    from scrapy.settings import BaseSettings

log = logging.getLogger(__name__)

STATE_TTL_S = 3600  # the shared state is dropped after an hour without requests
LATE_TOLERANCE_S = 0.05  # a process that wakes later than this for its reserved start reserves again
MARGIN_TTL_S = 10.0  # a process's margin report counts this long after its last reservation

# KEYS: starts, state, margins. ARGV: wanted rate, margin, member, ttl, allowance (seconds the start is recorded
# later), horizon (how far ahead a start may be reserved), process, measured margin (the margin without the
# warm-up guess). The schedule's margin is the widest of every process's latest margin (reports older than
# MARGIN_TTL seconds, of processes gone quiet, are dropped) and of the measured margins any process reported in
# the last MARGIN_TTL seconds.
# Returns {"1", seconds until the reserved start} when a start is reserved, else {"0", seconds to wait before
# asking again} (strings: Lua numbers would be truncated).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local want = tonumber(ARGV[1])
local margin = tonumber(ARGV[2])
redis.call('HSET', KEYS[3], ARGV[7], tostring(margin) .. ' ' .. tostring(now))
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[4]))
local reports = redis.call('HGETALL', KEYS[3])
for i = 1, #reports, 2 do
  local m, at = string.match(reports[i + 1], '^(%S+) (%S+)$')
  if m == nil or now - tonumber(at) > MARGIN_TTL then
    redis.call('HDEL', KEYS[3], reports[i])
  elseif tonumber(m) > margin then
    margin = tonumber(m)
  end
end
local measured = tonumber(ARGV[8])
local shared = tonumber(redis.call('HGET', KEYS[2], 'margin') or 0)
local shared_at = tonumber(redis.call('HGET', KEYS[2], 'margin_at') or 0)
if measured >= shared or now - shared_at > MARGIN_TTL then
  redis.call('HSET', KEYS[2], 'margin', tostring(measured), 'margin_at', tostring(now))
elseif shared > margin then
  margin = shared
end
local maxr = tonumber(redis.call('HGET', KEYS[2], 'max') or want)
if want < maxr then maxr = want end
local rate = tonumber(redis.call('HGET', KEYS[2], 'rate') or maxr)
if rate > maxr then rate = maxr end
local at = now
local blocked = tonumber(redis.call('HGET', KEYS[2], 'blocked') or 0)
if blocked > at then at = blocked end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 2.0 - margin)
local nxt = tonumber(redis.call('HGET', KEYS[2], 'next') or 0)
if nxt > at then at = nxt end
local n = math.floor(rate)
if n < 1 then n = 1 end
local nth = redis.call('ZREVRANGE', KEYS[1], n - 1, n - 1, 'WITHSCORES')
if #nth > 0 then
  local w = tonumber(nth[2]) + 1.0 + margin
  if w > at then at = w end
end
redis.call('HSET', KEYS[2], 'max', tostring(maxr), 'rate', tostring(rate))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
local horizon = tonumber(ARGV[6])
if at - now > horizon then
  return {'0', tostring(at - now - horizon)}
end
redis.call('ZADD', KEYS[1], at + tonumber(ARGV[5]), ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
local gap = 1.0 / rate + margin
if rate >= 1 then gap = (1.0 + margin) / n end
redis.call('HSET', KEYS[2], 'next', tostring(at + gap))
return {'1', tostring(at - now)}
""".replace("MARGIN_TTL", repr(MARGIN_TTL_S))

# KEYS: starts. ARGV: member, allowance. The reserved start happens now: a late one is recorded at its real time.
_START = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local real = now + tonumber(ARGV[2])
local reserved = redis.call('ZSCORE', KEYS[1], ARGV[1])
if reserved and real > tonumber(reserved) then redis.call('ZADD', KEYS[1], 'XX', real, ARGV[1]) end
return 1
"""

# KEYS: starts. ARGV: member. A reserved start that its process woke too late for is given up.
_CANCEL = """
return redis.call('ZREM', KEYS[1], ARGV[1])
"""

# KEYS: state. ARGV: pause seconds, configured rate. Returns the new rate.
_PENALISE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local maxr = tonumber(redis.call('HGET', KEYS[1], 'max') or ARGV[2])
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or maxr)
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked') or 0)
local until_ = now + tonumber(ARGV[1])
if until_ > blocked then blocked = until_ end
rate = math.max(maxr / 8.0, rate / 2.0)
redis.call('HSET', KEYS[1], 'max', tostring(maxr), 'rate', tostring(rate), 'blocked', tostring(blocked))
redis.call('HINCRBY', KEYS[1], 'penalties', 1)
return tostring(rate)
"""

# KEYS: state. ARGV: announced limit (0: none), recover_after, configured rate. Returns the new rate.
_OBSERVE = """
local maxr = tonumber(redis.call('HGET', KEYS[1], 'max') or ARGV[3])
local limit = tonumber(ARGV[1])
if limit > 0 and limit < maxr then maxr = limit end
local rate = tonumber(redis.call('HGET', KEYS[1], 'rate') or maxr)
if rate < maxr then rate = math.min(maxr, rate + maxr / tonumber(ARGV[2])) end
if rate > maxr then rate = maxr end
redis.call('HSET', KEYS[1], 'max', tostring(maxr), 'rate', tostring(rate))
return tostring(rate)
"""


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def connect(url: str) -> Redis:
    """A Redis client for ``url``, checked with PING; raises `RuntimeError` naming the (redacted) URL."""
    import redis

    client: Redis = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"cannot reach Redis at {redacted(url)} (PUBMED_REDIS_URL): {exc}") from None
    return client


def route_key(settings: BaseSettings) -> str:
    """The Redis key prefix of this crawl's route to NCBI: eutils host plus a hash of the API key, if any."""
    explicit = settings.get("PUBMED_REDIS_RATE_KEY")
    if explicit:
        return str(explicit)
    host = urlsplit(settings.get("PUBMED_EUTILS_URL")).netloc or "eutils"
    api_key = os.environ.get("NCBI_API_KEY", "")
    who = hashlib.sha256(api_key.encode()).hexdigest()[:12] if api_key else "ip"
    return f"pubmed:rate:{host}:{who}"


class RedisRateLimiter:
    """`RateLimiter` whose budget is shared, through Redis, by every process on the same route."""

    def __init__(
        self,
        client: Redis,
        key: str,
        rate: float,
        *,
        margin: float = 0.01,
        max_margin: float = 0.25,
        recover_after: int = 10,
        max_wait: float = 1.0,
        cold_allowance: float = 0.2,
        retry_after_max: float = RETRY_AFTER_MAX_S,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.client = client
        self.key = key
        self.max_rate = float(rate)
        self.rate = float(rate)
        self.gauge = DelayGauge(margin, max_margin, window=int(rate) + 1)
        self.retry_after_max = retry_after_max
        self.recover_after = max(1, recover_after)
        self.max_wait = max_wait
        self.cold_allowance = cold_allowance
        self.granted = 0
        self.penalties = 0
        self._starts_key = f"{key}:starts"
        self._state_key = f"{key}:state"
        self._margins_key = f"{key}:margins"
        self._member = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._numbers = count()
        self._acquire = client.register_script(_ACQUIRE)
        self._start = client.register_script(_START)
        self._cancel = client.register_script(_CANCEL)
        self._penalise = client.register_script(_PENALISE)
        self._observe = client.register_script(_OBSERVE)
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> RedisRateLimiter:
        url = require_redis(settings)
        key = route_key(settings)
        limiter = cls(
            connect(url),
            key,
            settings.getfloat("PUBMED_RATE"),
            margin=settings.getfloat("PUBMED_REDIS_RATE_MARGIN", policy.ARRIVAL_JITTER_S),
            max_margin=settings.getfloat("PUBMED_RATE_MARGIN_MAX", 0.25),
            cold_allowance=settings.getfloat("PUBMED_REDIS_COLD_ALLOWANCE", 0.2),
            retry_after_max=settings.getfloat("PUBMED_RETRY_AFTER_MAX", RETRY_AFTER_MAX_S),
        )
        log.info("rate limit %.2f requests/s shared through Redis %s under %s", limiter.max_rate, redacted(url), key)
        return limiter

    @property
    def margin(self) -> float:
        """This process's margin (the schedule may use a wider one another process reported)."""
        return self.gauge.margin

    def try_acquire(self, member: str, allowance: float) -> tuple[bool, float]:
        """One attempt: ``(True, s)`` when a start ``s`` seconds from now was reserved, else ``(False, s)``:
        ask again in ``s`` seconds.

        A start is reserved at most ``2/rate`` seconds ahead, and the ``1/rate`` spacing is
        counted from the reserved times, so a process that wakes up a few milliseconds late
        for its start does not push back every later start. The 1-second window counts real
        start times: `acquire` records a late start when it happens.
        """
        keys = [self._starts_key, self._state_key, self._margins_key]
        horizon = 2.0 / self.max_rate
        args: list[str | int] = [
            repr(self.max_rate),
            repr(self.margin),
            member,
            STATE_TTL_S,
            repr(allowance),
            repr(horizon),
            self._member,
            repr(self.gauge.measured_margin),
        ]
        reserved, seconds = self._acquire(keys=keys, args=args)
        return bool(int(reserved)), max(0.0, float(seconds))

    async def acquire(self) -> float:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            member = f"{self._member}-{next(self._numbers)}"
            # A process's first request opens a new connection (TLS to NCBI) and reaches the server later than
            # started; it is recorded ``cold_allowance`` seconds late so that warm requests cannot crowd it.
            allowance = self.cold_allowance if self.granted == 0 else 0.0
            while True:
                reserved, wait = self.try_acquire(member, allowance)
                if reserved:
                    planned = time.monotonic() + wait
                    if wait > 0:
                        await asyncio.sleep(wait)
                        late = time.monotonic() - planned
                        if late > LATE_TOLERANCE_S:
                            # Woke too late (the process was stalled): every stalled process would fire at once
                            # now. Give the start up and reserve a fresh one against the starts as they are.
                            self._cancel(keys=[self._starts_key], args=[member])
                            member = f"{self._member}-{next(self._numbers)}"
                            continue
                    self._start(keys=[self._starts_key], args=[member, repr(allowance)])
                    self.granted += 1
                    granted = time.monotonic()
                    sent = functools.partial(self._sent, member, allowance, planned)
                    probe_send(granted, time.monotonic, sent)
                    return granted
                await asyncio.sleep(min(wait, self.max_wait))

    def _sent(self, member: str, allowance: float, due: float, sent: float, turn: float) -> None:
        """The request left at ``sent``: its start is recorded again (it only ever moves later), its delay measured."""
        if sent - due > 0.005:
            self._start(keys=[self._starts_key], args=[member, repr(allowance)])
        self.gauge.delay(sent - due, turn)

    def penalise(self, retry_after: float | None) -> None:
        pause = 1.0 if retry_after is None else min(self.retry_after_max, max(0.0, retry_after))
        if retry_after is not None and retry_after > self.retry_after_max:
            log.warning("Retry-After %g s capped at %g s (PUBMED_RETRY_AFTER_MAX)", retry_after, pause)
        self.gauge.widen()
        self.rate = float(self._penalise(keys=[self._state_key], args=[repr(pause), repr(self.max_rate)]))
        self.penalties += 1
        log.info("HTTP 429: every process pauses %.1f s, shared rate now %.2f requests/s", pause, self.rate)

    def observe(self, limit: int | None, remaining: int | None, sent_at: float | None) -> None:
        self.gauge.answered()
        announced = limit if limit is not None and limit > 0 else 0
        if announced and announced < self.max_rate:
            log.info("server allows %d requests/s; lowering the shared rate from %.2f", announced, self.max_rate)
            self.max_rate = float(announced)
        self.rate = float(
            self._observe(keys=[self._state_key], args=[announced, self.recover_after, repr(self.max_rate)])
        )

    def shared_state(self) -> dict[str, Any]:
        """The route's shared state (max, rate, blocked, penalties) as Redis holds it."""
        raw = self.client.hgetall(self._state_key)
        return {
            k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in raw.items()
        }
