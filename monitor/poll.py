"""Polling: one tenant's pipeline (``Poller``); the timer that runs it is
``monitor.schedule.PollSchedule``.

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
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from monitor.clock import utc_now
from monitor.commits import Commits
from monitor.config import TenantConfig
from monitor.confirm import confirm
from monitor.detect import anomalies
from monitor.errors import FencedOut, SourceError, StoreError
from monitor.hygiene import HygienePolicy, check
from monitor.metrics import Telemetry
from monitor.model import Event, Severity, Snapshot, TenantState
from monitor.notify.base import Notifier
from monitor.publishing import PublicationCheck
from monitor.reachabilities import Reachabilities
from monitor.reachability import Reachability
from monitor.sources.auth0 import Auth0Client, Credentials
from monitor.sources.base import SnapshotSource
from monitor.sources.publication import PublicationReader, publication_targets
from monitor.store.base import Fence, Fencing, PollWrite, Store

log = logging.getLogger(__name__)

MAX_CONCURRENT_POLLS = 10
"""Polls fetching at once (a poll's commit waits outside this limit). A burst (the start, a
reload, many tenants falling due together) waits here, cheaply, instead of in the HTTP
client's connection pool."""


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


def publication_for_tenant(
    http: httpx.AsyncClient, tenant: TenantConfig, telemetry: Telemetry
) -> PublicationCheck | None:
    """The tenant's publication checks, or None when it checks nothing it publishes."""
    targets = publication_targets(
        tenant.api_base,
        jwks=tenant.jwks,
        jwks_urls=tenant.jwks_urls,
        cert_endpoints=tenant.cert_endpoints,
        mirrors=tenant.mirrors,
    )
    if not targets:
        return None
    reader = PublicationReader(http, tenant=tenant.name, targets=targets, timeout=tenant.timeout)
    return PublicationCheck(
        reader,
        tenant=tenant.name,
        allow_extra_kids=tenant.jwks_allow_extra_kids,
        polls=tenant.confirm.polls,
        recheck=tenant.publication_recheck,
        telemetry=telemetry,
    )


# --- the pipeline ----------------------------------------------------------------------------


@dataclass(slots=True)
class TenantRuntime:
    config: TenantConfig
    client: SnapshotSource
    state: TenantState | None = None
    publication: PublicationCheck | None = None
    first_check: datetime | None = None
    """When the first publication check of this runtime is due (``checks_publication``);
    None: not yet known (before its first poll), or checked already (``checked``)."""
    checked: bool = False


SPREAD_FIRST_CHECKS_ABOVE = 1_000
"""Fleets of more tenants than this spread their first publication checks over the first
``publication_recheck``; smaller ones check at each tenant's first poll, as a newcomer expects
(at 10,000 tenants the first checks were 40% of the start-up's CPU)."""


def first_check_delay(tenant: str, recheck: float) -> float:
    """Seconds from a tenant's first poll to its first publication check: a fraction of
    ``recheck`` fixed by its name, so a fleet's first checks spread evenly over it."""
    return recheck * (zlib.crc32(tenant.encode()) / 2**32)


def checks_publication(
    runtime: TenantRuntime,
    previous: TenantState | None,
    state: TenantState,
    at: datetime,
    *,
    spread: bool,
) -> bool:
    """Whether the poll started ``at`` checks what the tenant publishes.

    Once checked, every poll asks ``PublicationCheck.observe`` (which fetches what is due).
    When ``spread`` (a fleet above ``SPREAD_FIRST_CHECKS_ABOVE``), the first check is spread
    over the tenant's first ``publication_recheck`` (from its first poll on,
    ``first_check_delay``): the start-up then polls the Management API alone, and the checks
    come at the steady recheck rate, not all at once. Unless something asks for it now: a
    stored episode to follow, or keys changed since the last confirmed poll."""
    if runtime.publication is None:
        return False
    if runtime.checked:
        return True
    if spread:
        due = runtime.first_check
        if due is None:
            delay = first_check_delay(runtime.config.name, runtime.config.publication_recheck)
            due = runtime.first_check = at + timedelta(seconds=delay)
        followed = previous is not None and (
            bool(previous.publication) or not state.snapshot.same_keys(previous.snapshot)
        )
        if not followed and at < due:
            return False
    runtime.checked, runtime.first_check = True, None
    return True


class _Slot:
    """One of the poller's ``max_concurrent`` places, held while a poll fetches and given back
    before its commit (``release``, or at the end): a baseline waiting for its group commit
    (``monitor.commits``) lets another poll fetch meanwhile, so the batches grow."""

    __slots__ = ("_held", "_limit")

    def __init__(self, limit: asyncio.Semaphore) -> None:
        self._limit = limit
        self._held = False

    async def __aenter__(self) -> _Slot:
        await self._limit.acquire()
        self._held = True
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limit.release()


