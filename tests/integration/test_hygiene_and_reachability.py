"""Expiry windows, rotation hygiene and unreachable tenants: the daemon against the simulator
over loopback, with the daemon's wall clock injected and moved forward (the simulator's
certificates are valid for ten years)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.daemon import Daemon
from monitor.model import Event, EventType
from monitor.simulator import SimulatorServer
from tests.support.daemon import daemon_settings, hook_destination, running, sample, stored_events
from tests.support.delivery import Receiver, eventually

pytestmark = pytest.mark.simulator(tenants=2, key_pool_size=4)


class MovableClock:
    """Real time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def move_to(self, moment: datetime) -> None:
        self.offset = moment - datetime.now(UTC)


def of_type(events: list[Event], event_type: EventType) -> list[Event]:
    return [event for event in events if event.type is event_type]


def not_after(daemon: Daemon, kid: str, tenant: str = "tenant-1") -> datetime:
    state = daemon.poller.tenants[tenant].state
    assert state is not None
    moment = state.snapshot.keys[kid].not_after
    assert moment is not None
    return moment


# --- expiry ----------------------------------------------------------------------------------


async def test_each_expiry_window_fires_once_per_key_and_a_restart_fires_nothing(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(server, tmp_path, tenants=["tenant-1"])
    clock = MovableClock()
    current, upcoming = tenant.current_kid, tenant.next_kid
    async with running(settings, now=clock.now) as daemon:
        assert stored_events(daemon) == []  # ten years left: quiet at the baseline
        ends = {kid: not_after(daemon, kid) for kid in (current, upcoming)}
        first_end = min(ends.values())
        clock.move_to(first_end - timedelta(days=31))
        assert await daemon.poll_tenant("tenant-1") == []

        clock.move_to(max(ends.values()) - timedelta(days=29))
        thirty = await daemon.poll_tenant("tenant-1")
        assert sorted((e.type, e.kid, e.details["window"]) for e in thirty) == sorted(
            (EventType.KEY_EXPIRING, kid, "30d") for kid in (current, upcoming)
        )
        assert await daemon.poll_tenant("tenant-1") == []

        clock.move_to(max(ends.values()) - timedelta(days=6))
        seven = await daemon.poll_tenant("tenant-1")
        assert sorted((e.kid, e.details["window"]) for e in seven) == sorted(
            (kid, "7d") for kid in (current, upcoming)
        )
        assert await daemon.poll_tenant("tenant-1") == []
        assert sample(daemon, "keywatch_events_total", tenant="tenant-1", event="key.expiring") == 4

    async with running(settings, now=clock.now) as restarted:
        assert await restarted.poll_tenant("tenant-1") == []
        assert len(of_type(stored_events(restarted), EventType.KEY_EXPIRING)) == 4


async def test_a_key_first_seen_inside_the_last_window_fires_that_window_only(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    tenant.ensure_keys()
    clock = MovableClock()
    clock.move_to(datetime.now(UTC) + timedelta(days=3650 - 3))  # 3 days before the end
    settings = daemon_settings(server, tmp_path, tenants=["tenant-1"])
    async with running(settings, now=clock.now) as daemon:
        expiring = of_type(stored_events(daemon), EventType.KEY_EXPIRING)
        assert {e.details["window"] for e in expiring} == {"7d"}
        assert {e.kid for e in expiring} == {tenant.current_kid, tenant.next_kid}


# --- previous unrevoked, rotation overdue ----------------------------------------------------


async def test_previous_unrevoked_and_rotation_overdue_fire_when_configured_only(
    server: SimulatorServer, tmp_path: Path
) -> None:
    """tenant-1 sets both checks; tenant-2 leaves them off (the default)."""
    hygiene = "    previous_unrevoked_after: 2d\n    rotation_overdue_after: 30d"
    settings = daemon_settings(
        server, tmp_path, tenants=["tenant-1", "tenant-2"], extra_tenant_lines=hygiene
    )
    settings = settings.model_copy(
        update={
            "tenants": (
                settings.tenants[0],
                settings.tenants[1].model_copy(
                    update={"previous_unrevoked_after": None, "rotation_overdue_after": None}
                ),
            )
        }
    )
    clock = MovableClock()
    simulated = [server.simulator.tenant(name) for name in ("tenant-1", "tenant-2")]
    async with running(settings, now=clock.now) as daemon:
        retired = [tenant.current_kid for tenant in simulated]
        for tenant in simulated:
            tenant.rotate()
        for name in ("tenant-1", "tenant-2"):
            rotated = await daemon.poll_tenant(name)
            assert of_type(rotated, EventType.KEY_ROTATED)
        clock.move_to(datetime.now(UTC) + timedelta(days=1))
        assert await daemon.poll_tenant("tenant-1") == []

        clock.move_to(datetime.now(UTC) + timedelta(days=3))
        [unrevoked] = await daemon.poll_tenant("tenant-1")
        assert (unrevoked.type, unrevoked.kid) == (EventType.KEY_PREVIOUS_UNREVOKED, retired[0])
        assert await daemon.poll_tenant("tenant-1") == []

        clock.move_to(datetime.now(UTC) + timedelta(days=31))
        [overdue] = await daemon.poll_tenant("tenant-1")
        assert (overdue.type, overdue.kid) == (
            EventType.TENANT_ROTATION_OVERDUE,
            simulated[0].current_kid,
        )
        assert await daemon.poll_tenant("tenant-2") == []  # off: quiet
        assert await daemon.poll_tenant("tenant-1") == []

        simulated[0].revoke(retired[0])
        revoked = await daemon.poll_tenant("tenant-1")
        assert [e.type for e in revoked] == [EventType.KEY_REVOKED]


# --- unreachable and recovered ---------------------------------------------------------------


async def test_an_outage_is_one_unreachable_and_one_recovered_notified(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    destinations = "destinations:\n" + hook_destination(receiver)
    settings = daemon_settings(server, tmp_path, tenants=["tenant-1"], extra_lines=destinations)
    async with running(settings) as daemon:
        tenant.fail_next(None, status=403)
        raised = [event for _ in range(6) for event in await daemon.poll_tenant("tenant-1")]
        [unreachable] = raised
        assert unreachable.type is EventType.TENANT_UNREACHABLE
        assert unreachable.details["failures"] == "3"
        assert unreachable.details["reason"] == "forbidden"
        assert sample(daemon, "keywatch_tenant_up", tenant="tenant-1") == 0

        tenant.clear_faults()
        [recovered] = await daemon.poll_tenant("tenant-1")
        assert recovered.type is EventType.TENANT_RECOVERED
        assert recovered.details["failures"] == "6"
        assert await daemon.poll_tenant("tenant-1") == []
        wanted = {unreachable.id, recovered.id}
        await eventually(
            lambda: wanted <= {r.event_id for r in receiver.received("/hook")},
            what="the unreachable and recovered notifications",
        )
        assert [r.event_id for r in receiver.received("/hook")] == [unreachable.id, recovered.id]


async def test_failures_shorter_than_the_threshold_raise_nothing(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(
        server, tmp_path, tenants=["tenant-1"], extra_tenant_lines="    unreachable_after: 4"
    )
    async with running(settings) as daemon:
        for _ in range(2):
            tenant.fail_next(3, status=403)
            for _ in range(3):
                assert await daemon.poll_tenant("tenant-1") == []
            assert await daemon.poll_tenant("tenant-1") == []  # succeeds: the run ends
        assert stored_events(daemon) == []


async def test_the_count_survives_a_restart_and_each_event_fires_once(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(server, tmp_path, tenants=["tenant-1"])
    async with running(settings) as daemon:
        tenant.fail_next(None, status=403)
        for _ in range(2):
            assert await daemon.poll_tenant("tenant-1") == []
    async with running(settings) as restarted:  # its first poll is the third failure
        [unreachable] = stored_events(restarted)
        assert unreachable.type is EventType.TENANT_UNREACHABLE
    async with running(settings) as again:  # still down: nothing new
        assert await again.poll_tenant("tenant-1") == []
        tenant.clear_faults()
        [recovered] = await again.poll_tenant("tenant-1")
        assert recovered.type is EventType.TENANT_RECOVERED
        assert recovered.details["down_since"] == unreachable.details["down_since"]
        assert [e.type for e in stored_events(again)] == [
            EventType.TENANT_RECOVERED,
            EventType.TENANT_UNREACHABLE,
        ]
