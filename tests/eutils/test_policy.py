"""The NCBI policy: one set of retryable statuses, one jittered backoff, Retry-After read and capped."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from eutils import policy


def test_rate_follows_the_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    assert policy.api_key_from_env() is None and policy.default_rate(None) == 3.0
    monkeypatch.setenv("NCBI_API_KEY", "  ")
    assert policy.api_key_from_env() is None
    monkeypatch.setenv("NCBI_API_KEY", "k123")
    assert policy.api_key_from_env() == "k123" and policy.default_rate("k123") == 10.0


@pytest.mark.parametrize(("status", "retry"), [(408, True), (429, True), (500, True), (503, True), (504, True)])
def test_transient_statuses_are_retried(status: int, retry: bool) -> None:
    assert policy.is_retryable(status) is retry


@pytest.mark.parametrize("status", [200, 301, 400, 403, 404, 414, 501, 505, 522])
def test_other_statuses_are_not(status: int) -> None:
    assert not policy.is_retryable(status)


def test_the_crawl_uses_the_same_statuses_and_backoff() -> None:
    from crawler import settings

    assert list(policy.RETRY_STATUSES) == settings.RETRY_HTTP_CODES
    assert (settings.PUBMED_RETRY_BACKOFF, settings.PUBMED_RETRY_BACKOFF_MAX) == (
        policy.BACKOFF_BASE_S,
        policy.BACKOFF_MAX_S,
    )
    assert settings.PUBMED_RETRY_AFTER_MAX == policy.RETRY_AFTER_MAX_S


def test_backoff_doubles_within_jitter_and_is_capped() -> None:
    low = [policy.backoff_delay(n, 0.5, 30.0, rng=lambda: 0.0) for n in range(1, 9)]
    high = [policy.backoff_delay(n, 0.5, 30.0, rng=lambda: 1.0) for n in range(1, 9)]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert low == [h / 2 for h in high]
    draws = {policy.backoff_delay(3) for _ in range(50)}
    assert len(draws) > 40 and all(1.0 <= d <= 2.0 for d in draws)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(None, None), ("", None), ("5", 5.0), (b"1.5", 1.5), (" 0 ", 0.0), ("-3", 0.0), ("soon", None), ("nan", None)],
)
def test_retry_after_seconds(raw: str | bytes | None, seconds: float | None) -> None:
    assert policy.retry_after_seconds(raw) == seconds


def test_retry_after_http_date_and_cap(caplog: pytest.LogCaptureFixture) -> None:
    now = dt.datetime(2026, 10, 21, 7, 28, tzinfo=dt.UTC)
    assert policy.retry_after_seconds("Wed, 21 Oct 2026 07:28:30 GMT", now=now) == 30.0
    assert policy.retry_after_seconds("Wed, 21 Oct 2026 07:27:00 GMT", now=now) == 0.0
    with caplog.at_level(logging.WARNING, logger="eutils.policy"):
        assert policy.retry_after_seconds("86400") == policy.RETRY_AFTER_MAX_S
        assert policy.retry_after_seconds("inf", cap=2.0) == 2.0
        assert policy.retry_after_seconds("Wed, 21 Oct 2026 09:00:00 GMT", cap=10.0, now=now) == 10.0
    assert sum("capped" in r.getMessage() for r in caplog.records) == 3
