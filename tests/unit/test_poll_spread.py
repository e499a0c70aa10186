"""The first polls of a big fleet are spread out (``FIRST_POLLS_PER_SECOND``), not started at
once, and each falls within the tenant's interval."""

from __future__ import annotations

import itertools
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from monitor.config import TenantConfig, parse_config
from monitor.metrics import Telemetry
from monitor.poll import FIRST_POLLS_PER_SECOND, Poller, PollSchedule


def tenants(count: int, interval: str) -> list[TenantConfig]:
    lines = [f"defaults: {{interval: {interval}, jitter: 0}}", "tenants:"]
    lines += [f"  - {{name: t{n}, domain: t{n}.auth0.com, token: x}}" for n in range(count)]
    return list(parse_config("\n".join(lines) + "\n").tenants)


def first_runs(fleet: list[TenantConfig]) -> list[timedelta]:
    scheduler = AsyncIOScheduler()
    poller = Poller.__new__(Poller)  # the schedule only hands its poll method to the jobs
    schedule = PollSchedule(scheduler, poller, Telemetry())
    schedule.start(fleet)
    try:
        schedule.resume()
        runs = sorted(job.next_run_time for job in scheduler.get_jobs())
    finally:
        scheduler.shutdown(wait=False)
    return [run - runs[0] for run in runs]


async def test_a_big_fleet_starts_at_the_first_polls_rate() -> None:
    offsets = first_runs(tenants(2000, "60s"))
    span = (2000 - 1) / FIRST_POLLS_PER_SECOND
    assert offsets[-1].total_seconds() == span
    # evenly spaced: never more than one poll per 1/rate seconds
    gaps = {round((b - a).total_seconds(), 6) for a, b in itertools.pairwise(offsets)}
    assert gaps == {round(1 / FIRST_POLLS_PER_SECOND, 6)}


async def test_first_polls_stay_within_the_interval() -> None:
    offsets = first_runs(tenants(1000, "1s"))  # 2.5 s at the first polls' rate
    assert offsets[0] == timedelta(0)
    assert max(offsets) < timedelta(seconds=1)
    assert len(set(offsets)) == 1000
