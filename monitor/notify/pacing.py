"""How fast and how often the dispatcher may send: a token bucket per destination and the retry
schedule (capped exponential backoff with jitter, then the Standard Webhooks schedule).

Both are pure: they are given the time and a random generator and never sleep themselves.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

FAST_BASE = 1.0
FAST_CAP = 60.0
FAST_PHASE = 600.0
"""Seconds of failed attempts (about 15 of them) spent on the fast schedule 1 s, 2 s, 4 s …
60 s before the slow schedule takes over."""

SLOW_SCHEDULE: tuple[float, ...] = (
    5 * 60.0,
    30 * 60.0,
    2 * 3600.0,
    5 * 3600.0,
    10 * 3600.0,
    14 * 3600.0,
    20 * 3600.0,
    24 * 3600.0,
)
"""The Standard Webhooks retry intervals; the last one repeats until ``max_age`` runs out."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """The delay before the next attempt after ``failures`` failed attempts (429s excluded).

    Failures 1, 2, 3 … wait 1 s, 2 s, 4 s … capped at 60 s, until those waits add up to
    ``fast_phase`` (ten minutes by default: 15 failures); then 5 m, 30 m, 2 h, 5 h, 10 h, 14 h,
    20 h and 24 h, repeating the last. Each delay is spread by ``jitter`` (±20 %) so that a
    destination that comes back is not hit by every keywatch at the same moment.
    """

    base: float = FAST_BASE
    cap: float = FAST_CAP
    fast_phase: float = FAST_PHASE
    slow_schedule: Sequence[float] = SLOW_SCHEDULE
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap) or not self.slow_schedule:
            raise ValueError("backoff: need 0 < base <= cap and a non-empty slow schedule")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff: jitter must be in [0, 1), got {self.jitter!r}")

    @property
    def fast_failures(self) -> int:
        """How many failures are retried on the fast schedule."""
        total, count = 0.0, 0
        while total < self.fast_phase:
            total += self.fast_step(count + 1)
            count += 1
        return count

    def fast_step(self, failures: int) -> float:
        exponent = min(failures - 1, 64)  # 2**64 s is far past any cap
        return min(self.cap, self.base * math.pow(2, exponent))

    def step(self, failures: int) -> float:
        """The un-jittered delay after the ``failures``-th failure (``failures`` >= 1)."""
        if failures < 1:
            raise ValueError(f"backoff: failures must be >= 1, got {failures!r}")
        fast = self.fast_failures
        if failures <= fast:
            return self.fast_step(failures)
        slow_index = min(failures - fast - 1, len(self.slow_schedule) - 1)
        return self.slow_schedule[slow_index]

    def delay(self, failures: int, rng: random.Random) -> float:
        return self.step(failures) * rng.uniform(1 - self.jitter, 1 + self.jitter)


class TokenBucket:
    """``rate`` sends per second with bursts of at most ``burst``; ``pause`` holds every token
    back for a while (a destination's own rate-limit hint)."""

    def __init__(
        self, rate: float, *, burst: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._rate = _checked_rate(rate)
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._updated = clock()
        self._paused_until = -math.inf

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        self._refill()
        self._rate = _checked_rate(rate)

    def wait_time(self) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        self._refill()
        now = self._clock()
        paused = max(0.0, self._paused_until - now)
        missing = max(0.0, 1.0 - self._tokens)
        return max(paused, missing / self._rate)

    def take(self) -> None:
        """Use a token; call after ``wait_time()`` returned 0 (or after waiting that long)."""
        self._refill()
        self._tokens -= 1.0

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now


def _checked_rate(rate: float) -> float:
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate limit must be a positive number of messages per second: {rate!r}")
    return rate
