"""The crawl's rate limiter, on a simulated clock: spacing, windows, 429 pauses, header use."""

from __future__ import annotations

import asyncio

import pytest

from crawler.ratelimit import LocalRateLimiter, RateLimiter
from eutils import policy


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def limiter(rate: float, fake: FakeTime, **kwargs: float) -> LocalRateLimiter:
    return LocalRateLimiter(rate, clock=fake.clock, sleep=fake.sleep, probe_sends=False, **kwargs)  # type: ignore[arg-type]


def max_in_window(times: list[float], window: float = 1.0) -> int:
    return max(sum(1 for u in times if t - window < u <= t) for t in times)


async def acquire_all(lim: LocalRateLimiter, n: int) -> list[float]:
    return list(await asyncio.gather(*(lim.acquire() for _ in range(n))))


@pytest.mark.parametrize("rate", [1, 3, 10, 2.5])
def test_concurrent_acquires_never_exceed_the_rate_in_any_window(rate):
    fake = FakeTime()
    lim = limiter(rate, fake)
    starts = asyncio.run(acquire_all(lim, 40))
    assert max_in_window(starts) <= int(rate)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1 / rate  # evenly spaced, no burst, no randomness
    # ...and not slower than needed: floor(rate) per window (a fractional rate rounds down),
    # plus the first request's cold allowance once.
    # The margin: the configured one plus the largest delay measured (wake-ups are exact on this
    # clock, so after the first few grants, which allow 0.1 s before there are measurements, none).
    assert lim.margin == pytest.approx(policy.ARRIVAL_JITTER_S)
    assert (starts[-1] - starts[0] - lim.cold_allowance) / (len(starts) - 1) <= (1 + 0.12) / int(rate) + 1e-9


def test_the_first_request_counts_as_arriving_late_in_the_window_of_the_requests_after_it():
    fake = FakeTime()
    lim = limiter(3, fake, margin=0.0, initial_delay=0.0, cold_allowance=0.1)
    starts = asyncio.run(acquire_all(lim, 7))
    # It may open the connection and so arrive up to 0.1 s late: the 4th start keeps a full
    # second after that; from then on the spacing is the plain 1/rate again.
    assert starts[3] - starts[0] >= 1.1
    assert starts[6] - starts[3] == pytest.approx(1.0)


def test_a_request_after_a_quiet_spell_is_cold_again():
    fake = FakeTime()
    lim = limiter(3, fake, margin=0.0, initial_delay=0.0, cold_allowance=0.1)

    async def scenario() -> list[float]:
        first = await acquire_all(lim, 3)
        fake.now += 5.0  # nothing to send for a while: the connection may be gone
        return first + await acquire_all(lim, 4)

    starts = asyncio.run(scenario())
    assert starts[6] - starts[3] >= 1.1


def test_a_429_pauses_for_retry_after_halves_the_rate_and_recovers():
    fake = FakeTime()
    lim = limiter(4, fake)

    async def scenario() -> tuple[float, float]:
        await acquire_all(lim, 3)
        hit = fake.now
        lim.penalise(2.0)
        assert lim.rate == 2.0
        first_after = await lim.acquire()
        for _ in range(20):
            lim.observe(None, None, None)
        return hit, first_after

    hit, first_after = asyncio.run(scenario())
    assert first_after - hit >= 2.0
    assert lim.rate == 4.0 and lim.penalties == 1


def test_missing_retry_after_still_pauses_one_second():
    fake = FakeTime()
    lim = limiter(3, fake)

    async def scenario() -> float:
        await lim.acquire()
        t = fake.now
        lim.penalise(None)
        return await lim.acquire() - t

    assert asyncio.run(scenario()) >= 1.0


