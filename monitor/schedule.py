"""The timer of the polls: every tenant's APScheduler job (``PollSchedule``), each first poll
released at the pace of ``monitor.firstpolls``, every poll run through ``Poller.poll``."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.config import TenantConfig
from monitor.firstpolls import FirstPolls
from monitor.metrics import Telemetry
from monitor.poll import Poller

log = logging.getLogger(__name__)

_JOB_PREFIX = "poll:"
_HOLD_SLICE = 500  # jobs held between two turns of the event loop
_JOB_EVENT_KINDS = {
    EVENT_JOB_ERROR: "error",
    EVENT_JOB_MISSED: "missed",
    EVENT_JOB_MAX_INSTANCES: "max_instances",
}


class _SkippedRunFilter(logging.Filter):
    """APScheduler warns of every run skipped because the last one is still running; the
    schedule counts those and logs them at DEBUG itself (``PollSchedule._on_job_event``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in str(record.msg)


logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())


class PollSchedule:
    """Polls every tenant on its interval (with jitter) through ``Poller.poll``, on an
    APScheduler it takes started or not; paused while the process stands by."""

    def __init__(self, scheduler: AsyncIOScheduler, poller: Poller, telemetry: Telemetry) -> None:
        self._scheduler = scheduler
        self._poller = poller
        self._telemetry = telemetry
        self._tenants: dict[str, TenantConfig] = {}
        self._pacing: asyncio.Task[None] | None = None
        scheduler.add_listener(
            self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )

    def start(self, tenants: Iterable[TenantConfig]) -> None:
        """Take the tenants and start the scheduler, paused: ``resume`` starts polling. A
        tenant's job is made when its first poll is released (10,000 jobs made at once held
        the event loop for a second).

        What exists now (the settings, every tenant's runtime) lives as long as the schedule:
        it is frozen out of the cyclic collector's sight until ``finish``, so its full
        collections stop walking it (at 10,000 tenants each walk held the loop for ~0.3 s,
        several times during the start-up)."""
        self._tenants.update((tenant.name, tenant) for tenant in tenants)
        gc.collect()
        gc.freeze()
        self._scheduler.start(paused=True)

    def add(self, tenant: TenantConfig, *, first_run: datetime) -> None:
        """Schedule a tenant, or replace its job with its new settings."""
        self._tenants[tenant.name] = tenant
        self._scheduler.add_job(
            self._poller.poll,
            IntervalTrigger(
                seconds=tenant.interval, jitter=tenant.interval * tenant.jitter or None
            ),
            args=[tenant.name],
            id=f"{_JOB_PREFIX}{tenant.name}",
            name=f"poll {tenant.name}",
            next_run_time=first_run,
            replace_existing=True,
            misfire_grace_time=max(1, int(tenant.interval)),
        )

    def remove(self, name: str) -> None:
        del self._tenants[name]
        if self._scheduler.get_job(f"{_JOB_PREFIX}{name}") is not None:  # released already
            self._scheduler.remove_job(f"{_JOB_PREFIX}{name}")

    def pause(self) -> None:
        self._stop_pacing()
        self._scheduler.pause()

    def resume(self) -> None:
        """Poll every tenant from now on, each first poll when the pacer releases it
        (``monitor.firstpolls``), then on its interval from there (the spread carries over)."""
        self._stop_pacing()
        self._pacing = asyncio.get_running_loop().create_task(
            self._first_polls(), name="first-polls"
        )

    async def _first_polls(self) -> None:
        """Hold the jobs an earlier lead left scheduled (a slice at a time: the loop serves
        requests meanwhile), resume the scheduler, then release every tenant at the pace."""
        names = list(self._tenants)
        for index, name in enumerate(names):
            job = self._scheduler.get_job(f"{_JOB_PREFIX}{name}")
            if job is not None and job.next_run_time is not None:
                job.pause()
            if index % _HOLD_SLICE == _HOLD_SLICE - 1:
                await asyncio.sleep(0)
        self._scheduler.resume()
        interval = min((tenant.interval for tenant in self._tenants.values()), default=60.0)
        pacer = FirstPolls(self.release, backlog=self._poller.polls_in_flight)
        await pacer.run(names, interval=interval)

    def release(self, name: str) -> None:
        """Start polling a tenant now: make its job, or start its held one (a job a reload
        scheduled meanwhile is left alone)."""
        tenant = self._tenants.get(name)
        job = self._scheduler.get_job(f"{_JOB_PREFIX}{name}")
        if tenant is None or (job is not None and job.next_run_time is not None):
            return
        self.add(tenant, first_run=datetime.now(UTC))

    def _stop_pacing(self) -> None:
        if self._pacing is not None:
            self._pacing.cancel()
            self._pacing = None

    async def finish(self, *, grace: float) -> None:
        """Stop for good: no new poll starts, the running ones finish (``grace`` at most)."""
        self._stop_pacing()
        if self._scheduler.running:
            self._scheduler.pause()
        await self._poller.finish(grace=grace)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        gc.unfreeze()

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        kind = _JOB_EVENT_KINDS.get(event.code, "error")
        tenant = str(event.job_id).removeprefix(_JOB_PREFIX)
        self._telemetry.record_job_error(tenant, kind)
        if event.code == EVENT_JOB_ERROR:
            log.error("poll job crashed: %r", event.exception, extra={"tenant": tenant})
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            # The last poll is still running, most often waiting out the tenant's rate limit:
            # expected, so counted (keywatch_scheduler_job_errors_total) and logged at DEBUG.
            log.debug("poll skipped: the last one is still running", extra={"tenant": tenant})
        else:
            log.warning("poll job %s", kind.replace("_", " "), extra={"tenant": tenant})
