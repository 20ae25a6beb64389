"""NCBI's E-utilities usage policy, in one place: where, how fast, what to retry and how long to wait.

Every route to NCBI (the Scrapy crawl, the aiohttp client, the baseline download) takes
its defaults from here: the base URL, the tool name, the request rate (3/s, 10/s with an
API key in ``NCBI_API_KEY``), the HTTP statuses worth another attempt, the one jittered
exponential backoff, how a ``Retry-After`` header is read and capped, and the size
limits of a request and an answer. Pure functions and constants; nothing here holds state.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import os
import random
from collections.abc import Callable

log = logging.getLogger(__name__)

EUTILS_URL = "https://eutils.ncbi.nlm.nih.gov/entrez/eutils/"
"""Base URL of the E-utilities; utilities are ``<base>/<name>.fcgi``."""
TOOL = "pubmed-pipeline"
"""The ``tool`` parameter NCBI asks every client to send (with ``email``)."""
API_KEY_ENV = "NCBI_API_KEY"
EMAIL_ENV = "NCBI_EMAIL"

RATE = 3.0
"""Requests per second NCBI allows one IP without an API key."""
RATE_WITH_KEY = 10.0
"""Requests per second NCBI allows with an API key."""
ARRIVAL_JITTER_S = 0.03
"""Network-and-server arrival jitter a rate limiter tolerates (its base margin, seconds)."""

RETRY_STATUSES: tuple[int, ...] = (408, 429, 500, 502, 503, 504)
"""HTTP statuses worth another attempt: request timeout, too many requests, and the transient
server errors NCBI's front ends answer under load. Other 4xx (and 501, 505...) fail at once."""

BACKOFF_BASE_S = 0.5
"""Delay before the first retry, before jitter; each further retry doubles it."""
BACKOFF_MAX_S = 30.0
"""No retry delay grows past this (before jitter)."""
RETRY_AFTER_MAX_S = 60.0
"""A server's ``Retry-After`` is honoured up to this many seconds, never longer."""

BATCH_SIZE = 200
"""PMIDs per efetch POST: hundreds per request is what NCBI asks of bulk clients."""
ESEARCH_LIMIT = 9999
"""esearch returns at most this many ids for one term; larger queries are split by PMID range."""
MAX_BODY_BYTES = 32 * 1024 * 1024
"""An answer larger than this (after decompression) is a failed request; 200 records are about 1 MB."""


def api_key_from_env() -> str | None:
    """The API key from ``NCBI_API_KEY``, or None when unset or blank. Never log it."""
    return os.environ.get(API_KEY_ENV, "").strip() or None


def email_from_env() -> str:
    """The contact address from ``NCBI_EMAIL`` ('' when unset)."""
    return os.environ.get(EMAIL_ENV, "").strip()


def default_rate(api_key: str | None) -> float:
    """Requests per second NCBI allows: `RATE_WITH_KEY` with a key, else `RATE`."""
    return RATE_WITH_KEY if api_key else RATE


def is_retryable(status: int) -> bool:
    """Whether an HTTP status is one of `RETRY_STATUSES`."""
    return status in RETRY_STATUSES


def backoff_delay(
    attempt: int,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_MAX_S,
    *,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    The ceiling doubles from ``base`` per attempt up to ``cap``; the delay is drawn
    uniformly from the upper half of it ("equal jitter"), so clients that failed
    together do not retry together, yet each still waits at least half the ceiling.
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling * (0.5 + rng() / 2)


def retry_after_seconds(
    raw: str | bytes | None, cap: float = RETRY_AFTER_MAX_S, *, now: dt.datetime | None = None
) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds within ``[0, cap]``; None when absent or unreadable.

    Both forms of RFC 9110 are read: delay seconds (``120``, also ``1.5``) and an HTTP
    date (``Wed, 21 Oct 2026 07:28:00 GMT``, measured from ``now``). A wish past ``cap``
    is logged and capped, so a hostile or broken server cannot stall the client.
    """
    if raw is None:
        return None
    text = (raw.decode("latin-1") if isinstance(raw, bytes) else raw).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if math.isnan(seconds):
        return None
    if seconds > cap:
        log.warning("Retry-After %r capped at %g s", text[:40], cap)
        return cap
    return max(0.0, seconds)
