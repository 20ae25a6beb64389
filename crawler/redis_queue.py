"""The shared request queue of a distributed crawl: scrapy-redis's priority queue plus leases.

A plain scrapy-redis queue pops a request destructively, so a worker killed with a
request in hand loses it. Here every pop is a *lease*, taken atomically by a Lua script
together with the pop: the request moves to ``<job>:leases`` (sorted by deadline) and
``<job>:leased`` (lease id -> request). A live worker renews its leases every
``PUBMED_REDIS_LEASE_SECONDS / 3`` seconds and acknowledges a lease only once the
articles its answer produced are published in the store (see `crawler.redis_crawl`);
a retry of a leased request replaces the lease in the same script that pushes it. A
lease whose worker died expires and the next pop of any worker puts it back in the
queue, so a dead worker's batches are fetched by the others or by a rerun.

Start batches are *seeded* once per job: chunk ``k`` of the job's PMID list is pushed
only by the first worker whose ``SADD <job>:seeded k`` succeeds, in the same script.

Keys of a job (``pubmed:<job>``; the job id is ``PUBMED_REDIS_JOB`` or a hash of the
crawl's input): ``:requests`` (sorted set, scrapy-redis format), ``:leases``,
``:leased``, ``:lease_score``, ``:seeded``, ``:lease_ids``, ``:dupefilter``.
``pubmed_not_before`` (a ``time.monotonic`` backoff deadline) travels as wall-clock
time, since monotonic clocks differ between machines.

Entries are data only (`crawler.redis_entries`: JSON of the PMIDs, round and kind of a
batch, never a pickle), and the popping worker rebuilds the request with its own spider,
so the API key is added only when a request is sent and is never queued. An entry that
does not validate is logged, dropped (its lease acknowledged) and never run.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy_redis.queue import PriorityQueue
from scrapy_redis.scheduler import Scheduler

from crawler.distributed import require_redis
from crawler.redis_entries import InvalidEntry, decode_entry, encode_entry, entry_of
from crawler.redis_ratelimit import connect

if TYPE_CHECKING:
    from redis import Redis
    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Request

log = logging.getLogger(__name__)

LEASE_META = "pubmed_lease"
SEED_META = "pubmed_seed"
NOT_BEFORE_META = "pubmed_not_before"

# KEYS: queue, leases, leased, lease_score, lease_ids. ARGV: lease seconds, reap limit.
# Puts expired leases back in the queue, then leases the best request: {lease id, data} or nil.
_POP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(expired) do
  local data = redis.call('HGET', KEYS[3], id)
  if data then
    redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[4], id) or 0, data)
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
end
local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then return false end
redis.call('ZREM', KEYS[1], top[1])
local id = tostring(redis.call('INCR', KEYS[5]))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), id)
redis.call('HSET', KEYS[3], id, top[1])
redis.call('HSET', KEYS[4], id, top[2])
return {id, top[1]}
"""

# KEYS: queue, leases, leased, lease_score, seeded. ARGV: score, data, lease id to replace ('' none), seed ('' none).
# Returns 1 when pushed, 0 when the seed was already taken.
_PUSH = """
if ARGV[4] ~= '' then
  if redis.call('SADD', KEYS[5], ARGV[4]) == 0 then return 0 end
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[2])
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[3])
end
return 1
"""

# KEYS: leases, leased, lease_score. ARGV: lease ids. Returns how many were still held.
_ACK = """
local n = 0
for _, id in ipairs(ARGV) do
  n = n + redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return n
"""

