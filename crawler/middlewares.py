"""Retries with backoff for E-utilities requests: HTTP errors, network failures, bad bodies.

`EutilsRetryMiddleware` (downloader) replaces Scrapy's ``RetryMiddleware``: 429, 5xx,
timeouts and dropped connections are retried up to ``RETRY_TIMES`` times, each retry
delayed by the policy's jittered exponential backoff (`eutils.policy.backoff_delay` from
``PUBMED_RETRY_BACKOFF``, capped at ``PUBMED_RETRY_BACKOFF_MAX``; for a 429 the rate
limiter's pause applies instead).
`ParseErrorRetryMiddleware` (spider) does the same for answers that arrived with HTTP
200 but cannot be used: truncated or malformed XML (`MalformedXMLError`) and error
documents (`EutilsError`), and a parser that ran out of stack (`RecursionError`). Any
other exception while parsing an answer fails that request's batch at once (its PMIDs
are re-requested or reported as failed), so no batch is ever dropped silently. Every
retry is counted in the stats under ``retry/``; when attempts run out the request's
errback (the spider) decides what to report. E-utilities never redirect: a 3xx answer
is a failed request (`IgnoreRequest`, its ``Location`` logged), never followed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.retry import RetryMiddleware, get_retry_request
from scrapy.exceptions import IgnoreRequest
from scrapy.utils.response import response_status_message

from eutils.policy import backoff_delay
from eutils.pubmed_xml import MalformedXMLError
from eutils.responses import EutilsError

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response

log = logging.getLogger(__name__)

BODY_ERRORS = (MalformedXMLError, EutilsError, RecursionError)


def _with_backoff(crawler: Crawler, request: Request, retry: Request, *, pause: bool = True) -> Request:
    settings = crawler.settings
    attempt = int(retry.meta.get("retry_times", 1))
    delay = (
        backoff_delay(attempt, settings.getfloat("PUBMED_RETRY_BACKOFF"), settings.getfloat("PUBMED_RETRY_BACKOFF_MAX"))
        if pause
        else 0.0
    )
    retry.meta["pubmed_not_before"] = time.monotonic() + delay
    retry.meta.pop("pubmed_sent_at", None)
    assert crawler.stats is not None
    crawler.stats.inc_value("pubmed/retries")
    return retry


class EutilsRetryMiddleware(RetryMiddleware):
    """Scrapy's retry rules plus per-request exponential backoff and retry stats."""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> EutilsRetryMiddleware:
        mw = cls(crawler.settings)
        mw.crawler = crawler
        return mw

    def process_response(self, request: Request, response: Response, spider: Any = None) -> Request | Response:
        if 300 <= response.status < 400:
            location = (response.headers.get("Location") or b"").decode("latin-1")[:300]
            assert self.crawler.stats is not None
            self.crawler.stats.inc_value("pubmed/redirects_refused")
            log.warning("HTTP %d from %s redirects to %r: not followed", response.status, request.url, location)
            raise IgnoreRequest(f"HTTP {response.status} redirect to {location!r} refused")
        if request.meta.get("dont_retry", False) or response.status not in self.retry_http_codes:
            return response
        retry = self._retry(request, response_status_message(response.status))
        if retry is None:
            return response
        # After a 429 the limiter already pauses every request for Retry-After.
        return _with_backoff(self.crawler, request, retry, pause=response.status != 429)

    def process_exception(self, request: Request, exception: Exception, spider: Any = None) -> Request | None:
        if request.meta.get("dont_retry", False) or not isinstance(exception, self.exceptions_to_retry):
            return None
        retry = self._retry(request, exception)
        if retry is None:
            return None
        return _with_backoff(self.crawler, request, retry)


class ParseErrorRetryMiddleware:
    """Spider middleware: retry a request whose HTTP 200 body was malformed or an error document."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ParseErrorRetryMiddleware:
        return cls(crawler)

    def process_spider_exception(self, response: Response, exception: Exception) -> Iterable[Any] | None:
        spider = self.crawler.spider
        assert spider is not None and response.request is not None
        request = response.request
        gave_up = getattr(spider, "request_gave_up", None)
        if not isinstance(exception, BODY_ERRORS):
            if gave_up is None or not ({"pmids", "span"} & set(request.meta)):
                return None
            log.error("cannot use the answer to %s", request, exc_info=exception)
            return list(gave_up(request, f"{type(exception).__name__}: {exception}"))
        log.debug("unusable answer to %s: %s", request, exception)
        retry = get_retry_request(request, spider=spider, reason=type(exception).__name__)
        if retry is not None:
            return [_with_backoff(self.crawler, request, retry)]
        return list(gave_up(request, str(exception))) if gave_up is not None else []
