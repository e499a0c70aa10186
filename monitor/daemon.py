"""Wiring: the shared HTTP client, the store, the poller and its schedule, the notification
dispatcher, the leader role, the web server; signals, reload and one ordered shutdown path.

The parts do the work: ``monitor.poll.Poller`` polls a tenant (fetch, confirm, one commit,
telemetry, wake the dispatcher) and ``PollSchedule`` runs it on each tenant's interval;
``monitor.notify.dispatcher.Dispatcher`` sends the outbox; ``monitor.leader.RoleFollower``
leads or stands by, whichever the ``LeaderLease`` says (a shared PostgreSQL store; with SQLite
the one process always leads). The daemon builds them, starts and stops them in order, and
applies a reload.

The store it is given is migrated (``build_daemon`` opens it with ``open_store``).

Start order: web server, poll schedule (paused), the lease's first attempt; then, when
leading, dispatcher (pending deliveries resume first) and the schedule resumes.
Shutdown order: schedule (running polls finish), dispatcher (a request in flight finishes and
its outcome is committed), the lease (released), web server, HTTP client, store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CollectorRegistry

from monitor import __version__
from monitor.clock import utc_now
from monitor.config import DestinationConfig, Settings, TenantConfig, load_config
from monitor.errors import ConfigError
from monitor.httpclient import HttpClients, Route
from monitor.leader import SHARED_REFRESH_SECONDS, LeaderLease, RoleFollower, new_holder_id
from monitor.logs import RedactSecrets
from monitor.metrics import Telemetry, build_registry, prepared_exposition
from monitor.model import Event
from monitor.notify import build_notifier
from monitor.notify.base import Notifier
from monitor.notify.dispatcher import Dispatcher
from monitor.poll import Poller
from monitor.redact import url_secrets
from monitor.retention import Pruner
from monitor.schedule import PollSchedule
from monitor.store import open_store
from monitor.store.base import Store
from monitor.web import EmbeddedServer, bind, build_app, build_server

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_SECONDS = 10.0
RESTART_ONLY = ("listen", "state", "lease", "web", "metrics")
"""Settings a reload does not apply (it warns)."""


SCHEDULER_TICK = 0.05
"""Seconds: the scheduler's timer fires at most this often; the polls that fell due meanwhile
start together (a poll starts up to 50 ms after its time)."""


class TickingScheduler(AsyncIOScheduler):  # type: ignore[misc]  # APScheduler has no types
    """APScheduler's asyncio scheduler, its timer coarsened to ``SCHEDULER_TICK`` and run
    in the event loop directly. The stock timer calls ``wakeup``, which goes through
    ``call_soon_threadsafe`` (a write to the loop's self-pipe, a read, one more turn of the
    loop) and fires once per job: at 10,000 tenants every minute, that was about as much CPU
    as a poll's own work outside its request."""

    def _start_timer(self, wait_seconds: float | None) -> None:
        self._stop_timer()
        if wait_seconds is not None:
            delay = max(wait_seconds, SCHEDULER_TICK)
            self._timeout = self._eventloop.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._stop_timer()
        self._start_timer(self._process_jobs())


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
    for item in (settings, *settings.tenants, *settings.destinations):
        if item.proxy is not None:
            found.extend(url_secrets(item.proxy.get_secret_value()))
    return found


