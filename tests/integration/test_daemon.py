"""The daemon against the simulator over loopback: detection, persistence, metrics, restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.daemon import Daemon, build_daemon
from monitor.model import Event, EventType, Severity
from monitor.simulator import SimulatorServer
from monitor.simulator.tenant import SimulatedTenant
from tests.support.daemon import daemon_settings, hook_destination, running, sample, stored_events
from tests.support.delivery import Receiver, eventually

pytestmark = pytest.mark.simulator(tenants=2, key_pool_size=4)


async def test_scheduled_polls_report_rotation_then_revocation(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(server, tmp_path, interval="200ms")
    async with running(settings) as daemon:
        old_current, old_next = tenant.current_kid, tenant.next_kid
        tenant.rotate()
        await eventually(
            lambda: sample(daemon, "auth0_signing_key_rotations_total", tenant="tenant-1") == 1,
            what="the rotation counter",
        )
        [rotated] = [e for e in stored_events(daemon) if e.type is EventType.KEY_ROTATED]
        assert (rotated.old_kid, rotated.new_kid) == (old_current, old_next)

        tenant.revoke(old_current)
        await eventually(
            lambda: sample(daemon, "auth0_signing_key_revocations_total", tenant="tenant-1") == 1,
            what="the revocation counter",
        )
        [revoked] = [e for e in stored_events(daemon) if e.type is EventType.KEY_REVOKED]
        assert revoked.kid == old_current
        state = sample(
            daemon, "auth0_signing_key_state", tenant="tenant-1", kid=old_current, state="revoked"
        )
        assert state == 1
        assert sample(daemon, "keywatch_tenant_up", tenant="tenant-1") == 1


async def test_each_change_is_reported_by_the_next_poll(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    async with running(daemon_settings(server, tmp_path)) as daemon:
        assert stored_events(daemon) == []  # the first poll is the baseline
        tenant.rotate()
        events = await daemon.poll_tenant("tenant-1")
        assert [e.type for e in events] == [EventType.KEY_ROTATED, EventType.KEY_ADDED]
        assert await daemon.poll_tenant("tenant-1") == []  # nothing new, nothing invented


async def test_restart_reports_nothing_already_seen(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(server, tmp_path)
    async with running(settings) as daemon:
        tenant.rotate()
        assert await daemon.poll_tenant("tenant-1")
        seen = {e.id for e in stored_events(daemon)}
    async with running(settings) as restarted:
        assert {e.id for e in stored_events(restarted)} == seen
        assert sample(restarted, "auth0_signing_key_rotations_total", tenant="tenant-1") == 0
        assert sample(restarted, "keywatch_tenant_up", tenant="tenant-1") == 1


async def test_change_while_stopped_is_reported_once_after_start(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(server, tmp_path)
    async with running(settings):
        pass
    old_current = tenant.current_kid
    tenant.rotate()
    tenant.revoke(old_current)
    async with running(settings) as restarted:
        types = sorted(e.type.value for e in stored_events(restarted))
        assert types == ["key.added", "key.revoked", "key.rotated"]
        assert sample(restarted, "auth0_signing_key_rotations_total", tenant="tenant-1") == 1
        assert await restarted.poll_tenant("tenant-1") == []
    async with running(settings) as again:
        assert len(stored_events(again)) == 3


@pytest.mark.parametrize(
    "kind", ["html", "truncated", "wrong_type", "flag_string", "missing_field", "bad_cert"]
)
async def test_malformed_answer_counts_an_error_and_changes_nothing(
    server: SimulatorServer, tmp_path: Path, kind: str
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    async with running(daemon_settings(server, tmp_path)) as daemon:
        before = daemon.telemetry.snapshot_of("tenant-1")
        tenant.malform_next(1, kind=kind)
        assert await daemon.poll_tenant("tenant-1") == []
        errors = sample(daemon, "keywatch_api_errors_total", tenant="tenant-1", reason="malformed")
        assert errors == 1
        assert sample(daemon, "keywatch_tenant_up", tenant="tenant-1") == 0
        assert daemon.telemetry.snapshot_of("tenant-1") is before
        assert await daemon.poll_tenant("tenant-1") == []
        assert sample(daemon, "keywatch_tenant_up", tenant="tenant-1") == 1
        assert stored_events(daemon) == []


@pytest.mark.parametrize("kind", ["empty", "no_current"])
async def test_one_suspicious_answer_is_fetched_again_not_believed(
    server: SimulatorServer, tmp_path: Path, kind: str
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    async with running(daemon_settings(server, tmp_path)) as daemon:
        tenant.malform_next(1, kind=kind)
        assert await daemon.poll_tenant("tenant-1") == []
        assert stored_events(daemon) == []


# --- confirmation: a brief inconsistent answer notifies nobody (issue 8) --------------------


@pytest.fixture
async def daemon(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path
) -> AsyncIterator[Daemon]:
    """The running daemon, notifying ``receiver``'s /hook of every event type and severity."""
    destinations = "destinations:\n" + hook_destination(receiver)
    settings = daemon_settings(server, tmp_path, extra_lines=destinations)
    async with running(settings) as daemon:
        yield daemon


