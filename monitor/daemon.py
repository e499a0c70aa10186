"""Wiring: the shared HTTP client, the store, the scheduler, the notification dispatcher, the
web server; signals, reload and one ordered shutdown path.

One poll of one tenant (``Daemon.poll_tenant``): fetch a snapshot, confirm it against the
tenant's state (``monitor.confirm``: the last confirmed snapshot, and an alarming answer
awaiting confirmation), commit the new state + events + one delivery per matching destination
in one store transaction, and only then update the in-memory view the metrics collector
renders, log the events and wake the dispatcher. If the commit fails, the in-memory state is
left alone, so the next poll detects the same change again: nothing is lost, and the
deterministic event ids keep it from being counted (or notified) twice.

Leader and standby: with a shared PostgreSQL store, a ``LeaderLease`` (``monitor.leader``)
decides which replica leads. The leader runs the scheduler and the dispatcher; a standby keeps
the scheduler paused and the dispatcher stopped, reloads the shared snapshots (and outbox
gauges) into its metrics every ``shared_refresh_interval`` seconds, and takes over when the
lease lapses. Stepping down pauses the scheduler and stops the dispatcher at once (a request in
flight may finish while the lease still covers it), and a poll that finds its process no longer
leading commits nothing. Taking over reloads the shared snapshots first, so the new leader
diffs against what the last one committed. With SQLite there is no lease: the one process
always leads.

Start order: store, web server, scheduler (paused), the lease's first attempt; then, when
leading, dispatcher (pending deliveries resume first) and the scheduler resumes.
Shutdown order: scheduler (running polls finish), dispatcher (a request in flight finishes and
its outcome is committed), the lease (released), web server, HTTP client, store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
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
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.clock import utc_now
from monitor.config import DestinationConfig, Settings, TenantConfig, load_config
from monitor.confirm import confirm
from monitor.detect import anomalies
from monitor.errors import ConfigError, SourceError, StoreError
from monitor.httpclient import build_http_client
from monitor.leader import LeaderLease, new_holder_id
from monitor.logs import RedactSecrets
from monitor.metrics import Telemetry, build_registry
from monitor.model import Event, Severity, TenantState
from monitor.notify import build_notifier
from monitor.notify.base import Notifier
from monitor.notify.dispatcher import RESUME_WAIT, Dispatcher
from monitor.poll import client_for_tenant, fetch_snapshot
from monitor.sources.auth0 import Auth0Client
from monitor.store import open_store
from monitor.store.base import Store
from monitor.web import EmbeddedServer, bind, build_app, build_server

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0
SHARED_REFRESH_SECONDS = 5.0
"""How often a standby reloads the shared snapshots and outbox gauges into its metrics."""
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
EventListener = Callable[[Sequence[Event]], None]


class _SkippedRunFilter(logging.Filter):
    """APScheduler warns of every run skipped because the last one is still running; the
    daemon counts those and logs them at DEBUG itself (``Daemon._on_job_event``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances" not in str(record.msg)


logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRunFilter())


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in the settings, for the log redaction filter: tenant credentials,
    destination URLs (and the tokens inside them), signing secrets and routing keys."""
    found: list[str] = []
    for tenant in settings.tenants:
        for secret in (tenant.client_secret, tenant.token):
            if secret is not None:
                found.append(secret.get_secret_value())
    for destination in settings.destinations:
        found.extend(destination.secret_values())
    return found


@dataclass
class TenantRuntime:
    config: TenantConfig
    client: Auth0Client
    state: TenantState | None = None


@dataclass
class Daemon:
    settings: Settings
    store: Store
    http: httpx.AsyncClient
    telemetry: Telemetry
    registry: CollectorRegistry
    config_path: str | None = None
    redactor: RedactSecrets | None = None
    now: Callable[[], datetime] = utc_now
    listeners: list[EventListener] = field(default_factory=list)
    tenants: dict[str, TenantRuntime] = field(default_factory=dict)
    port: int | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _inflight: set[asyncio.Task[Any]] = field(default_factory=set)
    _scheduler: AsyncIOScheduler | None = None
    _server: EmbeddedServer | None = None
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _poll_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_POLLS)
    )
    notifier_factory: Callable[[DestinationConfig], Notifier] = build_notifier
    notifiers: dict[str, Notifier] = field(default_factory=dict)
    lease: LeaderLease | None = None
    shared_refresh_interval: float = SHARED_REFRESH_SECONDS
    dispatcher: Dispatcher = field(init=False)
    _leading: bool = False  # the leader's work (scheduler, dispatcher) is running
    _stood_by: bool = False  # has served the shared state as a standby
    _closing: bool = False
    _role_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _role_epoch: int = 0  # changes with every change of role
    _lease_tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _shared_failing: bool = False

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(store=self.store, http=self.http, telemetry=self.telemetry)

    # --- polling ----------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """This process polls and sends now: it leads (without a lease, always) and, with a
        lease, still has time left on it."""
        return self._leading and (self.lease is None or self.lease.leading)

    async def poll_tenant(self, name: str) -> list[Event]:
        """Poll one tenant once; returns the events committed by this poll. A standby polls
        nothing."""
        runtime = self.tenants.get(name)
        if runtime is None or not self.leading:
            return []
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            async with self._poll_slots:
                return await self._poll_once(runtime)
        finally:
            if task is not None:
                self._inflight.discard(task)
            if not self._ready.is_set() and self.telemetry.polled_all():
                self._ready.set()

    async def _poll_once(self, runtime: TenantRuntime) -> list[Event]:
        name = runtime.config.name
        started = time.perf_counter()
        try:
            return await self._poll(runtime, started=started)
        except SourceError as exc:
            self.telemetry.record_poll_failure(
                name, reason=exc.reason, duration=time.perf_counter() - started
            )
            log.warning("poll failed: %s", exc, extra={"tenant": name, "reason": exc.reason})
            return []
        except StoreError as exc:
            self.telemetry.record_poll_failure(
                name, reason="store", duration=time.perf_counter() - started
            )
            log.error("could not save poll result: %s", exc, extra={"tenant": name})
            return []

    async def _poll(self, runtime: TenantRuntime, *, started: float) -> list[Event]:
        name = runtime.config.name
        previous = runtime.state
        observed = await fetch_snapshot(
            runtime.client,
            tenant=name,
            # a kid confirmed before and missing now is asked for by GET before it is gone
            previous=previous.snapshot if previous else None,
            watched_kids=runtime.config.kids,
            now=self.now,
        )
        state, events = confirm(
            previous, observed, polls=runtime.config.confirm.polls, kids=runtime.config.kids
        )
        if not self.leading:  # stepped down while fetching: the new leader polls instead
            log.info("poll result dropped: not the leader any more", extra={"tenant": name})
            return []
        committed: list[Event] = []
        deliveries = self._deliveries_of(events)
        if state != previous:
            # An unchanged state is not written: in memory and on disk agree on what "old" is.
            committed = await asyncio.to_thread(self.store.save_poll, state, events, deliveries)
            if deliveries:
                self.dispatcher.wake({destination for _, destination in deliveries})
        if self.tenants.get(name) is runtime:  # not removed by a reload meanwhile
            self._show(runtime, state)
        self.telemetry.record_events(committed)
        self.telemetry.record_poll_success(name, duration=time.perf_counter() - started)
        if previous is None:
            log.info(
                "baseline: %d keys, current %s",
                len(observed.keys),
                ",".join(observed.current_kids) or "none",
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
        self._announce(committed)
        return committed

    def _show(self, runtime: TenantRuntime, state: TenantState) -> None:
        """Keep the metrics on the tenant's last answer, believed or not (no rebuild when the
        keys are the same) and on whether one awaits confirmation."""
        shown = runtime.state.seen if runtime.state is not None else None
        runtime.state = state
        if not state.seen.same_keys(shown):
            self.telemetry.set_snapshot(state.seen)
        self.telemetry.set_unconfirmed(runtime.config.name, state.pending is not None)

    def _deliveries_of(self, events: Sequence[Event]) -> list[tuple[str, str]]:
        """(event id, destination) for every destination that wants each event. Events the
        store already knows get no second delivery: the store ignores known pairs."""
        return [
            (event.id, notifier.name)
            for event in events
            for notifier in self.notifiers.values()
            if notifier.matches(event)
        ]

    def _announce(self, events: Sequence[Event]) -> None:
        for event in events:
            level = logging.WARNING if event.severity >= Severity.WARNING else logging.INFO
            fields: dict[str, object] = {"tenant": event.tenant, "event": event.type.value}
            for name in ("kid", "old_kid", "new_kid"):
                value = getattr(event, name)
                if value:
                    fields[name] = value
            fields["event_id"] = event.id
            log.log(level, "%s", event.summary, extra=fields)
        if events:
            for listener in self.listeners:
                listener(events)

    # --- scheduler --------------------------------------------------------------------------

    def _schedule(self, tenant: TenantConfig, *, first_run: datetime) -> None:
        assert self._scheduler is not None
        self._scheduler.add_job(
            self.poll_tenant,
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

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        kind = _JOB_EVENT_KINDS.get(event.code, "error")
        tenant = str(event.job_id).removeprefix(_JOB_PREFIX)
        self.telemetry.record_job_error(tenant, kind)
        if event.code == EVENT_JOB_ERROR:
            log.error("poll job crashed: %r", event.exception, extra={"tenant": tenant})
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            # The last poll is still running, most often waiting out the tenant's rate limit:
            # expected, so counted (keywatch_scheduler_job_errors_total) and logged at DEBUG.
            log.debug("poll skipped: the last one is still running", extra={"tenant": tenant})
        else:
            log.warning("poll job %s", kind.replace("_", " "), extra={"tenant": tenant})

    def _add_tenant(self, config: TenantConfig, state: TenantState | None) -> None:
        self.tenants[config.name] = TenantRuntime(
            config=config, client=client_for_tenant(self.http, config), state=state
        )
        self.telemetry.add_tenant(config.name)
        if state is not None:
            self.telemetry.set_snapshot(state.seen)
            self.telemetry.set_unconfirmed(config.name, state.pending is not None)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open everything and start polling; returns once the web server listens."""
        sock = bind(self.settings.listen_host, self.settings.listen_port)
        self.port = int(sock.getsockname()[1])
        try:
            await asyncio.to_thread(self.store.migrate)
            stored = await asyncio.to_thread(self.store.load_states)
        except BaseException:
            sock.close()
            raise
        for tenant in self.settings.tenants:
            self._add_tenant(tenant, stored.get(tenant.name))
        self.notifiers = {
            destination.name: self.notifier_factory(destination)
            for destination in self.settings.destinations
        }
        if self.lease is not None:
            self.telemetry.set_leader(False)  # until the lease is taken

        self._server = build_server(
            build_app(
                registry=self.registry,
                ping_store=self.store.ping,
                polled_all=self._polled_enough,
                standing_by=self._standing_by,
            )
        )
        self._spawn(self._server.serve(sockets=[sock]), name="web-server")
        log.info("serving http://%s:%s/metrics", self.settings.listen_host, self.port)

        self._scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1}
        )
        self._scheduler.add_listener(
            self._on_job_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        first_run = datetime.now(UTC)
        for tenant in self.settings.tenants:
            self._schedule(tenant, first_run=first_run)
        self._scheduler.start(paused=True)  # resumed when leading

        if self.lease is not None:
            await self.lease.attempt()
            self._lease_tasks = [
                self._spawn(self.lease.run(), name="leader-lease"),
                self._spawn(self._follow_lease(), name="leader-role"),
                self._spawn(self._follow_shared_state(), name="shared-state"),
            ]
        await self._apply_role()
        if not self._leading:
            log.info("standing by: another replica holds the leader lease")

    # --- leader and standby -----------------------------------------------------------------

    def _standing_by(self) -> bool:
        return self.lease is not None and not self._leading

    def _polled_enough(self) -> bool:
        """Ready as the leader: every tenant was polled once, or this process served the shared
        state as a standby before it took over (a takeover keeps it ready)."""
        return self._stood_by or self.telemetry.polled_all()

    def _bounded(self, seconds: float) -> float:
        """``seconds``, but no longer than the leadership left (the lease's grace)."""
        if self.lease is None:
            return seconds
        return min(seconds, self.lease.grace())

    async def _follow_lease(self) -> None:
        assert self.lease is not None
        while True:
            await self.lease.changed.wait()
            self.lease.changed.clear()
            await self._apply_role()

    async def _apply_role(self) -> None:
        """Lead or stand by, whichever the lease says (without a lease: lead)."""
        async with self._role_lock:
            if self._closing:
                return
            wanted = self.lease is None or self.lease.leading
            if wanted and not self._leading:
                await self._lead()
            elif not wanted and self._leading:
                await self._stand_by()
            if not self._leading:
                self._stood_by = True

    async def _lead(self) -> None:
        """Start sending, then polling. Taking over from another replica reloads the shared
        snapshots first: what the last leader committed is the baseline of the next diff."""
        assert self._scheduler is not None
        self._role_epoch += 1
        if self.lease is not None:
            await self._load_shared_state(outbox=False)
            if not self.lease.leading:
                return
        self._leading = True
        self.telemetry.set_leader(True)
        # Before the scheduler: deliveries left pending (by the last run, or the last leader)
        # go out first.
        notifiers = list(self.notifiers.values())
        await self.dispatcher.start(notifiers, resume_wait=self._bounded(RESUME_WAIT))
        if not self.leading:
            return  # lost meanwhile: the lease has set ``changed``, and _stand_by follows
        now = datetime.now(UTC)
        for tenant in self.settings.tenants:
            self._schedule(tenant, first_run=now)
        self._scheduler.resume()

    async def _stand_by(self) -> None:
        """Stop polling and sending before the lease can lapse. A poll in flight commits
        nothing (``_poll`` checks ``leading``); a request in flight may finish within the
        lease's grace, else it is cancelled and the next leader sends it again."""
        assert self._scheduler is not None
        self._role_epoch += 1
        self._leading = False
        self._scheduler.pause()
        self.telemetry.set_leader(False)
        await self.dispatcher.stop(grace=self._bounded(SHUTDOWN_GRACE_SECONDS))

    async def _follow_shared_state(self) -> None:
        """As a standby, keep the metrics on the shared snapshots and outbox."""
        while True:
            await asyncio.sleep(self.shared_refresh_interval)
            if not self._leading:
                await self._load_shared_state(outbox=True)

    async def _load_shared_state(self, *, outbox: bool) -> None:
        """Reload the stored snapshots (and outbox gauges) into the tenants and the metrics.
        Dropped when the role changed meanwhile (a leader's own polls are newer)."""
        epoch = self._role_epoch
        try:
            stored = await asyncio.to_thread(self.store.load_states)
            stats = await asyncio.to_thread(self.store.outbox_stats) if outbox else None
        except StoreError as exc:
            if not self._shared_failing:
                log.warning("cannot read the shared state: %s", exc)
            self._shared_failing = True
            return
        self._shared_failing = False
        if epoch != self._role_epoch:
            return
        for name, runtime in self.tenants.items():
            state = stored.get(name)
            if state is not None and state != runtime.state:
                self._show(runtime, state)
        if stats is not None:
            self.telemetry.set_outbox(stats)

    def _spawn(self, coro: Any, *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def stop(self) -> None:
        self._stopping.set()

    def request_reload(self) -> None:
        self._spawn(self.reload(), name="reload")

    async def reload(self) -> bool:
        """Re-read the config file; on any problem keep running with the old settings."""
        if self.config_path is None:
            log.warning("reload requested but the daemon was not started from a file")
            return False
        try:
            settings = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the running configuration: %s", problem)
            return False
        except Exception as exc:  # a bug: keep running, never an unretrieved task exception
            log.debug("reload failed", exc_info=True)
            log.error(
                "reload failed, keeping the running configuration: unexpected %s "
                "(log_level: debug shows the traceback)",
                type(exc).__name__,
            )
            return False
        self._apply(settings)
        return True

    def _apply(self, settings: Settings) -> None:
        assert self._scheduler is not None
        restart_only = ("listen", "state", "lease")
        if any(getattr(settings, key) != getattr(self.settings, key) for key in restart_only):
            log.warning("listen, state and lease changes take effect after a restart")
        wanted = {tenant.name: tenant for tenant in settings.tenants}
        for name in list(self.tenants):
            if name not in wanted:
                self._scheduler.remove_job(f"{_JOB_PREFIX}{name}")
                del self.tenants[name]
                self.telemetry.remove_tenant(name)
                log.info("tenant removed from the configuration", extra={"tenant": name})
        now = datetime.now(UTC)
        for name, tenant in wanted.items():
            runtime = self.tenants.get(name)
            if runtime is not None and runtime.config == tenant:
                continue
            self._add_tenant(tenant, runtime.state if runtime else None)
            self._schedule(tenant, first_run=now)
            log.info("tenant %s", "updated" if runtime else "added", extra={"tenant": name})
        self._apply_destinations(settings.destinations)
        self.settings = settings
        if self.redactor is not None:
            self.redactor.update(secrets_of(settings))

    def _apply_destinations(self, destinations: Sequence[DestinationConfig]) -> None:
        """Keep the notifier of an unchanged destination (it may hold state, e.g. the alerts
        an Alertmanager destination re-sends); build new ones for added or changed ones."""
        notifiers: dict[str, Notifier] = {}
        for destination in destinations:
            known = self.notifiers.get(destination.name)
            if known is not None and known.config == destination:
                notifiers[destination.name] = known
                continue
            notifiers[destination.name] = self.notifier_factory(destination)
            change = "updated" if known is not None else "added"
            log.info("destination %s", change, extra={"destination": destination.name})
        self.notifiers = notifiers
        self.dispatcher.configure(list(notifiers.values()))

    async def wait_ready(self) -> None:
        """Until this process, as the leader, has polled every tenant once."""
        await self._ready.wait()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def shutdown(self, *, release_lease: bool = True) -> None:
        """The one ordered shutdown path: stop scheduling, let running polls finish (bounded),
        stop the dispatcher (a request in flight finishes, bounded by its timeout, and its
        outcome is committed), release the leader lease (a standby takes over at once), stop
        the web server, then close the HTTP client and the store. Every wait is also bounded
        by the leadership left. ``release_lease=False`` leaves the lease to lapse, as a crash
        would."""
        self._closing = True
        async with self._role_lock:  # after a change of role in progress
            await self._stop_leading()
        for task in self._lease_tasks:
            task.cancel()
        if self._lease_tasks:
            await asyncio.wait(self._lease_tasks)
        if self.lease is not None and release_lease:
            await self.lease.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._background:
            await asyncio.wait(set(self._background), timeout=SHUTDOWN_GRACE_SECONDS)
        await self.http.aclose()
        await asyncio.to_thread(self.store.close)
        if self._server is not None:  # it had started: a failed start ends with its error
            log.info("stopped")

    async def _stop_leading(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.pause()
        if self._inflight:
            grace = self._bounded(SHUTDOWN_GRACE_SECONDS)
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        timeouts = [notifier.config.timeout for notifier in self.notifiers.values()]
        await self.dispatcher.stop(grace=self._bounded(max(timeouts, default=0.0) + 1.0))
        self._leading = False

    async def run(self, *, install_signals: bool = True) -> None:
        """Start, serve until ``stop()`` (SIGTERM or SIGINT, any number of times), shut down.

        The signal handlers stay until the shutdown is over, so a second Ctrl-C only asks
        again; then the handlers that were there before are put back."""
        loop = asyncio.get_running_loop()
        previous: dict[signal.Signals, Any] = {}
        if install_signals:
            for signum, handler in (
                (signal.SIGTERM, self.stop),
                (signal.SIGINT, self.stop),
                (signal.SIGHUP, self.request_reload),
            ):
                previous[signum] = signal.getsignal(signum)
                loop.add_signal_handler(signum, handler)
        try:
            await self.start()
            await self.wait_stopped()
        finally:
            try:
                await self.shutdown()
            finally:
                for signum, handler in previous.items():
                    loop.remove_signal_handler(signum)
                    signal.signal(signum, handler)


def ignore_stop_signals() -> None:
    """From now on SIGINT and SIGTERM are ignored: for a command that has stopped its daemon
    and only cleans up, so a late Ctrl-C cannot cut the cleanup short."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def build_daemon(
    settings: Settings,
    *,
    config_path: str | Path | None = None,
    redactor: RedactSecrets | None = None,
    telemetry: Telemetry | None = None,
) -> Daemon:
    """Build the daemon from settings: the one shared HTTP client, the store (with the leader
    lease when it is PostgreSQL), the metrics."""
    timeout = max((tenant.timeout for tenant in settings.tenants), default=10.0)
    telemetry = telemetry or Telemetry()
    store = open_store(settings.state)
    lease = None
    if settings.state_backend == "postgresql":  # replicas may share it: one of them leads
        lease = LeaderLease(store, holder=new_holder_id(), ttl=settings.lease.ttl)
    return Daemon(
        settings=settings,
        store=store,
        lease=lease,
        http=build_http_client(timeout=timeout),
        telemetry=telemetry,
        registry=build_registry(telemetry, version=__version__),
        config_path=str(config_path) if config_path is not None else None,
        redactor=redactor,
    )