def test_rate_limit_headers_lower_the_rate_and_reveal_other_clients():
    fake = FakeTime()
    lim = limiter(10, fake)

    async def scenario() -> float:
        sent = await lim.acquire()
        lim.observe(3, 2, sent)  # server allows 3/s: we adopt it
        assert lim.max_rate == 3.0 and lim.rate == 3.0
        sent = await lim.acquire()
        before = fake.now
        lim.observe(3, 0, sent)  # 0 left although we sent only 2 in this window: someone else is busy
        return (await lim.acquire()) - before

    assert asyncio.run(scenario()) >= 1 / 3


def test_local_limiter_implements_the_interface_for_other_backends():
    assert isinstance(LocalRateLimiter(3), RateLimiter)
    with pytest.raises(ValueError, match="positive"):
        LocalRateLimiter(0)


@pytest.mark.parametrize("rate", [3, 10])
def test_arrivals_never_exceed_the_rate_under_jitter_below_the_base_margin(rate):
    """What the server sees: each request arrives 0-80 ms after its grant (base margin 80 ms), the answer 5 ms later."""
    import random

    draw = random.Random(rate)
    fake = FakeTime()
    lim = limiter(rate, fake, margin=0.08)

    async def scenario() -> list[float]:
        arrivals = []
        for _ in range(300):
            granted = await lim.acquire()
            delay = draw.uniform(0.0, 0.08)
            arrivals.append(granted + delay)
            fake.now = max(fake.now, granted + delay + 0.005)
            lim.observe(None, None, granted)
        return arrivals

    arrivals = asyncio.run(scenario())
    assert max_in_window(sorted(arrivals)) <= rate
    # Answer times do not widen the margin (they include the server's processing): the crawl stays fast.
    assert lim.margin == pytest.approx(0.08)
    span = arrivals[-1] - arrivals[0]
    assert span / (len(arrivals) - 1) <= (1 + 0.09) / rate


def test_the_same_jitter_above_the_base_margin_can_bunch_arrivals():
    """The guarantee is exactly as wide as the base margin: 80 ms of jitter against 20 ms shows 4 in a second."""
    import random

    draw = random.Random(3)
    fake = FakeTime()
    lim = limiter(3, fake, margin=0.02)

    async def scenario() -> list[float]:
        arrivals = []
        for _ in range(300):
            granted = await lim.acquire()
            arrivals.append(granted + draw.uniform(0.0, 0.08))
            lim.observe(None, None, granted)
        return arrivals

    assert max_in_window(sorted(asyncio.run(scenario()))) > 3


def test_a_429_widens_the_margin_and_the_pause_ends_without_a_burst():
    fake = FakeTime()
    lim = limiter(3, fake, initial_delay=0.0)

    async def scenario() -> list[float]:
        for _ in range(10):
            lim.observe(None, None, await lim.acquire())
        before = lim.margin
        lim.penalise(1.0)
        assert lim.margin >= 2 * before
        return list(await asyncio.gather(*(lim.acquire() for _ in range(6))))

    after = asyncio.run(scenario())
    gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
    assert min(gaps) >= 1 / lim.rate  # held-back requests leave one interval apart


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1000000000", 60.0), ("inf", 60.0), ("1e400", 60.0), ("-5", 0.0), ("nan", None), ("Wed, 21 Oct", None)],
)
def test_retry_after_and_rate_headers_are_bounded(raw, expected, caplog):
    from crawler.ratelimit import bounded_header

    assert bounded_header("Retry-After", raw, 0.0, 60.0) == expected
    assert bounded_header("X-RateLimit-Limit", b"1e400", 1.0, 1000.0) == 1000.0
    if expected is not None and raw not in ("-5",):
        assert "out of range" in caplog.text


def test_a_huge_retry_after_pauses_at_most_the_cap():
    fake = FakeTime()
    lim = limiter(3, fake, retry_after_max=5.0)

    async def scenario() -> float:
        await lim.acquire()
        t = fake.now
        lim.penalise(1e9)
        return await lim.acquire() - t

    assert 5.0 <= asyncio.run(scenario()) <= 5.5