class Poller:
    """Polls a tenant when asked and commits what it finds; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        client_of: Callable[[TenantConfig], httpx.AsyncClient],
        telemetry: Telemetry,
        wake: Callable[[set[str]], None],
        leading: Callable[[], bool],
        lease: Callable[[], Fencing | None] = lambda: None,
        now: Callable[[], datetime] = utc_now,
        max_concurrent: int = MAX_CONCURRENT_POLLS,
    ) -> None:
        """``lease``: the leader lease whose fence every commit carries, if any."""
        self.tenants: dict[str, TenantRuntime] = {}
        self._store = store
        self._client_of = client_of
        self._telemetry = telemetry
        self._wake = wake
        self._leading = leading
        self._lease = lease
        self._now = now
        self._destinations: tuple[Notifier, ...] = ()
        self._reachability = Reachabilities(store)
        self._commits = Commits(store)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._inflight: set[asyncio.Task[Any]] = set()
        self._ready = asyncio.Event()

    # --- tenants and destinations -----------------------------------------------------------

    def add_tenant(self, config: TenantConfig, state: TenantState | None) -> None:
        """Poll ``config`` from now on (or with its new settings), from ``state`` on."""
        self._telemetry.add_tenant(config.name)
        self._telemetry.publication.remove_tenant(config.name)  # its targets may have changed
        http = self._client_of(config)  # the tenant's route: its proxy and CA file
        publication = publication_for_tenant(http, config, self._telemetry)
        self.tenants[config.name] = TenantRuntime(
            config=config,
            client=client_for_tenant(http, config),
            state=state,
            publication=publication,
        )
        if state is not None and publication is not None:
            publication.restore(state.publication)
        if state is not None:
            self._telemetry.set_snapshot(state.seen)
            self._telemetry.set_unconfirmed(config.name, state.pending is not None)

    def remove_tenant(self, name: str) -> None:
        del self.tenants[name]
        self._reachability.forget(name)
        self._telemetry.remove_tenant(name)

    def route_to(self, destinations: Iterable[Notifier]) -> None:
        """The destinations each committed event is queued for, when they want it."""
        self._destinations = tuple(destinations)

    def show_stored(self, stored: Mapping[str, TenantState]) -> None:
        """Take the states another replica committed (a standby, or a takeover)."""
        self._reachability.forget()  # another replica may have counted failures since
        for name, runtime in self.tenants.items():
            state = stored.get(name)
            if state is not None and state != runtime.state:
                self._show(runtime, state)
                if runtime.publication is not None:
                    runtime.publication.restore(state.publication)

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
            async with _Slot(self._slots) as slot:
                return await self._poll_once(runtime, slot)
        finally:
            if task is not None:
                self._inflight.discard(task)
            if not self._ready.is_set() and self._telemetry.polled_all():
                self._ready.set()

    def polls_in_flight(self) -> int:
        """Polls started and not finished: waiting for a slot, fetching, or committing."""
        return len(self._inflight)

    async def wait_ready(self) -> None:
        """Until every tenant was polled once."""
        await self._ready.wait()

    async def finish(self, *, grace: float) -> None:
        """Let the polls in flight finish, ``grace`` seconds at most; cancel the rest."""
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in pending:
                task.cancel()

    async def _poll_once(self, runtime: TenantRuntime, slot: _Slot) -> list[Event]:
        lease = self._lease()  # every commit of this poll carries its fence as of now
        try:
            return await self._poll_counted(runtime, slot, fence=lease.fence if lease else None)
        except FencedOut as exc:  # not an outage: another replica leads, this one steps down
            name = runtime.config.name
            log.warning("poll result refused, stepping down: %s", exc, extra={"tenant": name})
            if lease is not None:
                lease.fenced_out()
            return []

    async def _poll_counted(
        self, runtime: TenantRuntime, slot: _Slot, *, fence: Fence | None
    ) -> list[Event]:
        name = runtime.config.name
        started, started_at = time.perf_counter(), self._now()
        try:
            return await self._poll(
                runtime, slot, started=started, started_at=started_at, fence=fence
            )
        except SourceError as exc:
            self._telemetry.record_poll_failure(
                name, reason=exc.reason, duration=time.perf_counter() - started
            )
            log.warning("poll failed: %s", exc, extra={"tenant": name, "reason": exc.reason})
            try:
                return await self._count_failure(runtime, exc, at=started_at, fence=fence)
            except FencedOut:
                raise
            except StoreError as store_error:  # the run stays as stored: this one is uncounted
                log.error("could not save the failed poll: %s", store_error, extra={"tenant": name})
                return []
        except FencedOut:
            raise
        except StoreError as exc:
            self._telemetry.record_poll_failure(
                name, reason="store", duration=time.perf_counter() - started
            )
            log.error("could not save poll result: %s", exc, extra={"tenant": name})
            return []

    async def _poll(
        self,
        runtime: TenantRuntime,
        slot: _Slot,
        *,
        started: float,
        started_at: datetime,
        fence: Fence | None,
    ) -> list[Event]:
        name = runtime.config.name
        previous = runtime.state
        observed = await fetch_snapshot(
            runtime.client,
            tenant=name,
            # a kid confirmed before and missing now is asked for by GET before it is gone
            previous=previous.snapshot if previous else None,
            watched_kids=runtime.config.kids,
            now=self._now,
        )
        recovered = await self._count_success(runtime, at=started_at, fence=fence)
        state, events = confirm(
            previous, observed, polls=runtime.config.confirm.polls, kids=runtime.config.kids
        )
        state, findings = check(
            state,
            alerted=previous.alerted if previous else frozenset(),
            now=observed.taken_at,
            policy=hygiene_policy(runtime.config),
            kids=runtime.config.kids,
        )
        events += findings
        publication, outcome = runtime.publication, None
        spread = len(self.tenants) > SPREAD_FIRST_CHECKS_ABOVE
        if publication and checks_publication(runtime, previous, state, started_at, spread=spread):
            # what the world sees, against the confirmed snapshot
            outcome = await publication.observe(state.snapshot, now=self._now)
            publication.record_errors(outcome)
            events = [*events, *outcome.events]
            state = replace(state, publication=outcome.episodes)  # committed with the poll
        if not self._leading():  # stepped down while fetching: the new leader polls instead
            log.info("poll result dropped: not the leader any more", extra={"tenant": name})
            return []
        slot.release()  # fetched: the commit (a baseline's waits for its batch) needs no slot
        committed: list[Event] = []
        deliveries = deliveries_of(events, self._destinations)
        if state != previous or (outcome is not None and outcome.events):
            # An unchanged state is not written (unless publication events come with it): in
            # memory and on disk agree on what "old" is.
            write = PollWrite(state, events, deliveries)
            committed = await self._commits.save(write, fence=fence, baseline=previous is None)
            if deliveries:
                self._wake({destination for _, destination in deliveries})
        if self.tenants.get(name) is runtime:  # not removed by a reload meanwhile
            self._show(runtime, state)
            if publication is not None and outcome is not None:
                publication.apply(outcome)
            elif publication is not None:  # its first check is not due yet
                publication.skip(state.snapshot)
        self._telemetry.record_events(committed)
        self._telemetry.record_poll_success(name, duration=time.perf_counter() - started)
        _log_state(runtime, previous, state)
        _announce(committed)
        return recovered + committed

    # --- reachability -----------------------------------------------------------------------

    async def _count_failure(
        self, runtime: TenantRuntime, error: SourceError, *, at: datetime, fence: Fence | None
    ) -> list[Event]:
        state, events = await self._reachability.after_failure(runtime.config, error, at=at)
        return await self._save_reachability(state, events, fence)

    async def _count_success(
        self, runtime: TenantRuntime, *, at: datetime, fence: Fence | None
    ) -> list[Event]:
        change = await self._reachability.after_success(runtime.config.name, at=at)
        return [] if change is None else await self._save_reachability(*change, fence)

    async def _save_reachability(
        self, state: Reachability, events: list[Event], fence: Fence | None
    ) -> list[Event]:
        """Commit the run of failed polls with its events and their deliveries, then tell."""
        if not self._leading():
            return []
        deliveries = deliveries_of(events, self._destinations)
        committed = await asyncio.to_thread(
            self._store.save_reachability, state, events, deliveries, fence=fence
        )
        self._reachability.remember(state)
        if deliveries:
            self._wake({destination for _, destination in deliveries})
        self._telemetry.record_events(committed)
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


def deliveries_of(
    events: Sequence[Event], destinations: Iterable[Notifier]
) -> list[tuple[str, str]]:
    """(event id, destination) for every destination that wants each event. Events the
    store already knows get no second delivery: the store ignores known pairs."""
    wanted = tuple(destinations)
    return [(event.id, d.name) for event in events for d in wanted if d.matches(event)]


def hygiene_policy(config: TenantConfig) -> HygienePolicy:
    return HygienePolicy(
        expiry_warnings=config.expiry_warnings,
        previous_unrevoked_after=config.previous_unrevoked_after,
        rotation_overdue_after=config.rotation_overdue_after,
    )


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
