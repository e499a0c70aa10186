"""The first polls of a big fleet are paced by the event loop's lag (``monitor.firstpolls``),
not started at once: faster while timers fire on time, slower when they fire late, none while
enough polls wait for a slot. Clock and sleep are injected: nothing here waits."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.config import TenantConfig, parse_config
from monitor.firstpolls import (
    MAX_BACKLOG,
    MAX_RATE,
    MIN_RATE,
    RATE_STEP,
    SPREAD_INTERVALS,
    START_RATE,
    TARGET_LAG_SECONDS,
    TICK_SECONDS,
    FirstPolls,
    next_rate,
)
from monitor.metrics import Telemetry
from monitor.poll import Poller
from monitor.schedule import PollSchedule


def test_the_rate_halves_when_a_timer_fires_late_and_grows_while_on_time() -> None:
    assert next_rate(100, TARGET_LAG_SECONDS * 1.01) == 50
    assert next_rate(100, 0.0, backlog=MAX_BACKLOG) == 50
    assert next_rate(100, 0.0, backlog=MAX_BACKLOG - 1) == 100 + RATE_STEP
    assert next_rate(100, 0.0) == 100 + RATE_STEP
    assert next_rate(100, TARGET_LAG_SECONDS / 2) == 100 + RATE_STEP
    assert next_rate(100, TARGET_LAG_SECONDS * 0.75) == 100  # between: held
    assert next_rate(MIN_RATE, 10.0) == MIN_RATE
    assert next_rate(MAX_RATE, 0.0) == MAX_RATE


class FakeLoop:
    """A clock and a sleep: each sleep takes its time plus the next scripted lag."""

    def __init__(self, lags: list[float] | None = None) -> None:
        self.now = 0.0
        self.lags = lags or []
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds + (self.lags.pop(0) if self.lags else 0.0)


async def paced(count: int, loop: FakeLoop, backlog: list[int] | None = None) -> list[float]:
    """When (on the fake clock) each of ``count`` tenants was released, in order."""
    released: list[tuple[str, float]] = []
    pacer = FirstPolls(
        lambda name: released.append((name, loop.now)),
        backlog=lambda: backlog.pop(0) if backlog else 0,
        clock=loop.clock,
        sleep=loop.sleep,
    )
    await pacer.run([f"t{n}" for n in range(count)])
    assert [name for name, _ in released] == [f"t{n}" for n in range(count)]  # each once
    return [at for _, at in released]


async def test_a_small_fleet_starts_within_a_tick() -> None:
    loop = FakeLoop()
    times = await paced(3, loop)
    assert times == [0.0, TICK_SECONDS, TICK_SECONDS]
    assert loop.sleeps == 1


async def test_on_time_the_pace_climbs_to_the_ceiling_and_no_faster() -> None:
    loop = FakeLoop()
    times = await paced(2000, loop)
    ticks = Counter(round(at / TICK_SECONDS) for at in times)
    per_tick = [ticks[tick] for tick in range(loop.sleeps + 1)]
    assert per_tick[:2] == [1, int((START_RATE + RATE_STEP) * TICK_SECONDS)]
    assert max(per_tick) <= MAX_RATE * TICK_SECONDS + 1
    assert per_tick[-2] == pytest.approx(MAX_RATE * TICK_SECONDS, abs=1)
    assert per_tick == sorted(per_tick[:-1]) + per_tick[-1:]  # never slower while on time


async def test_a_late_loop_slows_the_pace_and_a_stall_adds_no_burst() -> None:
    on_time = await paced(300, FakeLoop())
    late = await paced(300, FakeLoop(lags=[0.0] * 5 + [1.0] + [TARGET_LAG_SECONDS * 2] * 100))
    assert late[-1] > 2 * on_time[-1]
    after_stall = [at for at in late if at > 5 * TICK_SECONDS]
    # the second-long stall releases two ticks' worth at the halved rate, or the floor's share
    # of the stall, at most
    burst = max((START_RATE + 5 * RATE_STEP) * TICK_SECONDS, MIN_RATE * (1 + TICK_SECONDS))
    assert after_stall.count(min(after_stall)) <= burst


async def test_however_late_the_loop_every_tenant_is_released_within_two_intervals() -> None:
    loop = FakeLoop(lags=[1.0] * 10_000)  # every tick a second late
    released: list[float] = []
    pacer = FirstPolls(lambda _: released.append(loop.now), clock=loop.clock, sleep=loop.sleep)
    await pacer.run([f"t{n}" for n in range(1000)], interval=5.0)  # floor: 100 a second
    assert len(released) == 1000
    assert pacer.rate == 1000 / (SPREAD_INTERVALS * 5.0)
    assert released[-1] <= 5.0 * SPREAD_INTERVALS + 1.05  # within a late tick of the bound


async def test_a_full_backlog_slows_the_pace_but_never_stops_it() -> None:
    free = await paced(200, FakeLoop())
    full = await paced(200, FakeLoop(), backlog=[MAX_BACKLOG] * 10_000)
    assert full[-1] > 2 * free[-1]
    ticks = Counter(round(at / TICK_SECONDS) for at in full)
    assert max(ticks.values()) <= START_RATE * TICK_SECONDS + 1  # it never grew
    assert len(ticks) >= 200 / (MIN_RATE * TICK_SECONDS) / 2  # but kept going at the floor


def tenants(count: int) -> list[TenantConfig]:
    lines = ["defaults: {interval: 60s, jitter: 0}", "tenants:"]
    lines += [f"  - {{name: t{n}, domain: t{n}.auth0.com, token: x}}" for n in range(count)]
    return list(parse_config("\n".join(lines) + "\n").tenants)


def schedule_of(scheduler: AsyncIOScheduler) -> PollSchedule:
    poller = Poller.__new__(Poller)  # the schedule only hands its poll method to the jobs
    poller._inflight = set()
    return PollSchedule(scheduler, poller, Telemetry())


def next_runs(scheduler: AsyncIOScheduler) -> dict[str, datetime | None]:
    return {job.id: job.next_run_time for job in scheduler.get_jobs()}


async def test_a_tenant_has_no_job_until_the_pacer_releases_it() -> None:
    scheduler = AsyncIOScheduler(timezone=UTC)
    schedule = schedule_of(scheduler)
    schedule.start(tenants(3))
    try:
        schedule.resume()
        await schedule.finish(grace=0)  # stops the pacer before it released anything
        assert next_runs(scheduler) == {}
        later = datetime(2100, 1, 1, tzinfo=UTC)
        schedule.add(tenants(3)[2], first_run=later)  # as a reload schedules it
        before = datetime.now(UTC)
        for name in ("t0", "t2", "gone"):
            schedule.release(name)
        runs = next_runs(scheduler)
        assert runs.keys() == {"poll:t0", "poll:t2"}
        assert runs["poll:t0"] is not None and runs["poll:t0"] >= before
        assert runs["poll:t2"] == later  # not moved
        schedule.remove("t1")  # never released: no job to remove
        schedule.remove("t0")
        assert next_runs(scheduler).keys() == {"poll:t2"}
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)


async def test_a_new_lead_holds_the_jobs_left_scheduled_and_paces_them_again() -> None:
    scheduler = AsyncIOScheduler(timezone=UTC)
    schedule = schedule_of(scheduler)
    fleet = tenants(3)
    schedule.start(fleet)
    try:
        for tenant in fleet:  # an earlier lead's jobs, all due
            schedule.add(tenant, first_run=datetime(2000, 1, 1, tzinfo=UTC))
        schedule.resume()
        await asyncio.sleep(0)  # the pacer holds them all, then releases the first at once
        runs = next_runs(scheduler)
        assert runs["poll:t1"] is None and runs["poll:t2"] is None
        assert runs["poll:t0"] is not None and runs["poll:t0"].year > 2000
    finally:
        await schedule.finish(grace=0)


def test_the_first_publication_checks_of_a_fleet_spread_evenly_over_the_recheck() -> None:
    from monitor.poll import first_check_delay

    delays = [first_check_delay(f"tenant-{n}", 300.0) for n in range(1, 10_001)]
    assert all(0 <= delay < 300 for delay in delays)
    tenths = Counter(int(delay // 30) for delay in delays)
    assert sorted(tenths) == list(range(10))
    assert all(900 <= count <= 1100 for count in tenths.values())  # ~1,000 each
    assert first_check_delay("tenant-1", 0.0) == 0  # every_poll: at the first poll
    assert first_check_delay("tenant-1", 300.0) == first_check_delay("tenant-1", 300.0)
