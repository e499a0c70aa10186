"""The daemon's scheduler (``monitor.daemon.TickingScheduler``): its timer runs the due jobs
in its own callback, never through ``call_soon_threadsafe``, at most once per
``SCHEDULER_TICK``, so jobs that fall due close together start together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from monitor.daemon import SCHEDULER_TICK, TickingScheduler


class CountedTicks(TickingScheduler):
    ticks = 0

    def _tick(self) -> None:
        self.ticks += 1
        super()._tick()


async def until(condition: Callable[[], bool], *, deadline: float = 10.0) -> None:
    limit = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < limit, "the jobs did not run"
        await asyncio.sleep(0.01)


async def test_jobs_due_within_a_tick_run_together_from_the_timer_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    scheduler = CountedTicks(timezone=UTC)
    ran: dict[str, float] = {}

    async def job(name: str) -> None:
        ran[name] = loop.time()

    scheduler.start()
    await asyncio.sleep(0)  # the start's own wakeup has run
    added_at = loop.time()
    now = datetime.now(UTC)
    for name, due_in in (("a", 0.01), ("b", 0.04)):
        scheduler.add_job(job, "date", run_date=now + timedelta(seconds=due_in), args=[name])
    for _ in range(3):
        await asyncio.sleep(0)  # the wakeups add_job asked for have run
    threadsafe = loop.call_soon_threadsafe

    def not_from_the_timer(*args: object, **kwargs: object) -> asyncio.Handle:
        raise AssertionError("the scheduler's timer went through call_soon_threadsafe")

    monkeypatch.setattr(loop, "call_soon_threadsafe", not_from_the_timer)
    try:
        await until(lambda: len(ran) == 2)
    finally:
        monkeypatch.setattr(loop, "call_soon_threadsafe", threadsafe)
        scheduler.shutdown(wait=False)
    assert scheduler.ticks == 1  # one timer callback started both jobs
    assert min(ran.values()) >= added_at + SCHEDULER_TICK  # a timer never fires early
