"""The limiter's safety margin and send probe: margin from loop turns, 429 widening, late sends counted late."""

from __future__ import annotations

import asyncio

import pytest

from crawler.delay_gauge import PROBE_TURNS, DelayGauge, probe_send
from crawler.ratelimit import LocalRateLimiter


def test_the_margin_is_the_base_plus_the_longest_recent_turn_and_narrows_again():
    gauge = DelayGauge(0.03, 0.25, initial=0.1, warmup=2, window=4)
    assert gauge.margin == pytest.approx(0.13)  # nothing measured yet
    gauge.delay(0.01, 0.002)
    gauge.delay(0.01, 0.002)
    assert gauge.margin == pytest.approx(0.032)
    gauge.delay(0.5, 0.12)  # a stalled loop: one turn took 120 ms
    assert gauge.margin == pytest.approx(0.15)
    for _ in range(3):
        gauge.delay(0.01, 0.002)
    assert gauge.margin == pytest.approx(0.15)  # still among the last 4
    gauge.delay(0.01, 0.002)
    assert gauge.margin == pytest.approx(0.032)
    gauge.delay(3.0, 2.0)
    assert gauge.margin == pytest.approx(0.25)  # the cap


def test_a_429_doubles_the_margin_and_good_answers_let_it_decay():
    gauge = DelayGauge(0.03, 0.25, warmup=0)
    gauge.widen()
    assert gauge.margin == pytest.approx(0.06)
    gauge.widen()
    assert gauge.margin == pytest.approx(0.12)
    for _ in range(40):
        gauge.answered()
    assert gauge.margin == pytest.approx(0.03)


def test_the_probe_reports_the_send_time_and_the_longest_turn():
    ticks = iter([100.001, 100.201, 100.202, 100.203])  # the second turn stalls 200 ms
    seen: list[tuple[float, float]] = []

    async def scenario() -> None:
        probe_send(100.0, lambda: next(ticks), lambda sent, turn: seen.append((sent, turn)))
        for _ in range(PROBE_TURNS + 2):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert PROBE_TURNS == 4
    assert seen == [(pytest.approx(100.203), pytest.approx(0.2))]


def test_without_a_loop_the_probe_reports_now():
    seen: list[tuple[float, float]] = []
    probe_send(5.0, lambda: 7.0, lambda sent, turn: seen.append((sent, turn)))
    assert seen == [(7.0, 0.0)]


def test_a_request_sent_late_is_counted_from_when_it_left():
    """A grant whose send stalls 300 ms: the window of the requests after it counts from the real send."""

    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

        async def sleep(self, seconds: float) -> None:
            self.now += max(0.0, seconds)
            for _ in range(PROBE_TURNS + 1):
                await asyncio.sleep(0)

    clock = Clock()
    lim = LocalRateLimiter(3, margin=0.02, initial_delay=0.0, cold_allowance=0.0, clock=clock, sleep=clock.sleep)

    async def scenario() -> list[float]:
        first = await lim.acquire()
        clock.now += 0.3  # the process stalls before the request leaves
        sent_first = clock.now
        for _ in range(PROBE_TURNS + 1):
            await asyncio.sleep(0)
        later = [await lim.acquire() for _ in range(3)]
        assert first < sent_first
        return [sent_first, *later]

    sent = asyncio.run(scenario())
    assert sent[3] - sent[0] >= 1.0 + 0.02
    assert lim.gauge.delays[0] == pytest.approx(0.3)
