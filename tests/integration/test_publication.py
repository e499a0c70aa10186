"""Publication truth over loopback: the daemon against the simulator's JWKS, custom domain,
/pem, /cer and mirrors. Every check both fires and stays quiet; the daemon and the simulator
share one clock, moved by the tests (no sleeping).

The tests of what is judged fetch on every poll (``publication_recheck: every_poll``, the
behaviour before the setting existed); the cadence of the default (``5m``) has tests of its
own at the end, which pass ``recheck=None``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

import monitor.poll
from monitor.daemon import Daemon
from monitor.model import Event, EventType, Severity, event_id
from monitor.poll import first_check_delay
from monitor.simulator import Simulator, SimulatorServer
from monitor.simulator.tenant import SimulatedTenant
from tests.support.daemon import daemon_settings, running, sample, stored_events

TENANT = "tenant-1"
PUBLICATION_EVENTS = {
    EventType.JWKS_MISMATCH,
    EventType.JWKS_CONSISTENT,
    EventType.MIRROR_STALE,
    EventType.MIRROR_SYNCED,
}


class SharedClock:
    """The wall clock of both the simulator and the daemon; only the test moves it."""

    def __init__(self) -> None:
        self.epoch = float(int(time.time()))

    def time(self) -> float:
        return self.epoch

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.epoch, UTC)

    def advance(self, seconds: float) -> None:
        self.epoch += seconds


@pytest.fixture
def clock() -> SharedClock:
    return SharedClock()


@pytest.fixture
def server(clock: SharedClock) -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator(tenants=1, key_pool_size=6, clock=clock.time)) as started:
        # fetched on every poll unless a test says otherwise
        started.simulator.tenant(TENANT).publication.jwks_max_age = 0
        yield started


@pytest.fixture
def tenant(server: SimulatorServer) -> SimulatedTenant:
    return server.simulator.tenant(TENANT)


@asynccontextmanager
async def watching(
    server: SimulatorServer,
    tmp_path: Path,
    clock: SharedClock,
    lines: str = "",
    *,
    recheck: str | None = "every_poll",
) -> AsyncIterator[Daemon]:
    """The daemon on the shared clock; ``recheck``: its ``publication_recheck`` (None: the
    default)."""
    if recheck is not None:
        lines = "\n".join(filter(None, [lines, f"    publication_recheck: {recheck}"]))
    settings = daemon_settings(server, tmp_path, extra_tenant_lines=lines)
    async with running(settings, now=clock.now) as daemon:
        yield daemon


def published_events(daemon: Daemon) -> list[Event]:
    return sorted(
        (e for e in stored_events(daemon) if e.type in PUBLICATION_EVENTS),
        key=lambda e: e.detected_at,
    )


async def poll(
    daemon: Daemon, clock: SharedClock, times: int = 1, *, every: float = 10
) -> list[Event]:
    found: list[Event] = []
    for _ in range(times):
        clock.advance(every)
        found += [e for e in await daemon.poll_tenant(TENANT) if e.type in PUBLICATION_EVENTS]
    return found


def jwks_url(server: SimulatorServer) -> str:
    return f"{server.tenant_url(TENANT)}/.well-known/jwks.json"


async def test_a_consistent_publication_raises_nothing_through_a_rotation(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    tenant.publication.add_mirror("gw", delay=0)
    custom = tenant.publication.add_custom_signing_key()
    base = server.tenant_url(TENANT)
    lines = (
        f"    jwks_urls: [{base}/custom-domain/.well-known/jwks.json]\n"
        f"    jwks_allow_extra_kids: [{custom}]\n"
        "    cert_endpoints: [pem, cer]\n"
        f"    mirrors: [{base}/__mirrors/gw/jwks.json]"
    )
    async with watching(server, tmp_path, clock, lines) as daemon:
        assert await poll(daemon, clock, 2) == []
        old = tenant.current_kid
        tenant.rotate()
        tenant.revoke(old)
        assert await poll(daemon, clock, 3) == []
        for source in ("jwks", f"jwks:{base.split('//')[1].split('/')[0]}"):
            for kid in (tenant.current_kid, tenant.next_kid):
                assert (
                    sample(
                        daemon, "auth0_signing_key_published", tenant=TENANT, kid=kid, source=source
                    )
                    == 1
                )
            assert (
                sample(daemon, "auth0_signing_key_published", tenant=TENANT, kid=old, source=source)
                == 0
            )
        for source in ("pem", "cer"):
            assert (
                sample(
                    daemon,
                    "auth0_signing_key_published",
                    tenant=TENANT,
                    kid=tenant.current_kid,
                    source=source,
                )
                == 1
            )
        mirror = f"{base}/__mirrors/gw/jwks.json"
        assert sample(daemon, "keywatch_mirror_in_sync", tenant=TENANT, mirror=mirror) == 1
        assert (
            sample(daemon, "keywatch_next_key_lead_seconds", tenant=TENANT, kid=tenant.current_kid)
            == 30
        )  # published as next at the first poll
        assert published_events(daemon) == []


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("no_next", "next_missing"),
        ("no_current", "current_missing"),
        ("bad_thumbprint", "x5t_mismatch"),
    ],
)
async def test_a_jwks_that_disagrees_pages_once_then_recovers_once(
    server: SimulatorServer,
    tenant: SimulatedTenant,
    tmp_path: Path,
    clock: SharedClock,
    kind: str,
    check: str,
) -> None:
    async with watching(server, tmp_path, clock) as daemon:
        tenant.malform_next(1, kind=kind, target="jwks")
        assert await poll(daemon, clock, 3) == []  # one odd answer never pages

        tenant.malform_next(None, kind=kind, target="jwks")
        [mismatch] = await poll(daemon, clock, 4)
        assert mismatch.type is EventType.JWKS_MISMATCH
        assert mismatch.severity is Severity.CRITICAL
        assert mismatch.details["source"] == "jwks"
        assert mismatch.details["url"] == jwks_url(server)
        assert mismatch.details["checks"].startswith(f"{check}:")

        tenant.clear_faults()
        [consistent] = await poll(daemon, clock, 3)
        assert consistent.type is EventType.JWKS_CONSISTENT
        assert [e.type for e in published_events(daemon)] == [
            EventType.JWKS_MISMATCH,
            EventType.JWKS_CONSISTENT,
        ]


async def test_a_revoked_key_still_published_is_a_mismatch(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock) as daemon:
        old = tenant.current_kid
        tenant.rotate()
        tenant.revoke(old)
        assert await poll(daemon, clock, 2) == []  # revoked and gone from the JWKS: quiet
        tenant.malform_next(None, kind="stale", target="jwks")
        [mismatch] = await poll(daemon, clock, 3)
        assert mismatch.details["checks"] == f"revoked_published:{old}"
        assert mismatch.kid == old


@pytest.mark.parametrize("allowed", [True, False])
async def test_custom_signing_keys_on_a_custom_domain(
    server: SimulatorServer,
    tenant: SimulatedTenant,
    tmp_path: Path,
    clock: SharedClock,
    allowed: bool,
) -> None:
    custom = tenant.publication.add_custom_signing_key()
    url = f"{server.tenant_url(TENANT)}/custom-domain/.well-known/jwks.json"
    lines = f"    jwks_urls: [{url}]"
    if allowed:
        lines += f"\n    jwks_allow_extra_kids: [{custom}]"
    async with watching(server, tmp_path, clock, lines) as daemon:
        found = await poll(daemon, clock, 3)
        if allowed:
            assert found == []
        else:
            [mismatch] = found
            assert mismatch.details["checks"] == f"unknown_kid:{custom}"
            assert mismatch.details["url"] == url
        source = f"jwks:{url.split('//')[1].split('/')[0]}"
        assert (
            sample(daemon, "auth0_signing_key_published", tenant=TENANT, kid=custom, source=source)
            == 1
        )
        assert (
            sample(daemon, "auth0_signing_key_published", tenant=TENANT, kid=custom, source="jwks")
            is None
        )  # never on the canonical domain (a kid unknown there has no series)


async def test_a_failing_jwks_fetch_is_counted_never_an_event(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock) as daemon:
        tenant.fail_next(None, status=503, target="jwks")
        assert await poll(daemon, clock, 4) == []
        errors = sample(
            daemon, "keywatch_jwks_fetch_errors_total", tenant=TENANT, reason="server_error"
        )
        assert errors == 4
        tenant.clear_faults()
        tenant.malform_next(None, kind="html", target="jwks")
        assert await poll(daemon, clock, 2) == []
        assert (
            sample(daemon, "keywatch_jwks_fetch_errors_total", tenant=TENANT, reason="malformed")
            == 2
        )
        assert sample(daemon, "keywatch_tenant_up", tenant=TENANT) == 1
        assert published_events(daemon) == []


async def test_cache_control_is_honoured_unless_the_management_api_changed(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    tenant.publication.jwks_max_age = 60
    async with watching(server, tmp_path, clock) as daemon:
        assert tenant.publication.requests_to("jwks") == 1  # the first poll
        await poll(daemon, clock, 5)  # 50 s: still fresh
        assert tenant.publication.requests_to("jwks") == 1
        tenant.rotate()
        await poll(daemon, clock)  # a change: fetched at once
        assert tenant.publication.requests_to("jwks") == 2
        await poll(daemon, clock, 6)  # 60 s later it is stale: fetched once more
        assert tenant.publication.requests_to("jwks") == 3

        tenant.publication.jwks_max_age = 0
        clock.advance(60)
        await poll(daemon, clock, 3)
        assert (
            tenant.publication.requests_to("jwks") == 6
        )  # no max-age: one fetch per poll, never more


async def test_a_pinned_old_certificate_at_pem_is_a_mismatch(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock, "    cert_endpoints: [pem, cer]") as daemon:
        tenant.rotate()
        assert await poll(daemon, clock, 2) == []
        tenant.malform_next(None, kind="stale", target="pem")
        [mismatch] = await poll(daemon, clock, 3)
        assert mismatch.details["source"] == "pem"
        assert mismatch.details["checks"] == f"cert_mismatch:{tenant.current_kid}"
        assert tenant.publication.requests_to("cer") == tenant.publication.requests_to("pem")


async def test_a_mirror_lagging_then_catching_up(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    tenant.publication.add_mirror("gw", delay=25)
    mirror = f"{server.tenant_url(TENANT)}/__mirrors/gw/jwks.json"
    async with watching(server, tmp_path, clock, f"    mirrors: [{mirror}]") as daemon:
        assert await poll(daemon, clock) == []
        tenant.rotate()  # at T; each poll moves the clock 10 s first
        assert await poll(daemon, clock) == []  # T+10: the change seen, the mirror behind
        [stale] = await poll(daemon, clock)  # T+20: believed
        assert stale.type is EventType.MIRROR_STALE
        assert stale.severity is Severity.WARNING  # it has the new current key, not the next
        assert stale.details["checks"] == f"next_missing:{tenant.next_kid}"
        assert sample(daemon, "keywatch_mirror_in_sync", tenant=TENANT, mirror=mirror) == 0
        assert sample(daemon, "keywatch_mirror_lag_seconds", tenant=TENANT, mirror=mirror) == 10
        [synced] = await poll(daemon, clock)  # T+30: the mirror followed at T+25
        assert synced.type is EventType.MIRROR_SYNCED
        lag = sample(daemon, "keywatch_mirror_lag_seconds", tenant=TENANT, mirror=mirror)
        # measured from the poll that saw the change: the true 25 s within one poll interval
        assert lag == 20
        assert synced.details["lag_seconds"] == "20"
        assert sample(daemon, "keywatch_mirror_in_sync", tenant=TENANT, mirror=mirror) == 1


async def test_a_mirror_that_never_catches_up_turns_critical(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    tenant.publication.add_mirror("frozen", delay=None)
    mirror = f"{server.tenant_url(TENANT)}/__mirrors/frozen/jwks.json"
    async with watching(server, tmp_path, clock, f"    mirrors: [{mirror}]") as daemon:
        assert await poll(daemon, clock, 2) == []
        tenant.rotate()
        [warning] = await poll(daemon, clock, 3)
        assert (warning.type, warning.severity) == (EventType.MIRROR_STALE, Severity.WARNING)
        tenant.rotate()  # the mirror now lacks the current key too
        [critical] = await poll(daemon, clock, 3)
        assert (critical.type, critical.severity) == (EventType.MIRROR_STALE, Severity.CRITICAL)
        assert f"current_missing:{tenant.current_kid}" in critical.details["checks"]
        assert await poll(daemon, clock, 3) == []
        assert sample(daemon, "keywatch_mirror_in_sync", tenant=TENANT, mirror=mirror) == 0
        lag = sample(daemon, "keywatch_mirror_lag_seconds", tenant=TENANT, mirror=mirror)
        assert lag is not None and lag >= 60


async def test_publication_episodes_survive_a_restart(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock) as daemon:
        tenant.malform_next(None, kind="no_next", target="jwks")
        [mismatch] = await poll(daemon, clock, 2)
    async with watching(server, tmp_path, clock) as daemon:  # restarted mid-episode
        assert await poll(daemon, clock, 2) == []
        tenant.clear_faults()
    # the episode ended while keywatch was stopped: the first poll after the start recovers it
    async with watching(server, tmp_path, clock) as daemon:
        tenant.malform_next(None, kind="no_next", target="jwks")
        [again] = await poll(daemon, clock, 2)  # a new episode against the same snapshot
        first, consistent, second = published_events(daemon)
    assert (first.id, second.id) == (mismatch.id, again.id)
    assert again.type is EventType.JWKS_MISMATCH and again.id != mismatch.id
    assert consistent.type is EventType.JWKS_CONSISTENT
    assert consistent.id == event_id(TENANT, EventType.JWKS_CONSISTENT, mismatch.id)


async def test_a_mirror_that_caught_up_during_a_restart_is_synced_with_its_lag(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    tenant.publication.add_mirror("gw", delay=45)
    lines = f"    mirrors: [{server.tenant_url(TENANT)}/__mirrors/gw/jwks.json]"
    async with watching(server, tmp_path, clock, lines) as daemon:
        assert await poll(daemon, clock) == []
        tenant.rotate()  # at T
        assert await poll(daemon, clock) == []  # T+10: the change seen, the mirror behind
        [stale] = await poll(daemon, clock)  # T+20
        assert stale.type is EventType.MIRROR_STALE
    clock.advance(40)  # the mirror follows at T+45, while keywatch is stopped
    async with watching(server, tmp_path, clock, lines) as daemon:  # its first poll at T+60
        assert [e.type for e in published_events(daemon)] == [
            EventType.MIRROR_STALE,
            EventType.MIRROR_SYNCED,
        ]
        synced = published_events(daemon)[1]
    assert synced.details["lag_seconds"] == "50"  # from the poll that saw the change


# --- the cadence of the default ``publication_recheck`` (5m), polls every 60 s --------------

MINUTE = 60.0
RECHECK_POLLS = 5  # 5m / 60 s


async def polls_until_event(daemon: Daemon, clock: SharedClock, most: int) -> tuple[int, Event]:
    """Polls 60 s apart until one raises a publication event: how many it took, the event."""
    for count in range(1, most + 1):
        found = await poll(daemon, clock, every=MINUTE)
        if found:
            [event] = found
            return count, event
    raise AssertionError(f"no publication event within {most} polls")


@pytest.fixture
def spread_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's one tenant checks what it publishes as a fleet's tenant does: its first
    check spread over the first ``publication_recheck``."""
    monkeypatch.setattr(monitor.poll, "SPREAD_FIRST_CHECKS_ABOVE", 0)


