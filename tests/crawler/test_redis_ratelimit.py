"""The shared Redis rate limit's margin: measured margins hold a while, a warm-up guess only while it lasts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crawler.redis_ratelimit import MARGIN_TTL_S, RedisRateLimiter

KEY = "pubmed:rate:test"


@pytest.fixture
def client(redis_url: str) -> Iterator[object]:
    import redis

    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def _limiter(client: object, turn: float) -> RedisRateLimiter:
    """A limiter at 10/s whose gauge has seen 11 grants with loop turns of ``turn`` seconds."""
    limiter = RedisRateLimiter(client, KEY, 10, margin=0.03)  # type: ignore[arg-type]
    for _ in range(11):
        limiter.gauge.delay(0.001, turn)
    return limiter


def _gap_after(client: object, limiter: RedisRateLimiter, member: str) -> float:
    """Reserve one start on an empty schedule (the margin reports stay); the spacing the schedule set after it."""
    client.delete(f"{KEY}:starts")  # type: ignore[attr-defined]
    client.hdel(f"{KEY}:state", "next")  # type: ignore[attr-defined]
    reserved, _ = limiter.try_acquire(member, 0.0)
    assert reserved
    start = float(client.zscore(f"{KEY}:starts", member))  # type: ignore[attr-defined]
    return float(client.hget(f"{KEY}:state", "next")) - start  # type: ignore[attr-defined]  (Lua keeps 14 digits)


def test_a_warm_up_guess_counts_only_while_its_process_warms_up(client: object) -> None:
    warming, calm = RedisRateLimiter(client, KEY, 10, margin=0.03), _limiter(client, 0.002)  # type: ignore[arg-type]
    assert warming.margin == pytest.approx(0.13) and calm.margin == pytest.approx(0.032)
    assert _gap_after(client, warming, "warming-1") == pytest.approx(0.113, abs=1e-3)
    assert _gap_after(client, calm, "calm-1") == pytest.approx(0.113, abs=1e-3)  # its latest report
    for _ in range(4):
        warming.gauge.delay(0.001, 0.002)
    assert _gap_after(client, warming, "warming-2") == pytest.approx(0.1032, abs=1e-3)
    assert _gap_after(client, calm, "calm-2") == pytest.approx(0.1032, abs=1e-3)  # the guess did not stick


def test_a_measured_wide_margin_widens_every_process_s_spacing_for_a_while(client: object) -> None:
    stalled, calm = _limiter(client, 0.2), _limiter(client, 0.002)
    assert stalled.margin == pytest.approx(0.23) and calm.margin == pytest.approx(0.032)
    assert _gap_after(client, calm, "calm-1") == pytest.approx(0.1032, abs=1e-3)  # alone: its own margin
    assert _gap_after(client, stalled, "stalled-1") == pytest.approx(0.123, abs=1e-3)
    for _ in range(11):
        stalled.gauge.delay(0.001, 0.002)
    assert _gap_after(client, stalled, "stalled-2") == pytest.approx(0.123, abs=1e-3)
    assert _gap_after(client, calm, "calm-2") == pytest.approx(0.123, abs=1e-3)  # measured: it holds MARGIN_TTL_S


def test_the_report_of_a_process_gone_quiet_lapses(client: object) -> None:
    calm = _limiter(client, 0.002)
    seconds, micros = client.time()  # type: ignore[attr-defined]
    now = seconds + micros / 1e6
    margins = f"{KEY}:margins"
    client.hset(margins, "recent", f"0.2 {now - MARGIN_TTL_S + 2}")  # type: ignore[attr-defined]
    client.hset(margins, "gone", f"0.25 {now - MARGIN_TTL_S - 1}")  # type: ignore[attr-defined]
    assert _gap_after(client, calm, "calm-1") == pytest.approx(0.12, abs=1e-3)  # the recent report counts
    assert client.hexists(margins, "gone") is False  # type: ignore[attr-defined]
    client.hdel(margins, "recent")  # type: ignore[attr-defined]
    assert _gap_after(client, calm, "calm-2") == pytest.approx(0.1032, abs=1e-3)