async def notified(receiver: Receiver, events: list[Event]) -> list[str | None]:
    """Every event id the receiver got, once ``events`` (the last ones raised) arrived: the
    outbox sends in detection order, so an earlier notification would have come first."""
    wanted = {event.id for event in events}
    await eventually(
        lambda: wanted <= {r.event_id for r in receiver.received("/hook")},
        what="the notifications of " + ", ".join(e.type.value for e in events),
    )
    return [r.event_id for r in receiver.received("/hook")]


async def assert_the_glitch_notified_nothing(
    daemon: Daemon, tenant: SimulatedTenant, receiver: Receiver
) -> None:
    """Nothing is stored, and a real change made after the glitch is all the receiver gets:
    the outbox sends in detection order, so a notification of the glitch would come first."""
    assert stored_events(daemon) == []
    tenant.rotate()
    real = await daemon.poll_tenant("tenant-1")
    assert [e.type for e in real] == [EventType.KEY_ROTATED, EventType.KEY_ADDED]
    assert await notified(receiver, real) == [e.id for e in real]


async def test_two_answers_without_a_current_key_then_normal_notify_nothing(
    server: SimulatorServer, receiver: Receiver, daemon: Daemon
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    tenant.malform_next(2, kind="no_current")  # the poll and its re-fetch
    assert await daemon.poll_tenant("tenant-1") == []
    assert sample(daemon, "keywatch_unconfirmed_changes", tenant="tenant-1") == 1
    seen = sample(daemon, "auth0_signing_keys", tenant="tenant-1", state="current")
    assert seen == 0  # the metrics show what was seen
    assert await daemon.poll_tenant("tenant-1") == []  # normal again: nothing happened
    assert sample(daemon, "keywatch_unconfirmed_changes", tenant="tenant-1") == 0
    assert sample(daemon, "auth0_signing_keys", tenant="tenant-1", state="current") == 1
    await assert_the_glitch_notified_nothing(daemon, tenant, receiver)


async def test_one_answer_with_a_wrong_thumbprint_notifies_nothing(
    server: SimulatorServer, receiver: Receiver, daemon: Daemon
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    tenant.malform_next(1, kind="bad_thumbprint")
    assert await daemon.poll_tenant("tenant-1") == []
    assert invalid_thumbprints(daemon) == 1
    assert sample(daemon, "keywatch_unconfirmed_changes", tenant="tenant-1") == 1
    assert await daemon.poll_tenant("tenant-1") == []
    assert invalid_thumbprints(daemon) == 0
    await assert_the_glitch_notified_nothing(daemon, tenant, receiver)


async def test_a_gap_confirmed_by_the_next_poll_notifies_and_its_end_is_a_restoration(
    server: SimulatorServer, receiver: Receiver, daemon: Daemon
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    current = tenant.current_kid
    tenant.malform_next(4, kind="no_current")  # two polls, each with its re-fetch
    assert await daemon.poll_tenant("tenant-1") == []
    gap, moved = await daemon.poll_tenant("tenant-1")
    assert gap.type is EventType.TENANT_NO_CURRENT_KEY
    assert (moved.type, moved.details["new_state"]) == (EventType.KEY_STATE_CHANGED, "unknown")
    assert sample(daemon, "keywatch_unconfirmed_changes", tenant="tenant-1") == 0
    [restored] = await daemon.poll_tenant("tenant-1")
    assert (restored.type, restored.kid) == (EventType.TENANT_CURRENT_KEY_RESTORED, current)
    assert await notified(receiver, [gap, moved, restored]) == [gap.id, moved.id, restored.id]
    texts = [r.json["data"]["message"] for r in receiver.received("/hook")]
    assert not any("None" in text or "null" in text for text in texts), texts


async def test_a_wrong_thumbprint_confirmed_by_the_next_poll_is_one_warning(
    server: SimulatorServer, receiver: Receiver, daemon: Daemon
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    tenant.malform_next(3, kind="bad_thumbprint")
    assert await daemon.poll_tenant("tenant-1") == []
    [finding] = await daemon.poll_tenant("tenant-1")
    assert finding.type is EventType.KEY_THUMBPRINT_MISMATCH
    assert finding.severity is Severity.WARNING
    assert await daemon.poll_tenant("tenant-1") == []  # once per episode
    assert await daemon.poll_tenant("tenant-1") == []  # its end changes nothing
    assert await notified(receiver, [finding]) == [finding.id]
    assert [e.type for e in stored_events(daemon)] == [EventType.KEY_THUMBPRINT_MISMATCH]


async def test_a_pending_answer_survives_a_restart(server: SimulatorServer, tmp_path: Path) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(server, tmp_path)
    async with running(settings) as daemon:
        tenant.malform_next(2, kind="no_current")
        assert await daemon.poll_tenant("tenant-1") == []
    tenant.malform_next(2, kind="no_current")  # the restart's first poll sees it again
    async with running(settings) as restarted:
        assert EventType.TENANT_NO_CURRENT_KEY in {e.type for e in stored_events(restarted)}


def invalid_thumbprints(daemon: Daemon) -> int:
    snapshot = daemon.telemetry.snapshot_of("tenant-1")
    assert snapshot is not None
    return sum(
        sample(daemon, "auth0_signing_key_thumbprint_valid", tenant="tenant-1", kid=kid) == 0
        for kid in snapshot.keys
    )


async def test_an_empty_list_is_contradicted_by_asking_for_each_known_kid(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    async with running(daemon_settings(server, tmp_path)) as daemon:
        tenant.malform_next(2, kind="empty")  # the list is empty twice, GET by kid still works
        assert await daemon.poll_tenant("tenant-1") == []
        assert stored_events(daemon) == []


async def test_http_endpoints_serve_metrics_health_and_readiness(
    server: SimulatorServer, tmp_path: Path
) -> None:
    async with running(daemon_settings(server, tmp_path, tenants=("tenant-1", "tenant-2"))) as d:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}") as http:
            metrics = await http.get("/metrics")
            health = await http.get("/healthz")
            ready = await http.get("/readyz")
    assert metrics.status_code == 200
    assert 'keywatch_tenant_up{tenant="tenant-2"} 1.0' in metrics.text
    assert "auth0_signing_key_info{" in metrics.text
    assert (health.status_code, ready.status_code) == (200, 200)


async def test_readyz_waits_for_every_tenant(server: SimulatorServer, tmp_path: Path) -> None:
    from monitor.daemon import build_daemon

    daemon = build_daemon(daemon_settings(server, tmp_path))
    daemon.telemetry.add_tenant("tenant-1")
    from monitor.metrics import prepared_exposition
    from monitor.web import build_app

    app = build_app(
        exposition=prepared_exposition(daemon.telemetry, version="x"),
        ping_store=daemon.store.ping,
        polled_all=daemon.telemetry.polled_all,
        progress=daemon.telemetry.polled_once,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        waiting = await c.get("/readyz")
        assert (waiting.status_code, waiting.text) == (
            503,
            "not ready: 0 of 1 tenants polled once\n",
        )
        daemon.telemetry.record_poll_failure("tenant-1", reason="network", duration=0.1)
        assert (await c.get("/readyz")).status_code == 200
    await daemon.http.aclose()
    daemon.store.close()


async def test_secrets_never_reach_logs_or_metrics(
    server: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = server.simulator.tenant("tenant-1")
    wrong = "this-secret-is-wrong-1234"
    settings = daemon_settings(server, tmp_path, tenants=("tenant-1",))
    async with running(settings) as daemon:
        tenant.rotate()
        tenant.fail_next(1, status=401)  # forces a token refresh
        await daemon.poll_tenant("tenant-1")
        tenant.malform_next(1, kind="html")
        await daemon.poll_tenant("tenant-1")
        body = (await daemon.http.get(f"http://127.0.0.1:{daemon.port}/metrics")).text
    bad = daemon_settings(server, tmp_path / "bad", tenants=("tenant-2",), secret=wrong)
    async with running(bad) as failing:
        body += (await failing.http.get(f"http://127.0.0.1:{failing.port}/metrics")).text
    logs = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert 'reason="unauthorized"' in body  # the wrong secret was used and failed
    for text in (logs, body):
        assert "keywatch-demo-secret" not in text
        assert wrong not in text
        assert "eyJ" not in text  # no JWT (every access token starts with it)


async def test_watched_kids_limit_per_key_events_and_unknown_kids_are_confirmed(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    watched = tenant.current_kid
    kids = f"    kids: [{watched}, doesNotExist0000000001]"
    settings = daemon_settings(server, tmp_path, extra_tenant_lines=kids)
    async with running(settings) as daemon:
        assert daemon.telemetry.snapshot_of("tenant-1") is not None
        tenant.rotate()  # the new next key is not watched: no key.added
        assert [e.type for e in await daemon.poll_tenant("tenant-1")] == [EventType.KEY_ROTATED]
        tenant.revoke(watched)
        [revoked] = await daemon.poll_tenant("tenant-1")
        assert (revoked.type, revoked.kid) == (EventType.KEY_REVOKED, watched)
        assert sample(daemon, "keywatch_tenant_up", tenant="tenant-1") == 1


async def test_a_burst_of_due_polls_is_limited_to_a_few_fetching_at_once(
    server: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor import poll
    from monitor.poll import MAX_CONCURRENT_POLLS

    names = [server.simulator.add_tenant().name for _ in range(MAX_CONCURRENT_POLLS + 3)]
    async with running(daemon_settings(server, tmp_path, tenants=names)) as daemon:
        fetching, most = 0, 0
        original = poll.fetch_snapshot

        async def counting(*args: Any, **options: Any) -> Any:
            nonlocal fetching, most
            fetching += 1
            most = max(most, fetching)
            try:
                return await original(*args, **options)
            finally:
                fetching -= 1

        monkeypatch.setattr(poll, "fetch_snapshot", counting)
        await asyncio.gather(*(daemon.poll_tenant(name) for name in names))
    assert most == MAX_CONCURRENT_POLLS


async def test_runs_skipped_while_a_poll_waits_out_the_rate_limit_are_counted_quietly(
    server: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    settings = daemon_settings(server, tmp_path, tenants=("tenant-1",), interval="200ms")
    caplog.set_level(logging.DEBUG)  # before the start: on a busy machine runs skip at once

    def skipped_runs() -> float:
        labels = {"tenant": "tenant-1", "kind": "max_instances"}
        return sample(daemon, "keywatch_scheduler_job_errors_total", **labels) or 0

    async with running(settings) as daemon:
        tenant.faults.add_status("api", None, 429, retry_after=1.0)
        before = skipped_runs()
        await eventually(lambda: skipped_runs() >= before + 3, what="skipped runs while waiting")
        tenant.faults.clear("api")
    skipped = [r for r in caplog.records if "still running" in r.getMessage()]
    assert skipped and {r.levelno for r in skipped} == {logging.DEBUG}
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and ("running instances" in r.getMessage() or "max instances" in r.getMessage())
    ]
    assert noisy == []


async def test_the_store_is_migrated_once_when_the_daemon_is_built(
    server: SimulatorServer, tmp_path: Path
) -> None:
    daemon = build_daemon(daemon_settings(server, tmp_path))
    migrated_again: list[str] = []
    daemon.store.migrate = lambda: migrated_again.append("migrate")  # type: ignore[method-assign]
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.wait_ready(), 15)
        baseline_saved = "tenant-1" in daemon.store.load_states()
    finally:
        await daemon.shutdown()
    assert migrated_again == []
    assert baseline_saved  # the schema was there: migrated by build_daemon