# KEYS: leases. ARGV: lease seconds, lease ids. Extends the leases still held (XX: never revives one).
_RENEW = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'CH', deadline, ARGV[i])
end
return n
"""

# KEYS: queue, leases, leased, lease_score. ARGV: lease ids. Puts held leases back in the queue.
_RELEASE = """
local n = 0
for _, id in ipairs(ARGV) do
  local data = redis.call('HGET', KEYS[3], id)
  if data and redis.call('ZREM', KEYS[2], id) == 1 then
    redis.call('ZADD', KEYS[1], redis.call('HGET', KEYS[4], id) or 0, data)
    n = n + 1
  end
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
end
return n
"""

# KEYS: queue, leases, seeded. A job with nothing queued or leased is finished: forget its seeds.
_BEGIN = """
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  return redis.call('DEL', KEYS[3])
end
return 0
"""


class JobKeys:
    """The Redis keys of one crawl job."""

    def __init__(self, job: str) -> None:
        base = f"pubmed:{job}"
        self.job = job
        self.queue = f"{base}:requests"
        self.leases = f"{base}:leases"
        self.leased = f"{base}:leased"
        self.lease_score = f"{base}:lease_score"
        self.lease_ids = f"{base}:lease_ids"
        self.seeded = f"{base}:seeded"
        self.dupefilter = f"{base}:dupefilter"


class LeasedQueue(PriorityQueue):
    """scrapy-redis `PriorityQueue` whose pops are leases that a dead worker gives back by expiring."""

    def __init__(
        self, server: Redis, spider: Spider, key: str, serializer: Any = None, *, job: str, lease_seconds: float
    ):
        super().__init__(server, spider, key, _NO_PICKLE)  # whatever serializer was configured: JSON entries only
        self.keys = JobKeys(job)
        self.lease_seconds = lease_seconds
        self.held: set[str] = set()  # leases this worker holds (in flight or awaiting acknowledgement)
        self.done: set[str] = set()  # held leases whose output is handled, acknowledged after the next store flush
        self.reap_limit = 100
        self.dropped = 0  # invalid entries dropped
        self._pop = server.register_script(_POP)
        self._push = server.register_script(_PUSH)
        self._ack = server.register_script(_ACK)
        self._renew = server.register_script(_RENEW)
        self._release = server.register_script(_RELEASE)
        self._begin = server.register_script(_BEGIN)

    def __len__(self) -> int:
        return int(self.server.zcard(self.keys.queue))

    def _encode(self, request: Request) -> bytes:
        not_before = request.meta.get(NOT_BEFORE_META)
        wall = time.time() + (float(not_before) - time.monotonic()) if not_before is not None else None
        return encode_entry(entry_of(request.meta, request.priority, wall))

    def _decode(self, data: bytes) -> Request:
        """Rebuild the request of a queue entry with this worker's spider; `InvalidEntry` if it is not one."""
        entry = decode_entry(data)
        spider: Any = self.spider
        if entry.kind == "efetch":
            request: Request = spider.efetch(entry.pmids)
            request.meta["rounds"] = {p: r for p, r in entry.rounds.items() if p in set(entry.pmids)}
            request.meta["round"] = entry.round
        else:
            request = spider.esearch(entry.span, counted=False)  # counted by the worker that asked for it
        request.priority = entry.priority
        if entry.retry_times:
            request.meta["retry_times"] = entry.retry_times
        if entry.not_before is not None:
            request.meta[NOT_BEFORE_META] = time.monotonic() + (entry.not_before - time.time())
        return request

    def push(self, request: Request) -> bool:
        """Queue ``request``; a retry replaces its lease, a seed is pushed only by its first claimant."""
        lease = str(request.meta.get(LEASE_META, ""))
        seed = str(request.meta.get(SEED_META, ""))
        pushed = self._push(
            keys=[self.keys.queue, self.keys.leases, self.keys.leased, self.keys.lease_score, self.keys.seeded],
            args=[-request.priority, self._encode(request), lease, seed],
        )
        if lease:
            self.held.discard(lease)
            self.done.discard(lease)
        return bool(pushed)

    def pop(self, timeout: int = 0) -> Request | None:
        keys = [self.keys.queue, self.keys.leases, self.keys.leased, self.keys.lease_score, self.keys.lease_ids]
        for _ in range(self.reap_limit):
            answer = self._pop(keys=keys, args=[self.lease_seconds, self.reap_limit])
            if not answer:
                return None
            lease_raw, data = answer
            lease = lease_raw.decode() if isinstance(lease_raw, bytes) else str(lease_raw)
            try:
                request = self._decode(data)
            except InvalidEntry as exc:
                self._ack(keys=[self.keys.leases, self.keys.leased, self.keys.lease_score], args=[lease])
                self.dropped += 1
                log.warning("dropped an invalid entry of the shared queue %s (%d bytes): %s", self.key, len(data), exc)
                continue
            request.meta[LEASE_META] = lease
            self.held.add(lease)
            return request
        return None

    def mark_done(self, lease: str) -> None:
        """The output of ``lease``'s answer has been handled; it is acknowledged after the next store flush."""
        if lease in self.held:
            self.done.add(lease)

    def ack_done(self) -> int:
        """Acknowledge every lease marked done (call only when their articles are published)."""
        if not self.done:
            return 0
        ids = sorted(self.done)
        self._ack(keys=[self.keys.leases, self.keys.leased, self.keys.lease_score], args=ids)
        self.held.difference_update(ids)
        self.done.clear()
        return len(ids)

    def renew(self) -> int:
        if not self.held:
            return 0
        return int(self._renew(keys=[self.keys.leases], args=[self.lease_seconds, *sorted(self.held)]))

    def release_held(self) -> int:
        """Put every lease still held and not done back in the queue (on a clean shutdown)."""
        ids = sorted(self.held - self.done)
        if not ids:
            return 0
        n = int(
            self._release(keys=[self.keys.queue, self.keys.leases, self.keys.leased, self.keys.lease_score], args=ids)
        )
        self.held.difference_update(ids)
        return n

    def leases_elsewhere(self) -> int:
        """Leases held by other workers (live or dead but not yet expired)."""
        return max(0, int(self.server.zcard(self.keys.leases)) - len(self.held))

    def begin(self) -> bool:
        """Forget the seeds of a finished job so that a new crawl of the same input starts afresh."""
        return bool(self._begin(keys=[self.keys.queue, self.keys.leases, self.keys.seeded]))

    def clear(self) -> None:
        self.server.delete(self.keys.queue, self.keys.leases, self.keys.leased, self.keys.lease_score, self.keys.seeded)


