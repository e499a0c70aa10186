"""The leader lease: with a shared PostgreSQL store exactly one replica polls and sends, the
others stand by, serve the shared snapshot and take over when the lease lapses.

``LeaderLease`` alone runs on a manual clock (SQLite, or a store that fails or hangs). The
replicas are real daemons in one event loop, against the simulator, a loopback receiver and
PostgreSQL in a private schema (KEYWATCH_TEST_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test; skipped when unreachable, except under CI=true).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from apscheduler.schedulers.base import STATE_PAUSED

from monitor.clock import Clock
from monitor.config import Settings, parse_config
from monitor.daemon import Daemon, build_daemon
from monitor.errors import StoreError
from monitor.leader import LeaderLease
from monitor.metrics import Telemetry, build_registry
from monitor.model import EventType, KeyState, Snapshot, event_id
from monitor.simulator import Simulator, SimulatorServer
from monitor.store.base import Store
from monitor.store.sqlite import SQLiteStore
from monitor.web import build_app
from tests.support.daemon import daemon_settings, replica_config, running, sample
from tests.support.delivery import Receiver, eventually

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEADLINE_SECONDS = 15.0


# --- a manual clock and stores that fail ------------------------------------------------------


class ManualClock:
    """Time that moves only when the test says so; ``sleep`` waits for ``advance``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    async def sleep(self, seconds: float) -> None:
        entry = (self.seconds + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        for due, waiter in list(self._sleepers):
            if due <= self.seconds and not waiter.done():
                waiter.set_result(None)

    @property
    def clock(self) -> Clock:
        return Clock(now=self.now, monotonic=self.monotonic, sleep=self.sleep)


@dataclass
class FaultyLeases:
    """A store whose lease calls fail (``failing``) or hang until released (``hanging``);
    everything else goes to the real store."""

    store: Store
    failing: bool = False
    hanging: bool = False
    entered: threading.Event = field(default_factory=threading.Event)
    release_hang: threading.Event = field(default_factory=threading.Event)

    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl: float) -> int | None:
        if self.hanging:
            self.entered.set()
            self.release_hang.wait(DEADLINE_SECONDS)
        if self.failing:
            raise StoreError("test store: acquire_lease failed: connection refused")
        return self.store.acquire_lease(name, holder, now=now, ttl=ttl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def lease_on(store: Any, clock: ManualClock, holder: str, *, ttl: float = 3.0) -> LeaderLease:
    return LeaderLease(store, holder=holder, ttl=ttl, clock=clock.clock)


# --- LeaderLease on a manual clock -----------------------------------------------------------


async def test_a_leader_that_does_not_renew_stops_before_its_lease_lapses(
    store: SQLiteStore,
) -> None:
    clock = ManualClock()
    first, second = lease_on(store, clock, "a"), lease_on(store, clock, "b")
    assert (first.renew_every, first.margin) == (1.0, 0.5)
    assert await first.attempt()
    assert not await second.attempt()
    assert first.expires_at == 3.0
    clock.advance(2.49)
    assert first.leading
    clock.advance(0.01)  # ttl - margin: stop, while the store still says "a" for 0.5 s
    assert not first.leading
    assert not await second.attempt()
    clock.advance(0.5)  # the lease lapses
    assert await second.attempt()
    assert not await first.attempt()
    assert first.grace() == 0.0


async def test_renewing_in_time_keeps_the_lease(store: SQLiteStore) -> None:
    clock = ManualClock()
    leader, standby = lease_on(store, clock, "a"), lease_on(store, clock, "b")
    for _ in range(10):
        assert await leader.attempt()
        assert not await standby.attempt()
        clock.advance(leader.renew_every)
    assert leader.leading and not standby.leading


async def test_a_failing_renewal_steps_down_at_once_with_the_rest_of_the_lease_as_grace(
    store: SQLiteStore,
) -> None:
    clock = ManualClock()
    faulty = FaultyLeases(store)
    lease = lease_on(faulty, clock, "a")
    assert await lease.attempt()
    assert lease.changed.is_set()
    lease.changed.clear()
    clock.advance(1.0)
    faulty.failing = True
    assert not await lease.attempt()
    assert not lease.leading
    assert lease.changed.is_set()
    assert lease.grace() == pytest.approx(1.5)  # until ttl - margin after the last renewal
    faulty.failing = False
    assert await lease.attempt()  # still ours in the store: taken back
    assert lease.grace() == pytest.approx(2.5)


async def test_a_hanging_renewal_steps_down_before_the_lease_lapses(
    store: SQLiteStore,
) -> None:
    clock = ManualClock()
    faulty = FaultyLeases(store)
    lease = lease_on(faulty, clock, "a")
    runner = asyncio.create_task(lease.run())
    try:
        await eventually(lambda: lease.leading, what="the first attempt")
        lease.changed.clear()
        faulty.hanging = True
        await eventually(lambda: clock.sleepers == 1, what="the wait for the next renewal")
        clock.advance(1.0)
        await eventually(faulty.entered.is_set, what="the renewal to hang")
        await eventually(lambda: clock.sleepers == 1, what="the deadline timer")
        clock.advance(1.49)
        await asyncio.sleep(0)
        assert lease.leading and not lease.changed.is_set()
        clock.advance(0.01)
        await eventually(lease.changed.is_set, what="the step-down")
        assert not lease.leading
        assert lease.expires_at is not None and clock.seconds < lease.expires_at
    finally:
        faulty.release_hang.set()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_release_lets_another_holder_take_the_lease_at_once(
    store: SQLiteStore,
) -> None:
    clock = ManualClock()
    leader, standby = lease_on(store, clock, "a"), lease_on(store, clock, "b")
    assert await leader.attempt()
    await leader.release()
    assert not leader.leading
    assert await standby.attempt()


# --- metrics and readiness of a standby ------------------------------------------------------


def a_snapshot(tenant: str) -> Snapshot:
    sha1 = "AB" * 20
    current = KeyState(kid="k1", thumbprint=sha1, fingerprint=sha1, cert_sha1=sha1, current=True)
    return Snapshot(tenant=tenant, taken_at=T0, keys={"k1": current})


def test_a_standby_exports_key_state_but_no_poll_status() -> None:
    telemetry = Telemetry(clock=lambda: 1000.0)
    registry = build_registry(telemetry, version="x")

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    telemetry.add_tenant("prod")
    telemetry.set_snapshot(a_snapshot("prod"))
    telemetry.record_poll_success("prod", duration=0.1)
    assert value("keywatch_leader") == 1
    assert value("keywatch_tenant_up", tenant="prod") == 1

    telemetry.set_leader(False)
    telemetry.add_tenant("stage")
    assert value("keywatch_leader") == 0
    assert value("keywatch_tenant_up", tenant="prod") is None
    assert value("keywatch_tenant_up", tenant="stage") is None
    assert value("keywatch_last_successful_poll_timestamp_seconds", tenant="prod") is None
    assert value("auth0_signing_key_state", tenant="prod", kid="k1", state="current") == 1
    assert not telemetry.polled_all()

    telemetry.set_leader(True)  # leading again: "not polled yet" until the first poll
    assert value("keywatch_tenant_up", tenant="prod") == 0
    telemetry.record_poll_success("prod", duration=0.1)
    assert value("keywatch_tenant_up", tenant="prod") == 1


async def test_readyz_of_a_standby_needs_the_store_but_no_poll() -> None:
    store_up = True

    def ping() -> None:
        if not store_up:
            raise StoreError("test store: ping failed")

    app = build_app(
        exposition=lambda openmetrics, gzip: iter(()),
        ping_store=ping,
        polled_all=lambda: False,
        standing_by=lambda: True,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.text) == (200, "ready (standby)\n")
        store_up = False
        assert (await client.get("/readyz")).status_code == 503


async def test_with_sqlite_the_one_process_always_leads(tmp_path: Path) -> None:
    with SimulatorServer(Simulator(tenants=1, key_pool_size=2)) as server:
        async with running(daemon_settings(server, tmp_path)) as daemon:
            assert daemon.lease is None and daemon.leading
            assert sample(daemon, "keywatch_leader") == 1


# --- replicas on PostgreSQL ------------------------------------------------------------------


def replica_settings(
    server: SimulatorServer,
    receiver: Receiver,
    tmp_path: Path,
    state: str,
    *,
    ttl: str = "1s",
    tenant_lines: str = "",
) -> Settings:
    lease = f"lease: {{ttl: {ttl}}}"
    text = replica_config(
        server, receiver, tmp_path, state=state, extra_lines=lease, extra_tenant_lines=tenant_lines
    )
    return parse_config(text)


@dataclass
class Replicas:
    settings: Settings
    daemons: list[Daemon] = field(default_factory=list)
    stopped: set[int] = field(default_factory=set)

    async def start(
        self,
        *,
        lease_store: Callable[[Store], Any] | None = None,
        lease_clock: Clock | None = None,
    ) -> Daemon:
        daemon = build_daemon(self.settings)
        daemon.shared_refresh_interval = 0.05
        if lease_store is not None or lease_clock is not None:
            assert daemon.lease is not None
            daemon.lease = LeaderLease(
                (lease_store or (lambda store: store))(daemon.store),
                holder=daemon.lease.holder,
                ttl=daemon.lease.ttl,
                clock=lease_clock,
            )
        self.daemons.append(daemon)
        await daemon.start()
        return daemon

    async def start_leader_and_standby(self) -> tuple[Daemon, Daemon]:
        """Two replicas, started one after the other; returns once the first is ready."""
        leader, standby = await self.start(), await self.start()
        await asyncio.wait_for(leader.wait_ready(), DEADLINE_SECONDS)
        return leader, standby

    async def stop(self, daemon: Daemon, *, release_lease: bool = True) -> None:
        self.stopped.add(id(daemon))
        await daemon.shutdown(release_lease=release_lease)


@asynccontextmanager
async def replicas(settings: Settings) -> AsyncIterator[Replicas]:
    group = Replicas(settings)
    try:
        yield group
    finally:
        for daemon in group.daemons:
            if id(daemon) not in group.stopped:
                await daemon.shutdown()


@pytest.fixture
async def group(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path, postgres_url: str
) -> AsyncIterator[Replicas]:
    """Replicas of one daemon sharing a PostgreSQL store (lease ttl 1 s), none started yet;
    those still running at the end are shut down."""
    async with replicas(
        replica_settings(server, receiver, tmp_path, postgres_url)
    ) as replica_group:
        yield replica_group


def polls(daemon: Daemon) -> float:
    return sample(daemon, "keywatch_poll_duration_seconds_count") or 0.0


async def one_rotation_detected(daemon: Daemon, *, what: str) -> None:
    """Wait until ``daemon`` has counted exactly one rotation of tenant-1."""
    await eventually(
        lambda: sample(daemon, "auth0_signing_key_rotations_total", tenant="tenant-1") == 1,
        what=what,
    )


async def all_delivered(daemon: Daemon) -> dict[tuple[str, str], int]:
    """Wait until nothing is pending; returns the delivery counts."""
    counts: dict[tuple[str, str], int] = {}

    async def settled() -> bool:
        nonlocal counts
        counts = await asyncio.to_thread(daemon.store.delivery_counts)
        return bool(counts) and all(state == "delivered" for _, state in counts)

    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await settled():
        assert time.monotonic() < deadline, f"deliveries still pending: {counts}"
        await asyncio.sleep(0.02)
    return counts


async def the_one_rotation(daemon: Daemon, receiver: Receiver) -> str:
    """The one key.rotated event in the store, delivered exactly once to each destination."""
    await all_delivered(daemon)
    events = await asyncio.to_thread(daemon.store.recent_events)
    [rotated] = [event for event in events if event.type is EventType.KEY_ROTATED]
    for path in ("/hook", "/slack"):
        posts = [r for r in receiver.received(path) if r.event_id == rotated.id]
        assert len(posts) == 1, f"{path}: {len(posts)} POSTs of the rotation"
    return rotated.id


@pytest.mark.postgres
async def test_one_replica_polls_and_sends_while_the_other_serves_its_snapshot(
    server: SimulatorServer, receiver: Receiver, group: Replicas
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    leader, standby = await group.start_leader_and_standby()
    assert (leader.leading, standby.leading) == (True, False)
    new_current = tenant.next_kid
    tenant.rotate()
    await one_rotation_detected(leader, what="the leader to detect the rotation")
    labels = {"tenant": "tenant-1", "kid": new_current, "state": "current"}
    await eventually(
        lambda: sample(standby, "auth0_signing_key_state", **labels) == 1,
        what="the standby to load the shared snapshot",
    )
    await the_one_rotation(leader, receiver)
    assert await standby.poll_tenant("tenant-1") == []  # a standby polls nothing

    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{standby.port}/metrics")).text
        ready = await http.get(f"http://127.0.0.1:{standby.port}/readyz")
    current = f'kid="{new_current}",state="current",tenant="tenant-1"'
    assert f"auth0_signing_key_state{{{current}}} 1.0" in metrics
    assert "\nkeywatch_leader 0.0\n" in metrics
    assert "keywatch_tenant_up{" not in metrics
    assert (ready.status_code, ready.text) == (200, "ready (standby)\n")
    assert polls(standby) == 0 and polls(leader) >= 2
    assert sample(leader, "keywatch_leader") == 1
    assert sample(leader, "keywatch_tenant_up", tenant="tenant-1") == 1


@pytest.mark.postgres
async def test_after_a_crash_the_standby_takes_over_within_ttl_and_reports_a_change_once(
    server: SimulatorServer, receiver: Receiver, group: Replicas
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    leader, standby = await group.start_leader_and_standby()
    assert standby.lease is not None and leader.lease is not None
    await group.stop(leader, release_lease=False)  # as a crash: the lease stays taken
    tenant.rotate()
    # how soon after the lapse, on a manual clock: test_a_leader_that_does_not_renew_...
    await eventually(lambda: standby.leading, what="the takeover")
    assert leader.lease.expires_at is not None
    assert time.monotonic() >= leader.lease.expires_at - 0.05  # not before it lapsed
    await one_rotation_detected(standby, what="the new leader to detect the rotation")
    await the_one_rotation(standby, receiver)
    assert sample(standby, "keywatch_leader") == 1


@pytest.mark.postgres
async def test_a_clean_shutdown_releases_the_lease_for_an_immediate_takeover(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path, postgres_url: str
) -> None:
    settings = replica_settings(server, receiver, tmp_path, postgres_url, ttl="3s")
    async with replicas(settings) as group:
        leader, standby = await group.start_leader_and_standby()
        await group.stop(leader)
        await eventually(lambda: standby.leading, what="the takeover")
        assert leader.lease is not None and leader.lease.expires_at is not None
        assert time.monotonic() < leader.lease.expires_at  # well before it would have lapsed
        await eventually(lambda: polls(standby) >= 1, what="the new leader's first poll")


def stepped_down(daemon: Daemon) -> bool:
    """``daemon`` stands by: it does not lead, sends to nobody and its polls are paused."""
    scheduler = daemon._scheduler
    return (
        not daemon.leading
        and daemon.dispatcher.destinations == []
        and scheduler is not None
        and scheduler.state == STATE_PAUSED
    )


@pytest.mark.postgres
async def test_a_leader_that_cannot_renew_stops_polling_and_sending_before_its_lease_lapses(
    group: Replicas,
) -> None:
    faulty: list[FaultyLeases] = []

    def faulty_store(store: Store) -> FaultyLeases:
        faulty.append(FaultyLeases(store))
        return faulty[0]

    leader = await group.start(lease_store=faulty_store)
    standby = await group.start()
    await asyncio.wait_for(leader.wait_ready(), DEADLINE_SECONDS)
    assert leader.dispatcher.destinations == ["hook", "chat"]
    assert leader.lease is not None
    both_led = False

    def leader_stepped_down() -> bool:
        nonlocal both_led
        both_led = both_led or (leader.leading and standby.leading)
        return stepped_down(leader)

    faulty[0].failing = True
    await eventually(leader_stepped_down, what="the leader to step down")
    stepped_down_at = time.monotonic()
    expires_at = leader.lease.expires_at
    assert expires_at is not None and stepped_down_at < expires_at
    assert sample(leader, "keywatch_leader") == 0
    await eventually(lambda: leader_stepped_down() and standby.leading, what="the takeover")
    assert not both_led
    polled = polls(leader)
    await eventually(lambda: polls(standby) >= 2, what="the new leader's polls")
    assert polls(leader) == polled


@pytest.mark.postgres
async def test_a_leader_whose_lease_was_taken_over_is_fenced_out_and_steps_down(
    server: SimulatorServer,
    receiver: Receiver,
    group: Replicas,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The old leader's clock stands still (as in a process frozen past its lease): it never
    notices the lapse itself and still polls and sends. The store refuses its writes for the
    newer token; it steps down, and the rotation is sent once, by the new leader."""
    caplog.set_level(logging.WARNING)  # an earlier test may have configured the root logger
    tenant = server.simulator.tenant("tenant-1")
    old = await group.start(lease_clock=ManualClock().clock)  # its lease lapsed in 2025
    await asyncio.wait_for(old.wait_ready(), DEADLINE_SECONDS)
    assert old.lease is not None and old.lease.fence is not None
    new = await group.start()
    assert new.lease is not None and new.lease.fence is not None
    assert new.leading and old.leading  # both believe it: only the token tells them apart
    assert new.lease.fence.token == old.lease.fence.token + 1
    tenant.rotate()
    await eventually(lambda: stepped_down(old), what="the old leader to step down")
    rotated = await the_one_rotation(new, receiver)
    assert sample(old, "keywatch_leader") == 0
    assert sample(old, "keywatch_api_errors_total", tenant="tenant-1", reason="store") is None
    refusals = [r for r in caplog.records if "which now has token" in r.getMessage()]
    assert refusals and all(r.levelname == "WARNING" for r in refusals)
    claims = await asyncio.to_thread(
        store_rows, new.store, "SELECT DISTINCT claimed_token FROM deliveries"
    )
    assert claims == [(new.lease.fence.token,)], f"claims of {rotated}: {claims}"


def store_rows(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with store._session("test", write=False) as session:  # type: ignore[attr-defined]
        return session.query(sql)


@pytest.mark.postgres
async def test_a_new_leader_recovers_the_publication_episode_the_last_one_opened(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path, postgres_url: str
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    tenant.publication.jwks_max_age = 0  # fetched on every poll
    tenant.malform_next(None, kind="no_next", target="jwks")
    every_poll = "    publication_recheck: every_poll"  # the first check at the first poll
    settings = replica_settings(server, receiver, tmp_path, postgres_url, tenant_lines=every_poll)
    async with replicas(settings) as group:
        await recovered_by_the_new_leader(server, group)


async def recovered_by_the_new_leader(server: SimulatorServer, group: Replicas) -> None:
    tenant = server.simulator.tenant("tenant-1")

    def of_type(daemon: Daemon, kind: EventType) -> list[str]:
        return [event.id for event in daemon.store.recent_events() if event.type is kind]

    leader, standby = await group.start(), await group.start()
    await eventually(lambda: of_type(leader, EventType.JWKS_MISMATCH) != [], what="mismatch")
    [mismatch] = of_type(leader, EventType.JWKS_MISMATCH)
    await group.stop(leader)
    tenant.clear_faults()  # the episode ends during the change of leader
    await eventually(lambda: standby.leading, what="the takeover")
    await eventually(lambda: of_type(standby, EventType.JWKS_CONSISTENT) != [], what="the recovery")
    assert of_type(standby, EventType.JWKS_CONSISTENT) == [
        event_id("tenant-1", EventType.JWKS_CONSISTENT, mismatch)
    ]
    assert of_type(standby, EventType.JWKS_MISMATCH) == [mismatch]
