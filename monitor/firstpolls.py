"""The pace of the first polls: as fast as the event loop keeps up (issue 12, start-up).

A tenant's first poll costs more than its later ones (a token, the baseline's commit), and
10,000 of them started at a fixed rate saturate the process: the event loop runs late and
``/healthz`` and ``/metrics`` wait behind the polls. ``FirstPolls`` releases the first polls a
tick at a time instead, at a rate that grows while the loop's timers fire on time and halves
when they fire late or when many polls already wait for their turn (``next_rate``:
additive-increase, multiplicative-decrease). It never goes below ``MIN_RATE``, nor below the
rate that releases every tenant within ``SPREAD_INTERVALS`` poll intervals: on a machine too
busy for its fleet the loop runs late, and the released tenants' next polls keep it late, so
a pace from the lag alone could leave tenants unwatched for many intervals.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable

TICK_SECONDS = 0.05
"""How often the pace is adjusted (and the loop's lag measured)."""
TARGET_LAG_SECONDS = 0.05
"""A timer firing later than this means the loop is busy: the rate halves. Half of the 100 ms
within which ``/healthz`` should answer."""
START_RATE = 50.0
"""First polls per second at first; a small fleet starts within a tick or two anyway."""
MIN_RATE = 10.0
SPREAD_INTERVALS = 2.0
"""Every tenant's first poll is released within this many poll intervals (the shortest)."""
MAX_RATE = 1000.0
"""First polls per second at most: above the ~400 a second a first poll of ~2.5 ms of CPU
allows, so the loop's lag and the backlog set the pace, not this."""
RATE_STEP = 20.0
"""Polls per second added after each tick on time."""
MAX_BACKLOG = 100
"""Polls started but not finished (in flight or waiting for a slot) above which the rate
halves as when the loop is late: the polls already cannot keep up."""


def next_rate(
    rate: float,
    lag: float,
    *,
    backlog: int = 0,
    target: float = TARGET_LAG_SECONDS,
    floor: float = MIN_RATE,
    ceiling: float = MAX_RATE,
) -> float:
    """The rate for the next tick, after a tick whose timer fired ``lag`` seconds late with
    ``backlog`` polls unfinished: half as fast when late or backlogged (``MAX_BACKLOG``),
    ``RATE_STEP`` faster when on time (within half the target), the same in between; always
    within [``floor``, ``ceiling``]."""
    if lag > target or backlog >= MAX_BACKLOG:
        rate /= 2
    elif lag <= target / 2:
        rate += RATE_STEP
    return min(ceiling, max(floor, rate))


class FirstPolls:
    """Releases each tenant's first poll once, in order, at the pace of ``next_rate``.

    ``release(name)`` starts the tenant's polling; ``backlog()`` counts the polls started and
    not finished. ``clock`` and ``sleep`` are the event loop's, injectable for tests."""

    def __init__(
        self,
        release: Callable[[str], None],
        *,
        backlog: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        tick: float = TICK_SECONDS,
    ) -> None:
        self._release = release
        self._backlog = backlog
        self._clock = clock
        self._sleep = sleep
        self._tick = tick
        self.rate = START_RATE

    async def run(self, names: Iterable[str], *, interval: float = math.inf) -> None:
        """Release ``names`` in order; ``interval``: the shortest poll interval among them."""
        clock = self._clock or asyncio.get_running_loop().time
        waiting = deque(names)
        floor = max(MIN_RATE, len(waiting) / (SPREAD_INTERVALS * interval))
        credit = 1.0  # the first tenant at once
        while waiting:
            for _ in range(min(int(credit), len(waiting))):
                self._release(waiting.popleft())
                credit -= 1
            if not waiting:
                return
            started = clock()
            await self._sleep(self._tick)
            elapsed = clock() - started
            lag = max(0.0, elapsed - self._tick)
            self.rate = next_rate(self.rate, lag, backlog=self._backlog(), floor=floor)
            # a long stall adds no burst beyond two ticks' worth, or the floor's for the stall
            carried = max(1.0, 2 * self.rate * self._tick, floor * elapsed)
            credit = min(credit + self.rate * elapsed, carried)
