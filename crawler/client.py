"""A small asyncio client for fetching a few thousand PMIDs outside Scrapy.

`fetch_pubmed` posts batched efetch requests at most ``rate`` per second (one
`crawler.ratelimit.LocalRateLimiter` for the whole call, the crawl's own limiter with
its measured margin against jitter, paused after a 429 for its ``Retry-After``, capped
at ``retry_after_max``), retries transient failures with backoff (tenacity: 429, 5xx,
timeouts, dropped connections, truncated or malformed XML, error documents inside HTTP
200), counts the records of every batch, asks once more for the PMIDs a batch lacked,
and reports the rest as missing. Records are parsed by `eutils.pubmed_xml`, exactly as
the spider and the baseline loader parse them. Records of PMIDs the batch did not ask
for are dropped; a record whose PMID is out of bounds makes the answer unusable.

Bounds: redirects are never followed (a 3xx is a `FetchError` naming its ``Location``,
so the form body and API key never go anywhere else), and an answer is read at most
``max_bytes`` (32 MiB by default, after decompression) before it is a `FetchError`.

The NCBI API key comes from ``api_key`` or the environment (``NCBI_API_KEY``); it goes
in the POST body only and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from crawler.ratelimit import RATE_LIMIT_MAX, LocalRateLimiter, bounded_header
from eutils import policy
from eutils.pubmed_xml import MalformedXMLError, parse_efetch
from eutils.request import Identity, efetch_form, endpoint, redact
from eutils.responses import EutilsError
from store.schema import check_pmid

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 16


class TransientHTTPError(RuntimeError):
    """An HTTP status worth retrying; ``retry_after`` is the server's wish in seconds, if any."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}" + (f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""))
        self.status = status
        self.retry_after = retry_after


class FetchError(RuntimeError):
    """A batch still failed after every retry; the message names the batch and the last error."""


