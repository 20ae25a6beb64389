"""When a granted request really leaves, and the safety margin a rate limiter keeps beyond that.

A limiter spaces its grants; the server counts arrivals. Between the two lie (1) how late
the process actually sends a granted request (it wakes late for the grant, or its event
loop is busy, e.g. parsing an answer or writing the store, before the bytes leave) and
(2) the network and the server's front end.

(1) is measured for every request: `probe_send` follows the running asyncio loop for
``PROBE_TURNS`` turns after the grant, by which time a request handed on at its grant
has been written to its socket (Scrapy passes it on through a task and a Deferred, the
transport writes when the socket is next reported writable: two or three turns), and
reports that time and the longest single turn it saw. A limiter counts each request
from that measured send time, so a stalled process that sends late is counted late, and
the requests after it keep their spacing from it. What the probe cannot rule out is that
a send needs one turn more than it followed; `DelayGauge` allows for one turn as long as
the longest turn seen after the last ``window`` grants.

(2) cannot be seen from the client and is a fixed allowance, ``base``: **arrival jitter
(network plus server) below ``base`` never shows the server more than the rate**. Answer
times are deliberately not used: the server's processing time (a 200-record efetch
varies widely, more so on a busy machine) lengthens an answer without moving its arrival.

`DelayGauge.margin` is ``base`` plus that longest turn (at least ``initial`` until
``warmup`` grants were probed), or, after a 429, a widened margin (twice the margin then,
at least 50 ms, decaying by a tenth with every good answer), whichever is larger; never
above ``cap``. `DelayGauge.measured_margin` is the same without the warm-up floor
``initial``: what has been measured so far.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

PROBE_TURNS = 4  # loop turns a probe follows after a grant (Scrapy writes a granted request within three)


class DelayGauge:
    """The safety margin of a rate limiter, from the send delays it measures (see module docs)."""

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        initial: float = 0.1,
        warmup: int = 4,
        window: int = 8,
    ) -> None:
        self.base = max(0.0, base)
        self.cap = max(self.base, cap)
        self.initial = max(0.0, initial)
        self.warmup = max(0, warmup)
        self._turns: deque[float] = deque(maxlen=max(1, window))
        self.delays: deque[float] = deque(maxlen=max(1, window))
        self._measured = 0
        self._widened = 0.0

    def delay(self, seconds: float, turn: float) -> None:
        """A granted request left ``seconds`` after its grant was due; the longest loop turn meanwhile was ``turn``."""
        if not (math.isfinite(seconds) and math.isfinite(turn)):
            return
        self.delays.append(max(0.0, seconds))
        self._turns.append(max(0.0, turn))
        self._measured += 1

    def answered(self) -> None:
        """A good (not 429) answer: a margin widened by a 429 decays towards the measured one."""
        self._widened *= 0.9

    def widen(self) -> None:
        """The server refused a request (429): the margin was too small; double it (at least 50 ms)."""
        self._widened = min(self.cap, max(0.05, 2 * self.margin))

    @property
    def measured(self) -> float:
        """The longest loop turn after the last ``window`` grants (at least ``initial`` while warming up)."""
        longest = max(self._turns, default=0.0)
        if self._measured < self.warmup:
            return max(self.initial, longest)
        return longest

    @property
    def margin(self) -> float:
        return min(self.cap, max(self.base + self.measured, self._widened))

    @property
    def measured_margin(self) -> float:
        """The margin without the warm-up guess ``initial``: what the turns measured (and a 429) call for."""
        return min(self.cap, max(self.base + max(self._turns, default=0.0), self._widened))


def probe_send(granted: float, clock: Callable[[], float], done: Callable[[float, float], None]) -> None:
    """Call ``done(sent, longest_turn)`` once the running loop has turned `PROBE_TURNS` times after ``granted``.

    Without a running loop the request is taken as sent now (``done(now, 0.0)``, at once).
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        done(max(granted, clock()), 0.0)
        return

    def turn(left: int, last: float, longest: float) -> None:
        now = clock()
        longest = max(longest, now - last)
        if left <= 1:
            done(max(granted, now), longest)
        else:
            loop.call_soon(turn, left - 1, now, longest)

    loop.call_soon(turn, PROBE_TURNS, granted, 0.0)
