"""The crawl's rate limiter, on a simulated clock: spacing, windows, 429 pauses, header use."""

from __future__ import annotations

import asyncio

import pytest

from crawler.ratelimit import LocalRateLimiter, RateLimiter


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
    return LocalRateLimiter(rate, clock=fake.clock, sleep=fake.sleep, **kwargs)  # type: ignore[arg-type]


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
    assert (starts[-1] - starts[0] - lim.cold_allowance) / (len(starts) - 1) <= 1 / int(rate) + 0.011


def test_the_first_request_counts_as_arriving_late_in_the_window_of_the_requests_after_it():
    fake = FakeTime()
    lim = limiter(3, fake, margin=0.0, cold_allowance=0.1)
    starts = asyncio.run(acquire_all(lim, 7))
    # It may open the connection and so arrive up to 0.1 s late: the 4th start keeps a full
    # second after that; from then on the spacing is the plain 1/rate again.
    assert starts[3] - starts[0] >= 1.1
    assert starts[6] - starts[3] == pytest.approx(1.0)


def test_a_request_after_a_quiet_spell_is_cold_again():
    fake = FakeTime()
    lim = limiter(3, fake, margin=0.0, cold_allowance=0.1)

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