@dataclass
class Daemon:
    """Builds the parts, starts and stops them in order, applies a reload; see the module
    docstring."""

    settings: Settings
    store: Store  # migrated
    clients: HttpClients
    telemetry: Telemetry
    registry: CollectorRegistry
    config_path: str | None = None
    redactor: RedactSecrets | None = None
    now: Callable[[], datetime] = utc_now
    port: int | None = None
    notifier_factory: Callable[[DestinationConfig], Notifier] = build_notifier
    notifiers: dict[str, Notifier] = field(default_factory=dict)
    lease: LeaderLease | None = None
    shared_refresh_interval: float = SHARED_REFRESH_SECONDS
    dispatcher: Dispatcher = field(init=False)
    poller: Poller = field(init=False)
    _roles: RoleFollower | None = None
    _scheduler: AsyncIOScheduler | None = None
    _schedule: PollSchedule | None = None
    _server: EmbeddedServer | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _background: set[asyncio.Task[Any]] = field(default_factory=set)
    _lease_tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(
            store=self.store,
            http=self.http,
            telemetry=self.telemetry,
            client_of=lambda notifier: self.client_of(notifier.config),
        )
        self.poller = Poller(
            store=self.store,
            client_of=self.client_of,
            telemetry=self.telemetry,
            wake=self.dispatcher.wake,
            leading=lambda: self.leading,
            lease=lambda: self.lease,
            now=self.now,
        )

    @property
    def http(self) -> httpx.AsyncClient:  # direct, public CAs only
        return self.clients.default

    def client_of(self, item: TenantConfig | DestinationConfig) -> httpx.AsyncClient:
        """The client of a tenant's or destination's route (proxy, CA file) in the settings."""
        return self.clients.get(Route(*self.settings.route_of(item)))

    @property
    def leading(self) -> bool:
        """This process polls and sends now (see ``RoleFollower.leading``)."""
        return self._roles is not None and self._roles.leading

    async def poll_tenant(self, name: str) -> list[Event]:
        """Poll one tenant now; returns the events committed by this poll (see ``Poller``)."""
        return await self.poller.poll(name)

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open everything and start polling; returns once the web server listens."""
        sock = bind(self.settings.listen_host, self.settings.listen_port)
        self.port = int(sock.getsockname()[1])
        try:
            stored = await asyncio.to_thread(self.store.load_states)
        except BaseException:
            sock.close()
            raise
        for tenant in self.settings.tenants:
            self.poller.add_tenant(tenant, stored.get(tenant.name))
        self._use_notifiers({d.name: self.notifier_factory(d) for d in self.settings.destinations})
        self._scheduler = TickingScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1}
        )
        self._schedule = PollSchedule(self._scheduler, self.poller, self.telemetry)
        self._roles = roles = RoleFollower(
            lease=self.lease,
            store=self.store,
            telemetry=self.telemetry,
            polling=self._schedule,
            dispatcher=self.dispatcher,
            notifiers=lambda: list(self.notifiers.values()),
            show_shared=self.poller.show_stored,
            refresh_interval=self.shared_refresh_interval,
        )

        self._server = build_server(
            build_app(
                exposition=prepared_exposition(self.telemetry, version=__version__),
                ping_store=self.store.ping,
                polled_all=roles.polled_enough,
                standing_by=roles.standing_by,
                progress=self.telemetry.polled_once,
            ),
            self.settings.web,
        )
        self._spawn(self._server.serve_in_thread([sock]), name="web-server")
        web, host = self.settings.web, self.settings.listen_host
        auth = " (basic auth)" if web.basic_auth_users else ""
        log.info("serving %s://%s:%s/metrics%s", web.scheme, host, self.port, auth)

        self._schedule.start(self.settings.tenants)  # paused: resumed when leading
        if self.lease is not None:
            await self.lease.attempt()
            self._lease_tasks = [
                self._spawn(self.lease.run(), name="leader-lease"),
                self._spawn(roles.follow_lease(), name="leader-role"),
                self._spawn(roles.follow_shared_state(), name="shared-state"),
            ]
        await roles.start()
        self._lease_tasks.append(self._spawn(pruner_of(self).run(), name="retention"))

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
        """Re-read the config file and renewed TLS files; on a problem keep the old settings."""
        if self._server is not None:
            await self._server.reload_certificates()
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
        assert self._schedule is not None
        previous, self.settings = self.settings, settings  # the new routes are read from here
        if any(getattr(settings, key) != getattr(previous, key) for key in RESTART_ONLY):
            log.warning("listen, web, state, lease and metrics changes take effect after a restart")
        apply_tenants(self.poller, self._schedule, previous, settings)
        self._apply_destinations(settings.destinations)
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
        self._use_notifiers(notifiers)
        self.dispatcher.configure(list(notifiers.values()))

    def _use_notifiers(self, notifiers: dict[str, Notifier]) -> None:
        self.notifiers = notifiers
        self.poller.route_to(notifiers.values())

    async def wait_ready(self) -> None:
        """Until this process, as the leader, has polled every tenant once."""
        await self.poller.wait_ready()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def shutdown(self, *, release_lease: bool = True) -> None:
        """The one ordered shutdown path: stop scheduling, let running polls finish (bounded),
        stop the dispatcher (a request in flight finishes, bounded by its timeout, and its
        outcome is committed), release the leader lease (a standby takes over at once), stop
        the web server, then close the HTTP client and the store. Every wait is also bounded
        by the leadership left. ``release_lease=False`` leaves the lease to lapse, as a crash
        would."""
        if self._roles is not None:
            await self._roles.close(grace=SHUTDOWN_GRACE_SECONDS)
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
        await self.clients.aclose()
        await asyncio.to_thread(self.store.close)
        if self._server is not None:  # it had started: a failed start ends with its error
            log.info("stopped")

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


def apply_tenants(
    poller: Poller, schedule: PollSchedule, previous: Settings, settings: Settings
) -> None:
    """Poll the tenants of reloaded ``settings``: removed ones no more, added or changed ones
    (their route included) from their next run; unchanged ones as they were."""
    tenants = poller.tenants
    wanted = {tenant.name: tenant for tenant in settings.tenants}
    for name in [name for name in tenants if name not in wanted]:
        schedule.remove(name)
        poller.remove_tenant(name)
        log.info("tenant removed from the configuration", extra={"tenant": name})
    now = datetime.now(UTC)
    for name, tenant in wanted.items():
        runtime = tenants.get(name)
        same_route = settings.route_of(tenant) == previous.route_of(tenant)
        if runtime is not None and runtime.config == tenant and same_route:
            continue
        poller.add_tenant(tenant, runtime.state if runtime else None)
        schedule.add(tenant, first_run=now)
        log.info("tenant %s", "updated" if runtime else "added", extra={"tenant": name})


def pruner_of(daemon: Daemon) -> Pruner:
    """The leader's retention task, on the daemon's current settings and lease; a background
    loop like the lease's (``Daemon._lease_tasks``), cancelled with them at shutdown."""
    return Pruner(
        store=daemon.store,
        telemetry=daemon.telemetry,
        policy=lambda: daemon.settings.retention,
        leading=lambda: daemon.leading,
        lease=lambda: daemon.lease,
    )


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
    now: Callable[[], datetime] = utc_now,
) -> Daemon:
    """Build the daemon from settings: the one shared HTTP client, the store (with the leader
    lease when it is PostgreSQL), the metrics. ``now``: the wall clock polls are stamped with
    (tests share one with the simulator)."""
    timeout = max((tenant.timeout for tenant in settings.tenants), default=10.0)
    telemetry = telemetry or Telemetry(zero_counters=settings.metrics.zero_counters)
    store = open_store(settings.state)  # migrated here, once
    lease = None
    if settings.state_backend == "postgresql":  # replicas may share it: one of them leads
        lease = LeaderLease(store, holder=new_holder_id(), ttl=settings.lease.ttl)
    return Daemon(
        settings=settings,
        store=store,
        lease=lease,
        clients=HttpClients(timeout=timeout),
        telemetry=telemetry,
        registry=build_registry(telemetry, version=__version__),
        config_path=str(config_path) if config_path is not None else None,
        redactor=redactor,
        now=now,
    )
