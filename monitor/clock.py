"""Time, injected: wall time, a monotonic clock and sleeping, so tests can drive them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be in UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def span(seconds: float, *, tenths_below: float = 10.0) -> str:
    """``seconds`` for people, two units at most: 0.4s, 12s, 5m, 2h30m, 7d. Below
    ``tenths_below`` seconds, in tenths of a second (pass 0 for whole seconds only)."""
    if seconds < tenths_below:
        return f"{max(seconds, 0):.1f}s"
    rest, parts = round(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) or "0s"


@dataclass(frozen=True, slots=True)
class Clock:
    """Wall time (stored in the outbox), a monotonic clock (rate limits) and sleeping."""

    now: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
