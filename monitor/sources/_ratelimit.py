"""Pacing by the Management API's ``x-ratelimit-*`` headers.

When ``x-ratelimit-remaining`` runs low, the next call waits for ``x-ratelimit-reset`` instead
of spending the last request: a Free tenant shares 2 requests/s with every other tool using it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from monitor.httpclient import Answer

logger = logging.getLogger("monitor.sources.auth0")  # the Auth0 client logs under one name


@dataclass
class RateLimitHint:
    """The last ``x-ratelimit-*`` headers seen from the Management API."""

    remaining: int | None = None
    reset_at: float | None = None


class RateLimitPacer:
    """Remembers the Management API bucket's headers and waits before a call that would
    exhaust it."""

    def __init__(
        self,
        *,
        tenant: str,
        low_remaining: int,
        max_wait: float,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self._tenant = tenant
        self._low_remaining = low_remaining
        self._max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self._hint = RateLimitHint()

    def remember(self, response: Answer) -> None:
        self._hint = RateLimitHint(
            remaining=parse_count(response.headers.get("x-ratelimit-remaining")),
            reset_at=parse_epoch(response.headers.get("x-ratelimit-reset")),
        )

    async def pace(self, *, budget: float) -> float:
        """Wait for the rate-limit reset if the last answer said the bucket is nearly empty;
        returns the seconds waited."""
        hint = self._hint
        if hint.remaining is None or hint.reset_at is None:
            return 0.0
        if hint.remaining > self._low_remaining:
            return 0.0
        self._hint = RateLimitHint()  # used up; the next answer brings fresh numbers
        wait = min(hint.reset_at - self._clock(), self._max_wait, budget)
        if wait <= 0:
            return 0.0
        logger.info(
            "tenant=%s x-ratelimit-remaining=%d; waiting %.1fs for the rate-limit reset",
            self._tenant,
            hint.remaining,
            wait,
        )
        await self._sleep(wait)
        return wait


def parse_count(value: str | None) -> int | None:
    try:
        count = int(value) if value is not None else None
    except ValueError:
        return None
    return count if count is not None and count >= 0 else None


def parse_epoch(value: str | None) -> float | None:
    try:
        epoch = float(value) if value is not None else None
    except ValueError:
        return None
    return epoch if epoch is not None and math.isfinite(epoch) and epoch >= 0 else None
