"""Polling: one tenant's pipeline (``Poller``) and the timer that runs it (``PollSchedule``).

``Poller.poll(name)`` polls one tenant now, whoever asks (the schedule's timer, a test, a
future trigger): fetch a snapshot (``fetch_snapshot``), confirm it against the tenant's state
(``monitor.confirm``: the last confirmed snapshot, and an alarming answer awaiting
confirmation), commit the new state + events + one delivery per matching destination in one
store transaction, and only then update the in-memory view the metrics collector renders,
log the events and wake the dispatcher. If the commit fails, the in-memory state is left
alone, so the next poll detects the same change again: nothing is lost, and the deterministic
event ids keep it from being counted (or notified) twice. A process that does not lead polls
nothing, and a poll that finds its process no longer leading commits nothing.

Fetching double-checks what looks wrong (a suspicious answer fetched again, a vanished kid
confirmed with ``GET /keys/signing/{kid}``); that is the source's job: see
``Auth0Client.fetch`` and the ``SnapshotSource`` protocol it implements.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.clock import utc_now
from monitor.config import TenantConfig
from monitor.confirm import confirm
from monitor.detect import anomalies
from monitor.errors import FencedOut, SourceError, StoreError
from monitor.metrics import Telemetry
from monitor.model import Event, Severity, Snapshot, TenantState
from monitor.notify.base import Notifier
from monitor.sources.auth0 import Auth0Client, Credentials
from monitor.sources.base import SnapshotSource
from monitor.store.base import Fence, Store

log = logging.getLogger(__name__)

MAX_CONCURRENT_POLLS = 10
"""Polls in flight at once. A burst (the start, a reload, many tenants falling due together)
waits here, cheaply, instead of in httpcore's connection pool, where every request start and
finish costs O(waiting requests x connections)."""
_JOB_PREFIX = "poll:"
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


# --- fetching --------------------------------------------------------------------------------


def client_for_tenant(http: httpx.AsyncClient, tenant: TenantConfig) -> Auth0Client:
    return Auth0Client(
        http,
        tenant=tenant.name,
        api_base=tenant.api_base,
        audience=tenant.management_audience,
        credentials=Credentials(
            client_id=tenant.client_id,
            client_secret=tenant.client_secret.get_secret_value() if tenant.client_secret else None,
            token=tenant.token.get_secret_value() if tenant.token else None,
        ),
        timeout=tenant.timeout,
    )


async def fetch_snapshot(
    client: SnapshotSource,
    *,
    tenant: str,
    previous: Snapshot | None,
    watched_kids: Collection[str] = (),
    now: Callable[[], datetime] = utc_now,
) -> Snapshot:
    """Raises ``SourceError`` when the tenant cannot be read; never returns half a view."""
    if tenant != client.tenant:
        raise ValueError(f"the source reads tenant {client.tenant!r}, not {tenant!r}")
    return await client.fetch(previous=previous, watched_kids=watched_kids, now=now)


# --- the pipeline ----------------------------------------------------------------------------


@dataclass
class TenantRuntime:
    config: TenantConfig
    client: SnapshotSource
    state: TenantState | None = None


class Poller:
    """Polls a tenant when asked and commits what it finds; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        http: httpx.AsyncClient,
        telemetry: Telemetry,
        wake: Callable[[set[str]], None],
        leading: Callable[[], bool],
        fence: Callable[[], Fence | None] = lambda: None,
        fenced_out: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = utc_now,
        max_concurrent: int = MAX_CONCURRENT_POLLS,
    ) -> None:
        """``fence``: what the commit of a poll started now carries (the leader lease's token);
        ``fenced_out``: called when the store refused a commit for a newer token."""
        self.tenants: dict[str, TenantRuntime] = {}
        self._store = store
        self._http = http
        self._telemetry = telemetry
        self._wake = wake
        self._leading = leading
        self._fence = fence
        self._fenced_out = fenced_out
        self._now = now
        self._destinations: tuple[Notifier, ...] = ()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._inflight: set[asyncio.Task[Any]] = set()
        self._ready = asyncio.Event()

    # --- tenants and destinations -----------------------------------------------------------

    def add_tenant(self, config: TenantConfig, state: TenantState | None) -> None:
        """Poll ``config`` from now on (or with its new settings), from ``state`` on."""
        self.tenants[config.name] = TenantRuntime(
            config=config, client=client_for_tenant(self._http, config), state=state
        )
        self._telemetry.add_tenant(config.name)
        if state is not None:
            self._telemetry.set_snapshot(state.seen)
            self._telemetry.set_unconfirmed(config.name, state.pending is not None)

    def remove_tenant(self, name: str) -> None:
        del self.tenants[name]
        self._telemetry.remove_tenant(name)

    def route_to(self, destinations: Iterable[Notifier]) -> None:
        """The destinations each committed event is queued for, when they want it."""
        self._destinations = tuple(destinations)

    def show_stored(self, stored: Mapping[str, TenantState]) -> None:
        """Take the states another replica committed (a standby, or a takeover)."""
        for name, runtime in self.tenants.items():
            state = stored.get(name)
            if state is not None and state != runtime.state:
                self._show(runtime, state)

    # --- polling ----------------------------------------------------------------------------

    async def poll(self, name: str) -> list[Event]:
        """Poll one tenant now; returns the events committed by this poll. A process that does
        not lead polls nothing."""
        runtime = self.tenants.get(name)
        if runtime is None or not self._leading():
            return []
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async with self._slots:
                return await self._poll_once(runtime)
        finally:
            if task is not None:
                self._inflight.discard(task)
            if not self._ready.is_set() and self._telemetry.polled_all():
                self._ready.set()

    async def wait_ready(self) -> None:
        """Until every tenant was polled once."""
        await self._ready.wait()

    async def finish(self, *, grace: float) -> None:
        """Let the polls in flight finish, ``grace`` seconds at most; cancel the rest."""
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()

    async def _poll_once(self, runtime: TenantRuntime) -> list[Event]:
        name = runtime.config.name
        started = time.perf_counter()
        try:
            return await self._poll(runtime, started=started)
        except FencedOut as exc:  # not an outage: another replica leads, this one steps down
            log.warning("poll result refused, stepping down: %s", exc, extra={"tenant": name})
            self._fenced_out()
            return []
        except SourceError as exc:
            self._telemetry.record_poll_failure(
                name, reason=exc.reason, duration=time.perf_counter() - started
            )
            log.warning("poll failed: %s", exc, extra={"tenant": name, "reason": exc.reason})
            return []
        except StoreError as exc:
            self._telemetry.record_poll_failure(
                name, reason="store", duration=time.perf_counter() - started
            )
            log.error("could not save poll result: %s", exc, extra={"tenant": name})
            return []

    async def _poll(self, runtime: TenantRuntime, *, started: float) -> list[Event]:
        name = runtime.config.name
        previous = runtime.state
        fence = self._fence()  # the commit must carry the token this poll started under
        observed = await fetch_snapshot(
            runtime.client,
            tenant=name,
            # a kid confirmed before and missing now is asked for by GET before it is gone
            previous=previous.snapshot if previous else None,
            watched_kids=runtime.config.kids,
            now=self._now,
        )
        state, events = confirm(
            previous, observed, polls=runtime.config.confirm.polls, kids=runtime.config.kids
        )
        if not self._leading():  # stepped down while fetching: the new leader polls instead
            log.info("poll result dropped: not the leader any more", extra={"tenant": name})
            return []
        committed: list[Event] = []
        deliveries = self._deliveries_of(events)
        if state != previous:
            # An unchanged state is not written: in memory and on disk agree on what "old" is.
            committed = await asyncio.to_thread(
                self._store.save_poll, state, events, deliveries, fence=fence
            )
            if deliveries:
                self._wake({destination for _, destination in deliveries})
        if self.tenants.get(name) is runtime:  # not removed by a reload meanwhile
            self._show(runtime, state)
        self._telemetry.record_events(committed)
        self._telemetry.record_poll_success(name, duration=time.perf_counter() - started)
        _log_state(runtime, previous, state)
        _announce(committed)
        return committed

    def _show(self, runtime: TenantRuntime, state: TenantState) -> None:
        """Keep the metrics on the tenant's last answer, believed or not (no rebuild when the
        keys are the same) and on whether one awaits confirmation."""
        shown = runtime.state.seen if runtime.state is not None else None
        runtime.state = state
        if not state.seen.same_keys(shown):
            self._telemetry.set_snapshot(state.seen)
        self._telemetry.set_unconfirmed(runtime.config.name, state.pending is not None)

    def _deliveries_of(self, events: Sequence[Event]) -> list[tuple[str, str]]:
        """(event id, destination) for every destination that wants each event. Events the
        store already knows get no second delivery: the store ignores known pairs."""
        return [
            (event.id, destination.name)
            for event in events
            for destination in self._destinations
            if destination.matches(event)
        ]