@dataclass
class FetchResult:
    """Parsed article rows, and the requested PMIDs that E-utilities did not return."""

    articles: list[dict[str, Any]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


_PARSE_ERRORS = (MalformedXMLError, EutilsError, RecursionError)


class _Fetcher:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        rate: float,
        identity: Identity,
        max_attempts: int,
        backoff: float,
        retry_after_max: float = policy.RETRY_AFTER_MAX_S,
        max_bytes: int = policy.MAX_BODY_BYTES,
        jitter_margin: float = policy.ARRIVAL_JITTER_S,
    ) -> None:
        self.session = session
        self.url = url
        self.limiter = LocalRateLimiter(rate, margin=jitter_margin, retry_after_max=retry_after_max)
        self.retry_after_max = retry_after_max
        self.max_bytes = max_bytes
        self.identity = identity
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.retries = 0

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientHTTPError) and exc.retry_after is not None:
            return 0.0 if exc.status == 429 else exc.retry_after  # after a 429 the limiter holds every request
        return policy.backoff_delay(state.attempt_number, self.backoff)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info("efetch attempt %d failed (%s); retrying", state.attempt_number, redact(str(exc)))

    async def _post(self, ids: Sequence[int]) -> bytes:
        sent_at = await self.limiter.acquire()
        data = efetch_form(ids, self.identity)
        async with self.session.post(endpoint(self.url, "efetch"), data=data, allow_redirects=False) as response:
            headers = response.headers
            if 300 <= response.status < 400:
                location = headers.get("Location", "")[:300]
                log.warning("efetch answered HTTP %d redirecting to %r: not followed", response.status, location)
                raise FetchError(f"efetch answered HTTP {response.status} redirecting to {location!r}: refused")
            if policy.is_retryable(response.status):
                wait = policy.retry_after_seconds(headers.get("Retry-After"), self.retry_after_max)
                if response.status == 429:
                    self.limiter.penalise(wait)
                raise TransientHTTPError(response.status, wait)
            if response.status != 200:
                text = (await response.content.read(200)).decode("utf-8", "replace")
                raise FetchError(f"efetch answered HTTP {response.status}: {text.strip()}")
            body = await self._read(response)
            limit = bounded_header("X-RateLimit-Limit", headers.get("X-RateLimit-Limit"), 1.0, RATE_LIMIT_MAX)
            left = bounded_header("X-RateLimit-Remaining", headers.get("X-RateLimit-Remaining"), 0.0, RATE_LIMIT_MAX)
            self.limiter.observe(None if limit is None else int(limit), None if left is None else int(left), sent_at)
            return body

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The (decompressed) body, at most ``max_bytes``: a larger one is a `FetchError`."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await response.content.read(_READ_CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchError(f"efetch answer is larger than {self.max_bytes} bytes: refused")
            chunks.append(chunk)
        return b"".join(chunks)

    async def fetch(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """One efetch batch, retried until it parses; returns its article rows."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type((TransientHTTPError, aiohttp.ClientError, TimeoutError, *_PARSE_ERRORS)),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    body = await self._post(ids)
                    return parse_efetch(body, source="efetch").articles
        except (TransientHTTPError, aiohttp.ClientError, TimeoutError, *_PARSE_ERRORS) as exc:
            raise FetchError(
                f"efetch of {len(ids)} PMIDs ({ids[0]}..{ids[-1]}) failed after {self.max_attempts} attempts: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def batch(self, ids: list[int]) -> tuple[list[dict[str, Any]], list[int]]:
        """Fetch ``ids``; PMIDs the answer lacks are asked for once more, then reported missing."""
        rows = await self.fetch(ids)
        wanted = set(ids)
        foreign = [r["pmid"] for r in rows if r["pmid"] not in wanted]
        if foreign:
            log.warning(
                "efetch answer held %d PMIDs the batch did not ask for (dropped): %s", len(foreign), foreign[:5]
            )
        rows = [r for r in rows if r["pmid"] in wanted]
        got = {r["pmid"] for r in rows}
        lacking = [p for p in ids if p not in got]
        log.debug("efetch batch of %d: %d records, %d lacking", len(ids), len(got), len(lacking))
        if lacking:
            # once more, in smaller batches: the whole batch lacking is split in two
            size = len(lacking) if len(lacking) < len(ids) else max(1, (len(lacking) + 1) // 2)
            retry_set = set(lacking)
            for i in range(0, len(lacking), size):
                again = [r for r in await self.fetch(lacking[i : i + size]) if r["pmid"] in retry_set]
                rows += again
                got |= {r["pmid"] for r in again}
            lacking = [p for p in lacking if p not in got]
        return rows, lacking


def _unique(pmids: Iterable[int | str]) -> list[int]:
    out: dict[int, None] = {}
    for pmid in pmids:
        out.setdefault(check_pmid(int(pmid)), None)
    return list(out)


async def fetch_pubmed(
    pmids: Iterable[int | str],
    *,
    eutils_url: str = policy.EUTILS_URL,
    rate: float | None = None,
    batch_size: int = policy.BATCH_SIZE,
    email: str | None = None,
    tool: str = policy.TOOL,
    api_key: str | None = None,
    timeout: float = 30,
    max_attempts: int = 6,
    backoff: float = policy.BACKOFF_BASE_S,
    concurrency: int = 4,
    retry_after_max: float = policy.RETRY_AFTER_MAX_S,
    max_bytes: int = policy.MAX_BODY_BYTES,
    jitter_margin: float = policy.ARRIVAL_JITTER_S,
) -> FetchResult:
    """Fetch ``pmids`` with batched efetch POSTs and parse them into store article rows.

    ``rate`` defaults to 3 requests/second, or 10 when an API key is given or set in
    ``NCBI_API_KEY``. Each batch is retried up to ``max_attempts`` times (exponential
    backoff from ``backoff`` seconds; after a 429 every request waits for the server's
    ``Retry-After``, at most ``retry_after_max`` seconds). A requested PMID
    missing from its batch's answer is asked for once more in a batch of just the
    missing ones, and listed in ``FetchResult.missing`` if it is still absent.
    ``jitter_margin`` is the arrival jitter (network and server, seconds) the rate
    tolerates (the limiter's base margin, as ``PUBMED_RATE_MARGIN`` is the crawl's).
    Raises `FetchError` when a batch keeps failing.
    """
    ids = _unique(pmids)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    identity = Identity(tool, email or "", api_key if api_key is not None else policy.api_key_from_env())
    if rate is None:
        rate = identity.rate
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    result = FetchResult()
    if not ids:
        return result
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    started = time.perf_counter()
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, headers=identity.headers("aiohttp")) as session:
        fetcher = _Fetcher(
            session,
            eutils_url,
            rate=rate,
            identity=identity,
            max_attempts=max_attempts,
            backoff=backoff,
            retry_after_max=retry_after_max,
            max_bytes=max_bytes,
            jitter_margin=jitter_margin,
        )
        gate = asyncio.Semaphore(max(1, concurrency))

        async def run(batch: list[int]) -> tuple[list[dict[str, Any]], list[int]]:
            async with gate:
                return await fetcher.batch(batch)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(run(b)) for b in batches]
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None  # the first failure; the other batches were cancelled
        outcomes = [task.result() for task in tasks]
    for rows, lacking in outcomes:
        result.articles += rows
        result.missing += lacking
    log.info(
        "fetched %d of %d PMIDs in %d batches (%d missing, %d retries) in %.1f s",
        len({r["pmid"] for r in result.articles}),
        len(ids),
        len(batches),
        len(result.missing),
        fetcher.retries,
        time.perf_counter() - started,
    )
    return result


def fetch_pubmed_sync(pmids: Iterable[int | str], **kwargs: Any) -> FetchResult:
    """`fetch_pubmed` for synchronous callers (starts and closes its own event loop)."""
    return asyncio.run(fetch_pubmed(pmids, **kwargs))