async def first_check(daemon: Daemon, tenant: SimulatedTenant, clock: SharedClock) -> None:
    """Polls 60 s apart until the tenant's first publication check, which is due
    ``first_check_delay`` after its first poll (a fixed part of the recheck, by its name)."""
    due = first_check_delay(TENANT, RECHECK_POLLS * MINUTE)
    assert tenant.publication.requests_to("jwks") == 0  # not at the first poll
    polls = 0
    while tenant.publication.requests_to("jwks") == 0:
        assert polls * MINUTE < due  # each poll before it is due fetches nothing
        await poll(daemon, clock, every=MINUTE)
        polls += 1
    assert polls * MINUTE >= due  # the first poll once it was due


async def test_a_small_fleet_checks_what_it_publishes_at_the_first_poll(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock, recheck=None) as daemon:
        await poll(daemon, clock, every=MINUTE)
        assert tenant.publication.requests_to("jwks") == 1
        current = tenant.current_kid
        assert (
            sample(daemon, "auth0_signing_key_published", tenant=TENANT, kid=current, source="jwks")
            == 1
        )


@pytest.mark.usefixtures("spread_fleet")
async def test_a_settled_publication_is_fetched_once_per_recheck_not_every_poll(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    tenant.publication.add_mirror("gw", delay=0)
    mirror = f"{server.tenant_url(TENANT)}/__mirrors/gw/jwks.json"
    async with watching(server, tmp_path, clock, f"    mirrors: [{mirror}]", recheck=None) as d:
        await first_check(d, tenant, clock)
        assert tenant.publication.requests_to("jwks") == 1
        assert await poll(d, clock, 2 * RECHECK_POLLS, every=MINUTE) == []
        # fetched again at 5 and 10 minutes, not at each of the 10 polls
        assert tenant.publication.requests_to("jwks") == 3
        assert tenant.publication.requests_to("mirror:gw") == 3
        assert sample(d, "keywatch_mirror_in_sync", tenant=TENANT, mirror=mirror) == 1


async def test_after_a_change_every_poll_fetches_for_one_recheck_then_the_cadence_resumes(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock, recheck=None) as daemon:
        await poll(daemon, clock, every=MINUTE)
        before = tenant.publication.requests_to("jwks")
        tenant.rotate()
        for count in range(1, RECHECK_POLLS + 1):  # the change, then 4 polls within 5m of it
            assert await poll(daemon, clock, every=MINUTE) == []
            assert tenant.publication.requests_to("jwks") == before + count
        assert await poll(daemon, clock, RECHECK_POLLS - 1, every=MINUTE) == []
        assert tenant.publication.requests_to("jwks") == before + RECHECK_POLLS
        await poll(daemon, clock, every=MINUTE)  # 5m after the last fetch
        assert tenant.publication.requests_to("jwks") == before + RECHECK_POLLS + 1


async def test_a_publication_going_wrong_on_its_own_is_believed_within_recheck_and_a_poll(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock, recheck=None) as daemon:
        tenant.malform_next(None, kind="no_next", target="jwks")  # no Management API change
        count, mismatch = await polls_until_event(daemon, clock, most=2 * RECHECK_POLLS)
        # seen by the fetch due at 5m, believed by the next poll's (confirm polls: 2)
        assert count == RECHECK_POLLS + 1
        assert mismatch.type is EventType.JWKS_MISMATCH
        fetched = tenant.publication.requests_to("jwks")
        tenant.clear_faults()  # an open episode is fetched on every poll: recovered at once
        [consistent] = await poll(daemon, clock, every=MINUTE)
        assert consistent.type is EventType.JWKS_CONSISTENT
        assert tenant.publication.requests_to("jwks") == fetched + 1


@pytest.mark.usefixtures("spread_fleet")
async def test_a_due_fetch_that_fails_is_retried_each_poll_and_counted_never_an_event(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock, recheck=None) as daemon:
        await first_check(daemon, tenant, clock)
        tenant.fail_next(None, status=503, target="jwks")
        assert await poll(daemon, clock, RECHECK_POLLS + 2, every=MINUTE) == []
        errors = sample(
            daemon, "keywatch_jwks_fetch_errors_total", tenant=TENANT, reason="server_error"
        )
        assert errors == 3  # due at 5m, then retried on each poll until one succeeds
        tenant.clear_faults()
        await poll(daemon, clock, RECHECK_POLLS - 1, every=MINUTE)
        assert tenant.publication.requests_to("jwks") == 1 + 3 + 1  # fetched, then settled
        assert sample(daemon, "keywatch_tenant_up", tenant=TENANT) == 1
        assert published_events(daemon) == []


async def test_an_episode_open_at_a_restart_is_fetched_on_every_poll_with_the_same_ids(
    server: SimulatorServer, tenant: SimulatedTenant, tmp_path: Path, clock: SharedClock
) -> None:
    async with watching(server, tmp_path, clock, recheck=None) as daemon:
        tenant.malform_next(None, kind="no_next", target="jwks")
        _, mismatch = await polls_until_event(daemon, clock, most=2 * RECHECK_POLLS)
    async with watching(server, tmp_path, clock, recheck=None) as daemon:  # restarted
        fetched = tenant.publication.requests_to("jwks")
        assert await poll(daemon, clock, 2, every=MINUTE) == []  # the same episode: no event
        assert tenant.publication.requests_to("jwks") == fetched + 2
        tenant.clear_faults()
        [consistent] = await poll(daemon, clock, every=MINUTE)
        stored = [(e.type, e.id) for e in published_events(daemon)]
    assert consistent.id == event_id(TENANT, EventType.JWKS_CONSISTENT, mismatch.id)
    assert stored == [
        (EventType.JWKS_MISMATCH, mismatch.id),
        (EventType.JWKS_CONSISTENT, consistent.id),
    ]