def _log_state(runtime: TenantRuntime, previous: TenantState | None, state: TenantState) -> None:
    name = runtime.config.name
    if previous is None:
        log.info(
            "baseline: %d keys, current %s",
            len(state.seen.keys),
            ",".join(state.seen.current_kids) or "none",
            extra={"tenant": name},
        )
    elif state.pending is not None:
        log.warning(
            "alarming answer not believed yet (seen %d of %d polls): %s",
            state.pending_polls,
            runtime.config.confirm.polls,
            "; ".join(sorted(anomalies(state.pending))) or "keys changed",
            extra={"tenant": name},
        )


def _announce(events: Sequence[Event]) -> None:
    for event in events:
        level = logging.WARNING if event.severity >= Severity.WARNING else logging.INFO
        fields: dict[str, object] = {"tenant": event.tenant, "event": event.type.value}
        for name in ("kid", "old_kid", "new_kid"):
            value = getattr(event, name)
            if value:
                fields[name] = value
        fields["event_id"] = event.id
        log.log(level, "%s", event.summary, extra=fields)


# --- the schedule ----------------------------------------------------------------------------


class PollSchedule:
    """Polls every tenant on its interval (with jitter) through ``Poller.poll``, on an
    APScheduler it takes started or not; paused while the process stands by."""

    def __init__(self, scheduler: AsyncIOScheduler, poller: Poller, telemetry: Telemetry) -> None:
        self._scheduler = scheduler
        self._poller = poller
        self._telemetry = telemetry
        self._tenants: dict[str, TenantConfig] = {}
        scheduler.add_listener(
            self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )

    def start(self, tenants: Iterable[TenantConfig]) -> None:
        """Schedule every tenant, paused: ``resume`` starts polling (at once)."""
        first_run = datetime.now(UTC)
        for tenant in tenants:
            self.add(tenant, first_run=first_run)
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
        self._scheduler.remove_job(f"{_JOB_PREFIX}{name}")

    def pause(self) -> None:
        self._scheduler.pause()

    def resume(self) -> None:
        """Poll every tenant now, then on its interval."""
        now = datetime.now(UTC)
        for tenant in list(self._tenants.values()):
            self.add(tenant, first_run=now)
        self._scheduler.resume()

    async def finish(self, *, grace: float) -> None:
        """Stop for good: no new poll starts, the running ones finish (``grace`` at most)."""
        if self._scheduler.running:
            self._scheduler.pause()
        await self._poller.finish(grace=grace)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

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