class _NoPickle:
    """The serializer handed to scrapy-redis: entries are JSON (`LeasedQueue._encode`), never pickles."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        raise TypeError("the shared queue stores JSON entries only (crawler.redis_entries)")

    @staticmethod
    def loads(data: bytes) -> Any:
        raise TypeError("the shared queue stores JSON entries only (crawler.redis_entries)")


_NO_PICKLE = _NoPickle()


class RedisScheduler(Scheduler):
    """scrapy-redis scheduler over a `LeasedQueue`: persistent, per-job keys, done only when every worker is.

    The job's keys are chosen when the spider opens (``job_id(spider)``). The spider is
    idle only when the queue is empty and no other worker holds a lease, since another
    worker's answer may still add requests (re-requests of short batches) and a dead
    worker's leases come back when they expire.
    """

    queue: LeasedQueue
    df: Any

    def __init__(self, server: Redis, *, lease_seconds: float, job: str | None, **kwargs: Any) -> None:
        super().__init__(server, persist=True, **kwargs)
        self.lease_seconds = lease_seconds
        self.job = job
        self.crawler: Crawler | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> RedisScheduler:
        settings = crawler.settings
        server = connect(require_redis(settings))
        scheduler = cls(
            server,
            lease_seconds=settings.getfloat("PUBMED_REDIS_LEASE_SECONDS"),
            job=settings.get("PUBMED_REDIS_JOB") or None,
            idle_before_close=0,
            dupefilter_cls=settings.get("DUPEFILTER_CLASS") or "scrapy_redis.dupefilter.RFPDupeFilter",
        )
        scheduler.stats = crawler.stats
        scheduler.crawler = crawler
        return scheduler

    def open(self, spider: Spider) -> None:
        self.spider = spider
        job = self.job or job_id(spider)
        keys = JobKeys(job)
        self.queue_key = keys.queue
        self.dupefilter_key = keys.dupefilter
        self.queue = LeasedQueue(
            self.server, spider, keys.queue, self.serializer, job=job, lease_seconds=self.lease_seconds
        )
        if self.df is None:
            from scrapy_redis.dupefilter import RFPDupeFilter

            self.df = RFPDupeFilter(self.server, key=keys.dupefilter, debug=spider.settings.getbool("DUPEFILTER_DEBUG"))
        log.info(
            "distributed crawl job %s: %d requests queued, %d leased by other workers",
            job,
            len(self.queue),
            self.queue.leases_elsewhere(),
        )

    def enqueue_request(self, request: Request) -> bool:
        if not request.dont_filter and self.df.request_seen(request):
            self.df.log(request, self.spider)
            return False
        pushed = self.queue.push(request)
        if pushed and self.stats:
            self.stats.inc_value("scheduler/enqueued/redis")
        return pushed

    def next_request(self) -> Request | None:
        request = self.queue.pop()
        if request is not None and self.stats:
            self.stats.inc_value("scheduler/dequeued/redis")
        return request

    def has_pending_requests(self) -> bool:
        return len(self.queue) > 0 or self.queue.leases_elsewhere() > 0

    def close(self, reason: str) -> None:
        if getattr(self, "queue", None) is None:
            return
        returned = self.queue.release_held()
        if returned:
            log.info("%d leased requests given back to the shared queue", returned)


def job_id(spider: Spider) -> str:
    """A job id derived from the crawl's input, the same in every worker given the same input."""
    import hashlib

    kind = getattr(spider, "input_kind", "")
    if kind == "query":
        material = f"query\n{getattr(spider, 'input_value', '')}"
    else:
        material = "pmids\n" + ",".join(map(str, sorted(getattr(spider, "input_ids", []))))
    return f"{spider.name}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"
