"""One contract suite for every state store (SQLite on a temp file, PostgreSQL in a fresh
schema), then what only one backend or ``open_store`` itself promises.

PostgreSQL comes from KEYWATCH_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/
test). When it is unreachable its tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import FencedOut, StoreError
from monitor.model import (
    EpisodeState,
    Event,
    EventType,
    KeyState,
    Severity,
    Snapshot,
    TenantState,
    event_to_json,
    make_event,
)
from monitor.reachability import Reachability, after_success
from monitor.store import migrations, open_store, redact_url
from monitor.store.base import Fence, LeaseInfo, OutboxStats, PollWrite, Pruned, Store
from monitor.store.sqlite import SQLiteStore
from tests.support.snapshots import outage

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


# --- values ----------------------------------------------------------------------------------


def key(kid: str, **changes: Any) -> KeyState:
    sha1 = hashlib.sha1(kid.encode()).hexdigest().upper()
    fields: dict[str, Any] = {
        "kid": kid,
        "thumbprint": sha1,
        "fingerprint": ":".join(sha1[i : i + 2] for i in range(0, 40, 2)),
        "cert_sha1": sha1,
        "not_before": T0 - timedelta(days=30),
        "not_after": T0 + timedelta(days=365, microseconds=123),
        "key_size": 2048,
    }
    return KeyState(**(fields | changes))


def full_key(kid: str) -> KeyState:
    """Every field set, datetimes in two time zones and with microseconds."""
    return key(
        kid,
        current=False,
        next=False,
        previous=True,
        revoked=True,
        current_since=datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        current_until=datetime(2025, 2, 3, 4, 5, 6, tzinfo=PLUS_TWO),
        revoked_at=datetime(2025, 2, 28, 23, 59, 59, 999999, tzinfo=UTC),
        not_before=datetime(2023, 12, 31, tzinfo=UTC),
        not_after=datetime(2033, 12, 31, 12, 30, tzinfo=PLUS_TWO),
        key_size=4096,
    )


def snapshot(tenant: str, taken_at: datetime = T0, *keys: KeyState) -> Snapshot:
    keys = keys or (key(f"{tenant}-current", current=True), key(f"{tenant}-next", next=True))
    return Snapshot(tenant=tenant, taken_at=taken_at, keys={k.kid: k for k in keys})


def event(tenant: str, kid: str, detected_at: datetime = T0, **extra: Any) -> Event:
    return make_event(
        tenant,
        EventType.KEY_REVOKED,
        detected_at,
        [kid, "previous", "revoked"],
        kid=kid,
        details=extra.pop("details", {"old_state": "previous", "new_state": "revoked"}),
    )


# --- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    """Opens stores on one database: a new store on the same URL is a reopen."""

    name: str
    url: str
    opened: list[Store]

    def open(self, *, migrate: bool = True) -> Store:
        store = open_store(self.url, migrate=migrate)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'keywatch.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened: list[Store] = []
    yield Backend(request.param, url, opened)
    for store in opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def all_events(store: Store) -> list[Event]:
    return store.recent_events(limit=10_000)


# --- schema ----------------------------------------------------------------------------------


def test_migrate_is_idempotent(backend: Backend) -> None:
    store = backend.open(migrate=False)
    store.migrate()
    store.save_poll(snapshot("prod"), [event("prod", "k1")], [(event("prod", "k1").id, "a")])
    store.migrate()
    store.migrate()
    assert schema_versions(backend) == list(range(1, migrations.latest_version() + 1))
    assert store.load_snapshot("prod") == snapshot("prod")
    assert store.delivery_counts() == {("a", "pending"): 1}


def test_a_new_migration_is_applied_once(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = backend.open()
    extra = ("CREATE TABLE extra_table (id INTEGER PRIMARY KEY, at {timestamp})",)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, extra))
    store.migrate()
    store.migrate()
    latest = migrations.latest_version()
    assert schema_versions(backend) == list(range(1, latest + 1))
    assert store_query(backend, "SELECT COUNT(*) FROM extra_table") == [(0,)]


def test_a_failing_migration_leaves_no_trace(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.open()
    broken = ("CREATE TABLE half_done (id INTEGER)", "CREATE TABLE broken (")
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    with pytest.raises(StoreError, match=f"migration {migrations.latest_version()} failed"):
        store.migrate()
    assert schema_versions(backend) == list(range(1, migrations.latest_version()))
    assert not table_exists(backend, "half_done")


def test_concurrent_migrations_apply_each_migration_once(backend: Backend) -> None:
    stores = [backend.open(migrate=False) for _ in range(4)]
    failures: list[BaseException] = []

    def migrate(store: Store) -> None:
        try:
            store.migrate()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=migrate, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert schema_versions(backend) == list(range(1, migrations.latest_version() + 1))


def test_an_outbox_of_schema_1_is_upgraded_in_place(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:1])
    backend.open()
    first = event("prod", "k1")
    at: object = T0.isoformat(timespec="microseconds") if backend.name == "sqlite" else T0
    json_type = "TEXT" if backend.name == "sqlite" else "JSONB"
    store_query(
        backend,
        "INSERT INTO events (id, tenant, type, severity, detected_at, body) "
        f"VALUES (?, 'prod', 'key.revoked', 'critical', ?, CAST(? AS {json_type})) RETURNING id",
        (first.id, at, event_to_json(first)),
    )
    store_query(
        backend,
        "INSERT INTO deliveries (event_id, destination, state, attempts, next_attempt_at, "
        "created_at) VALUES (?, 'chat', 'pending', 2, ?, ?) RETURNING event_id",
        (first.id, at, at),
    )
    monkeypatch.undo()
    upgraded = backend.open()
    [queued] = upgraded.queued_deliveries("chat", limit=5)
    assert (queued.event, queued.attempts, queued.failures) == (first, 2, 0)
    assert upgraded.outbox_stats() == {"chat": OutboxStats(pending=1, oldest_pending_at=T0)}


def test_a_schema_newer_than_the_code_is_refused(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.open()
    monkeypatch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:-1])
    with pytest.raises(StoreError, match="newer than this keywatch knows"):
        backend.open()


def test_ping_answers_and_a_closed_store_does_not(store: Store) -> None:
    store.ping()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.ping()
    store.close()  # twice is fine


def refuse_writes(store: Store, refuse: bool) -> None:
    """Make the store's own connection read-only, as SQLite and PostgreSQL do themselves (the
    real errors: "attempt to write a readonly database", "read-only transaction")."""
    with store._session("test", write=False) as session:  # type: ignore[attr-defined]
        if isinstance(store, SQLiteStore):
            session.execute(f"PRAGMA query_only = {'ON' if refuse else 'OFF'}")
        else:
            session.execute(f"SET default_transaction_read_only = {'on' if refuse else 'off'}")


def test_ping_fails_after_a_failed_write_until_a_write_works(store: Store) -> None:
    store.save_poll(snapshot("prod"), [])
    refuse_writes(store, True)
    with pytest.raises(StoreError, match=r"save_poll of tenant 'dev' failed.*read"):
        store.save_poll(snapshot("dev"), [])
    with pytest.raises(StoreError, match=r"the last write failed: .*read"):
        store.ping()
    assert store.load_snapshots() == {"prod": snapshot("prod")}  # reads still work
    refuse_writes(store, False)
    with pytest.raises(StoreError, match="the last write failed"):
        store.ping()  # not until a write shows it
    store.save_poll(snapshot("dev"), [])
    store.ping()


# --- snapshots -------------------------------------------------------------------------------


def test_snapshot_round_trips_every_field(store: Store) -> None:
    original = snapshot(
        "prod",
        datetime(2025, 3, 1, 14, 0, 0, 1, tzinfo=PLUS_TWO),
        full_key("k-revoked"),
        key("k-current", current=True, current_since=T0, key_size=None, not_after=None),
    )
    store.save_poll(original, [])
    loaded = store.load_snapshot("prod")
    assert loaded == original
    assert loaded is not None
    assert loaded.keys["k-revoked"].revoked_at == datetime(
        2025, 2, 28, 23, 59, 59, 999999, tzinfo=UTC
    )
    assert loaded.taken_at.utcoffset() is not None


def test_a_newer_snapshot_replaces_the_last(store: Store) -> None:
    store.save_poll(snapshot("prod", T0), [])
    rotated = snapshot("prod", T0 + timedelta(minutes=1), key("k2", current=True))
    store.save_poll(rotated, [])
    assert store.load_snapshot("prod") == rotated
    assert store.load_snapshot("unknown") is None


def test_load_snapshots_returns_every_tenant(store: Store) -> None:
    assert store.load_snapshots() == {}
    for tenant in ("prod", "dev", "stage"):
        store.save_poll(snapshot(tenant), [])
    loaded = store.load_snapshots()
    assert sorted(loaded) == ["dev", "prod", "stage"]
    assert loaded["stage"] == snapshot("stage")


def test_a_pending_answer_and_the_last_current_kids_survive_a_reopen(backend: Backend) -> None:
    confirmed = snapshot("prod", T0, key("k1", current=True), key("k2", next=True))
    gap = snapshot("prod", T0 + timedelta(minutes=1), key("k1"), key("k2", next=True))
    state = TenantState(confirmed, last_current=("k1",), pending=gap, pending_polls=1)
    backend.open().save_poll(state, [])
    reopened = backend.open()
    assert reopened.load_states() == {"prod": state}
    assert reopened.load_snapshot("prod") == confirmed  # the confirmed one, not the pending
    believed = TenantState.confirmed(confirmed)
    reopened.save_poll(believed, [])
    assert reopened.load_states() == {"prod": believed}


def test_a_snapshot_saved_before_confirmation_existed_loads_as_believed(
    backend: Backend,
) -> None:
    store = backend.open()
    store.save_poll(snapshot("prod", T0, key("k1", current=True)), [])
    store_query(
        backend, "UPDATE snapshots SET confirmation = NULL RETURNING tenant"
    )  # as after migration 3
    assert store.load_states() == {
        "prod": TenantState(snapshot("prod", T0, key("k1", current=True)), last_current=("k1",))
    }


def test_the_hygiene_findings_raised_survive_a_reopen(backend: Backend) -> None:
    state = TenantState(snapshot("prod"), last_current=("prod-current",), alerted=frozenset("ab"))
    backend.open().save_poll(state, [])
    assert backend.open().load_states() == {"prod": state}


def test_the_publication_episodes_survive_a_reopen(backend: Backend) -> None:
    episode = EpisodeState(2, "open-id", Severity.CRITICAL, T0, 1, T0 + timedelta(minutes=1))
    state = TenantState(snapshot("prod"), publication={"jwks https://prod/jwks": episode})
    backend.open().save_poll(state, [])
    assert backend.open().load_states() == {"prod": state}


# --- reachability ----------------------------------------------------------------------------


def test_a_reachable_tenant_has_no_stored_run(store: Store) -> None:
    assert store.load_reachability("prod") == Reachability("prod")


def test_a_run_of_failures_survives_a_reopen_and_a_success_clears_it(backend: Backend) -> None:
    counting, _ = outage(1)
    assert backend.open().save_reachability(counting, []) == []
    down, [unreachable] = outage(2)
    assert backend.open().save_reachability(down, [unreachable], [(unreachable.id, "ops")]) == [
        unreachable
    ]
    reopened = backend.open()
    assert reopened.load_reachability("prod") == down
    assert reopened.load_reachability("staging") == Reachability("staging")
    assert reopened.delivery_counts() == {("ops", "pending"): 1}
    [delivery] = reopened.pending_deliveries("ops", T0 + timedelta(hours=1), limit=10)
    assert delivery.event == unreachable and delivery.created_at == unreachable.detected_at
    healthy, [recovered] = after_success(down, at=T0 + timedelta(minutes=5))
    assert reopened.save_reachability(healthy, [recovered]) == [recovered]
    assert reopened.load_reachability("prod") == Reachability("prod")
    assert [e.type for e in all_events(reopened)] == [
        EventType.TENANT_RECOVERED,
        EventType.TENANT_UNREACHABLE,
    ]


def test_load_reachabilities_reads_every_stored_run_and_no_reachable_tenant(
    backend: Backend,
) -> None:
    store = backend.open()
    assert store.load_reachabilities() == {}
    down, _ = outage(2)
    counting = replace(outage(1)[0], tenant="staging")
    store.save_reachability(down, [])
    store.save_reachability(counting, [])
    store.save_reachability(Reachability("dev"), [])  # reachable: nothing stored
    reopened = backend.open()
    assert reopened.load_reachabilities() == {"prod": down, "staging": counting}
    assert reopened.load_reachabilities() == {
        name: reopened.load_reachability(name) for name in ("prod", "staging")
    }
    reopened.save_reachability(Reachability("prod"), [])
    assert reopened.load_reachabilities() == {"staging": counting}


def test_the_same_outage_saved_twice_is_one_event(store: Store) -> None:
    down, [unreachable] = outage(2)
    store.save_reachability(down, [unreachable], [(unreachable.id, "ops")])
    assert store.save_reachability(down, [unreachable], [(unreachable.id, "ops")]) == []
    assert store.delivery_counts() == {("ops", "pending"): 1}


def test_an_unreadable_stored_run_is_a_store_error(backend: Backend) -> None:
    store = backend.open()
    store.save_reachability(outage(1)[0], [])
    store_query(backend, "UPDATE reachability SET body = '{}' RETURNING tenant")
    with pytest.raises(StoreError, match="reachability of tenant 'prod' is unreadable"):
        store.load_reachability("prod")
    with pytest.raises(StoreError, match="reachability of tenant 'prod' is unreadable"):
        store.load_reachabilities()


# --- save_poll -------------------------------------------------------------------------------


def test_save_poll_returns_only_new_events(store: Store) -> None:
    first, second = event("prod", "k1"), event("prod", "k2")
    assert store.save_poll(snapshot("prod"), [first]) == [first]
    duplicate_in_batch = [first, second, second]
    assert store.save_poll(snapshot("prod"), duplicate_in_batch) == [second]
    assert store.save_poll(snapshot("prod"), [first, second]) == []
    assert sorted(e.id for e in all_events(store)) == sorted([first.id, second.id])


def test_a_failure_inside_the_transaction_writes_nothing(store: Store) -> None:
    new = event("prod", "k1")
    deliveries = [(new.id, "secops"), ("no-such-event", "secops")]  # breaks the foreign key
    with pytest.raises(StoreError, match="save_poll of tenant 'prod' failed") as caught:
        store.save_poll(snapshot("prod"), [new], deliveries)
    assert caught.value.__cause__ is not None
    assert store.load_snapshot("prod") is None
    assert all_events(store) == []
    assert store.delivery_counts() == {}
    assert store.save_poll(snapshot("prod"), [new], deliveries[:1]) == [new]  # still usable


def test_an_unserialisable_event_writes_nothing(store: Store) -> None:
    store.save_poll(snapshot("prod", T0), [])
    broken = event("prod", "k2", details={"oops": object()})
    later = snapshot("prod", T0 + timedelta(minutes=1), key("k9", current=True))
    with pytest.raises(StoreError, match="cannot serialise") as caught:
        store.save_poll(later, [event("prod", "k1"), broken], [(broken.id, "a")])
    assert isinstance(caught.value.__cause__, TypeError)
    assert store.load_snapshot("prod") == snapshot("prod", T0)
    assert all_events(store) == []


def test_save_polls_commits_many_polls_and_returns_each_ones_new_events(store: Store) -> None:
    known = event("prod", "k1")
    store.save_poll(snapshot("prod", T0), [known])
    fresh, other = event("prod", "k2"), event("dev", "k3")
    assert store.save_polls([]) == []
    polls = [
        PollWrite(
            TenantState.confirmed(snapshot("prod", T0 + timedelta(minutes=1))), [known, fresh]
        ),
        PollWrite(TenantState.confirmed(snapshot("dev")), [other], [(other.id, "chat")]),
        PollWrite(TenantState.confirmed(snapshot("qa")), []),
    ]
    assert store.save_polls(polls) == [[fresh], [other], []]
    assert store.load_states() == {poll.state.tenant: poll.state for poll in polls}
    assert sorted(e.id for e in all_events(store)) == sorted([known.id, fresh.id, other.id])
    assert store.delivery_counts() == {("chat", "pending"): 1}


def test_a_failure_in_one_poll_of_a_batch_writes_none_of_them(store: Store) -> None:
    good = PollWrite(TenantState.confirmed(snapshot("dev")), [event("dev", "k1")])
    new = event("prod", "k1")
    broken = PollWrite(  # a delivery of an unknown event breaks the foreign key
        TenantState.confirmed(snapshot("prod")), [new], [(new.id, "a"), ("no-such-event", "a")]
    )
    with pytest.raises(StoreError, match="save_polls of 2 tenants failed"):
        store.save_polls([good, broken])
    unserialisable = event("prod", "k2", details={"oops": object()})
    with pytest.raises(StoreError, match="tenant 'prod' failed: cannot serialise"):
        store.save_polls(
            [good, PollWrite(TenantState.confirmed(snapshot("prod")), [unserialisable])]
        )
    assert (store.load_states(), all_events(store), store.delivery_counts()) == ({}, [], {})
    assert store.save_polls([good]) == [list(good.events)]  # still usable


def test_a_closed_store_refuses_to_save(store: Store) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.save_poll(snapshot("prod"), [event("prod", "k1")])


def test_concurrent_polls_from_threads_all_land(store: Store) -> None:
    failures: list[BaseException] = []

    def poll(tenant: str) -> None:
        try:
            for minute in range(10):
                at = T0 + timedelta(minutes=minute)
                store.save_poll(snapshot(tenant, at), [event(tenant, f"k{minute}", at)])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=poll, args=(f"t{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert len(all_events(store)) == 60
    assert {s.taken_at for s in store.load_snapshots().values()} == {T0 + timedelta(minutes=9)}


def test_recent_events_newest_first_and_by_tenant(store: Store) -> None:
    times = [T0 + timedelta(minutes=m) for m in (5, 1, 3)]
    prod = [event("prod", f"k{n}", at) for n, at in enumerate(times)]
    dev = event("dev", "kd", T0 + timedelta(minutes=2))
    store.save_poll(snapshot("prod"), prod)
    store.save_poll(snapshot("dev"), [dev])
    newest_first = [e.detected_at for e in store.recent_events()]
    assert newest_first == sorted(newest_first, reverse=True)
    assert [e.tenant for e in store.recent_events()] == ["prod", "prod", "dev", "prod"]
    assert store.recent_events("dev") == [dev]
    assert store.recent_events("prod", limit=2) == [prod[0], prod[2]]
    assert store.recent_events(limit=0) == []


# --- the outbox ------------------------------------------------------------------------------


def test_deliveries_are_created_pending_once(store: Store) -> None:
    first = event("prod", "k1")
    pairs = [(first.id, "secops"), (first.id, "audit")]
    store.save_poll(snapshot("prod"), [first], pairs)
    store.save_poll(snapshot("prod"), [first], pairs)
    assert store.delivery_counts() == {("secops", "pending"): 1, ("audit", "pending"): 1}
    [delivery] = store.pending_deliveries("secops", T0, limit=10)
    assert delivery.event == first
    assert (delivery.destination, delivery.state, delivery.attempts) == ("secops", "pending", 0)
    assert delivery.created_at == delivery.next_attempt_at == T0
    assert (delivery.delivered_at, delivery.last_error) == (None, None)
    assert store.oldest_pending_at() == T0


def test_pending_deliveries_are_fifo_by_detection_time(store: Store) -> None:
    # UTC+2 text would sort after UTC text of a later instant: ordering must use instants
    early = event("prod", "k-early", datetime(2025, 3, 1, 13, 0, tzinfo=PLUS_TWO))
    middle = event("prod", "k-middle", datetime(2025, 3, 1, 11, 30, tzinfo=UTC))
    late = event("prod", "k-late", datetime(2025, 3, 1, 12, 0, tzinfo=UTC))
    same_time = [event("prod", f"k-tie{n}", late.detected_at) for n in range(3)]
    events = [late, *same_time, middle, early]
    store.save_poll(snapshot("prod"), events, [(e.id, "chat") for e in events])
    due = store.pending_deliveries("chat", T0, limit=100)
    ties = sorted([late, *same_time], key=lambda e: e.id)
    assert [d.event for d in due] == [early, middle, *ties]
    assert [d.event for d in store.pending_deliveries("chat", T0, limit=2)] == [early, middle]
    assert store.pending_deliveries("other", T0, limit=100) == []


def test_only_due_deliveries_are_pending(store: Store) -> None:
    first = event("prod", "k1")
    store.save_poll(snapshot("prod", T0), [first], [(first.id, "chat")])
    assert store.pending_deliveries("chat", T0 - timedelta(seconds=1), limit=10) == []
    retry_at = T0 + timedelta(seconds=30)
    store.mark_failed(first.id, "chat", error="HTTP 503", retry_at=retry_at)
    assert store.pending_deliveries("chat", retry_at - timedelta(microseconds=1), limit=10) == []
    [delivery] = store.pending_deliveries("chat", retry_at.astimezone(PLUS_TWO), limit=10)
    assert (delivery.attempts, delivery.last_error) == (1, "HTTP 503")
    assert delivery.next_attempt_at == retry_at


def test_mark_delivered(backend: Backend, store: Store) -> None:
    first = event("prod", "k1")
    store.save_poll(snapshot("prod"), [first], [(first.id, "chat"), (first.id, "audit")])
    store.mark_failed(first.id, "chat", error="timeout", retry_at=T0)
    delivered_at = T0 + timedelta(seconds=5)
    store.mark_delivered(first.id, "chat", delivered_at)
    store.mark_delivered(first.id, "chat", delivered_at + timedelta(hours=1))  # no-op
    store.mark_failed(first.id, "chat", error="late", retry_at=None)  # no-op: not pending
    assert store.pending_deliveries("chat", T0 + timedelta(days=1), limit=10) == []
    assert store.delivery_counts() == {("chat", "delivered"): 1, ("audit", "pending"): 1}
    assert delivery_row(backend, first.id, "chat")[:2] == ("delivered", 2)
    with pytest.raises(StoreError, match="no delivery of event"):
        store.mark_delivered(first.id, "nowhere", delivered_at)


def test_mark_failed_without_retry_is_dead(backend: Backend, store: Store) -> None:
    first = event("prod", "k1")
    store.save_poll(snapshot("prod"), [first], [(first.id, "chat")])
    store.mark_failed(first.id, "chat", error="HTTP 404 " + "x" * 5000, retry_at=None)
    assert store.pending_deliveries("chat", T0 + timedelta(days=365), limit=10) == []
    assert store.delivery_counts() == {("chat", "dead"): 1}
    assert store.oldest_pending_at() is None
    state, attempts, last_error = delivery_row(backend, first.id, "chat")
    assert (state, attempts) == ("dead", 1)
    assert str(last_error).startswith("HTTP 404 x") and len(str(last_error)) <= 1000
    with pytest.raises(StoreError, match="no delivery of event"):
        store.mark_failed("nope", "chat", error="x", retry_at=None)


def test_delivery_counts_by_destination_and_state(store: Store) -> None:
    events = [event("prod", f"k{n}", T0 + timedelta(seconds=n)) for n in range(4)]
    pairs = [(e.id, d) for e in events for d in ("chat", "audit")]
    store.save_poll(snapshot("prod"), events, pairs)
    store.mark_delivered(events[0].id, "chat", T0)
    store.mark_delivered(events[1].id, "chat", T0)
    store.mark_failed(events[2].id, "chat", error="gone", retry_at=None)
    store.mark_failed(events[0].id, "audit", error="slow", retry_at=T0 + timedelta(minutes=1))
    assert store.delivery_counts() == {
        ("chat", "delivered"): 2,
        ("chat", "dead"): 1,
        ("chat", "pending"): 1,
        ("audit", "pending"): 4,
    }


def test_the_queue_holds_due_and_waiting_deliveries_in_send_order(store: Store) -> None:
    # within one poll the order of the events is kept (a rotation before the revocation it
    # caused); across polls the detection time decides
    later = T0 + timedelta(minutes=1)
    one_poll = [event("prod", kid, later) for kid in ("k-z", "k-a", "k-m")]
    earlier = event("prod", "k-early", T0)
    store.save_poll(snapshot("prod", later), one_poll, [(e.id, "chat") for e in one_poll])
    store.save_poll(snapshot("prod", T0), [earlier], [(earlier.id, "chat")])
    store.mark_failed(earlier.id, "chat", error="HTTP 503", retry_at=T0 + timedelta(days=1))
    queue = store.queued_deliveries("chat", limit=10)
    assert [d.event for d in queue] == [earlier, *one_poll]
    assert (queue[0].attempts, queue[0].failures, queue[0].last_error) == (1, 1, "HTTP 503")
    assert [d.event for d in store.queued_deliveries("chat", limit=2)] == [earlier, one_poll[0]]
    store.mark_delivered(one_poll[0].id, "chat", later)
    store.mark_failed(one_poll[1].id, "chat", error="HTTP 404", retry_at=None)
    assert [d.event for d in store.queued_deliveries("chat", limit=10)] == [earlier, one_poll[2]]
    assert store.queued_deliveries("other", limit=10) == []


def test_a_throttled_attempt_is_counted_but_is_no_failure(store: Store) -> None:
    first = event("prod", "k1")
    store.save_poll(snapshot("prod"), [first], [(first.id, "chat")])
    retry_at = T0 + timedelta(seconds=1)
    store.mark_failed(first.id, "chat", error="HTTP 429", retry_at=retry_at, throttled=True)
    store.mark_failed(first.id, "chat", error="HTTP 429", retry_at=retry_at, throttled=True)
    store.mark_failed(first.id, "chat", error="HTTP 503", retry_at=retry_at)
    [delivery] = store.queued_deliveries("chat", limit=10)
    assert (delivery.attempts, delivery.failures, delivery.state) == (3, 1, "pending")


def test_outbox_stats_count_pending_and_dead_per_destination(store: Store) -> None:
    assert store.outbox_stats() == {}
    events = [event("prod", f"k{n}", T0 + timedelta(seconds=n)) for n in range(4)]
    store.save_poll(snapshot("prod", T0), events[:2], [(e.id, "chat") for e in events[:2]])
    later = T0 + timedelta(minutes=5)
    pairs = [(e.id, d) for e in events[2:] for d in ("chat", "audit")]
    store.save_poll(snapshot("prod", later), events[2:], pairs)
    store.mark_delivered(events[0].id, "chat", later)
    store.mark_failed(events[1].id, "chat", error="HTTP 410", retry_at=None)
    store.mark_failed(events[2].id, "audit", error="HTTP 400", retry_at=None)
    store.mark_failed(events[3].id, "audit", error="HTTP 400", retry_at=None)
    assert store.outbox_stats() == {
        "chat": OutboxStats(pending=2, dead=1, oldest_pending_at=later),
        "audit": OutboxStats(pending=0, dead=2, oldest_pending_at=None),
    }


def test_dead_deliveries_are_listed_and_can_be_requeued(store: Store) -> None:
    events = [event("prod", f"k{n}", T0 + timedelta(seconds=n)) for n in range(3)]
    pairs = [(e.id, d) for e in events for d in ("chat", "audit")]
    store.save_poll(snapshot("prod"), events, pairs)
    for e in events:
        store.mark_failed(e.id, "chat", error="HTTP 404", retry_at=None)
    store.mark_failed(events[0].id, "audit", error="HTTP 403", retry_at=None)
    dead = store.dead_deliveries()
    assert [(d.event.id, d.destination) for d in dead] == [
        (events[0].id, "audit"),
        (events[0].id, "chat"),
        (events[1].id, "chat"),
        (events[2].id, "chat"),
    ]
    assert [d.last_error for d in store.dead_deliveries(destination="audit")] == ["HTTP 403"]
    assert len(store.dead_deliveries(limit=2)) == 2

    now = T0 + timedelta(days=10)
    assert store.requeue_dead(now=now, destination="chat", event_id=events[1].id) == 1
    assert store.requeue_dead(now=now, destination="nowhere") == 0
    [again] = store.queued_deliveries("chat", limit=10)
    assert (again.event, again.state, again.attempts, again.failures) == (
        events[1],
        "pending",
        0,
        0,
    )
    assert again.next_attempt_at == again.created_at == now
    assert again.last_error == "HTTP 404"
    assert store.requeue_dead(now=now, destination="chat") == 2
    assert store.requeue_dead(now=now) == 1
    assert store.dead_deliveries() == []
    assert store.requeue_dead(now=now) == 0
    assert store.outbox_stats() == {
        "chat": OutboxStats(pending=3, oldest_pending_at=now),
        "audit": OutboxStats(pending=3, oldest_pending_at=T0),
    }


# --- leases ----------------------------------------------------------------------------------


def test_a_lease_has_one_holder_until_it_expires(store: Store) -> None:
    assert store.acquire_lease("leader", "a", now=T0, ttl=30)
    assert not store.acquire_lease("leader", "b", now=T0 + timedelta(seconds=29), ttl=30)
    assert store.acquire_lease("leader", "a", now=T0 + timedelta(seconds=29), ttl=30)  # renew
    assert not store.acquire_lease("leader", "b", now=T0 + timedelta(seconds=58), ttl=30)
    assert store.acquire_lease("leader", "b", now=T0 + timedelta(seconds=59), ttl=30)
    store.release_lease("leader", "a")  # not a's any more: no effect
    assert not store.acquire_lease("leader", "a", now=T0 + timedelta(seconds=60), ttl=30)
    store.release_lease("leader", "b")
    assert store.acquire_lease("leader", "a", now=T0 + timedelta(seconds=60), ttl=30)
    assert store.acquire_lease("other", "b", now=T0, ttl=30)


def test_the_token_grows_when_the_holder_changes_and_survives_a_release(store: Store) -> None:
    assert store.lease_info("leader") is None
    assert store.acquire_lease("leader", "a", now=T0, ttl=30) == 1
    assert store.acquire_lease("leader", "a", now=T0 + timedelta(seconds=20), ttl=30) == 1
    assert store.acquire_lease("leader", "a", now=T0 + timedelta(seconds=90), ttl=30) == 1
    assert store.acquire_lease("leader", "b", now=T0 + timedelta(seconds=120), ttl=30) == 2
    assert store.lease_info("leader") == LeaseInfo("b", 2, T0 + timedelta(seconds=150))
    store.release_lease("leader", "b")
    released = store.lease_info("leader")
    assert released is not None and (released.holder, released.token) == (None, 2)
    assert store.acquire_lease("leader", "b", now=T0 + timedelta(seconds=121), ttl=30) == 3


def fenced_poll(store: Store, tenant: str, kid: str, fence: Fence) -> list[Event]:
    revoked = event(tenant, kid)
    return store.save_poll(snapshot(tenant), [revoked], [(revoked.id, "chat")], fence=fence)


def test_a_leader_writes_under_its_token_until_a_newer_leader_takes_the_lease(
    store: Store,
) -> None:
    old = Fence("leader", store.acquire_lease("leader", "a", now=T0, ttl=30) or 0)
    first = event("prod", "k1")
    assert fenced_poll(store, "prod", "k1", old) == [first]
    assert fenced_poll(store, "prod", "k1", old) == []  # known: nothing new, nothing refused
    assert store.claim_delivery(first.id, "chat", fence=old)
    store.mark_failed(first.id, "chat", error="HTTP 503", retry_at=T0, fence=old)

    new = Fence(
        "leader", store.acquire_lease("leader", "b", now=T0 + timedelta(minutes=1), ttl=30) or 0
    )
    assert new.token == old.token + 1
    before = (store.load_states(), all_events(store), store.delivery_counts())
    down, [unreachable] = outage(2)
    healthy, _ = after_success(down, at=T0 + timedelta(minutes=5))
    for refused in (
        lambda: fenced_poll(store, "prod", "k1", old),  # even a repeat of known rows
        lambda: fenced_poll(store, "dev", "k2", old),  # a new tenant, a new event
        lambda: store.save_reachability(down, [unreachable], [(unreachable.id, "ops")], fence=old),
        lambda: store.save_reachability(healthy, [], fence=old),
        lambda: store.claim_delivery(first.id, "chat", fence=old),
        lambda: store.mark_delivered(first.id, "chat", T0, fence=old),
        lambda: store.mark_failed(first.id, "chat", error="x", retry_at=None, fence=old),
    ):
        with pytest.raises(
            FencedOut, match="made under token 1 of lease 'leader', which now has token 2"
        ):
            refused()
    assert (store.load_states(), all_events(store), store.delivery_counts()) == before
    assert store.load_reachability("prod") == Reachability("prod")
    assert store.save_reachability(down, [unreachable], fence=new) == [unreachable]
    store.save_reachability(healthy, [], fence=new)
    assert store.load_reachability("prod") == Reachability("prod")

    assert store.claim_delivery(first.id, "chat", fence=new)
    store.mark_delivered(first.id, "chat", T0 + timedelta(minutes=2), fence=new)
    assert not store.claim_delivery(first.id, "chat", fence=new)  # no longer pending
    assert store.delivery_counts() == {("chat", "delivered"): 1}
    store.mark_delivered(first.id, "chat", T0, fence=new)  # already delivered: left alone


def test_a_fenced_out_batch_commits_nothing(store: Store) -> None:
    old = Fence("leader", store.acquire_lease("leader", "a", now=T0, ttl=30) or 0)
    first = event("prod", "k1")
    batch = [
        PollWrite(TenantState.confirmed(snapshot("prod")), [first], [(first.id, "chat")]),
        PollWrite(TenantState.confirmed(snapshot("dev")), [event("dev", "k2")]),
    ]
    assert store.save_polls(batch[:1], fence=old) == [[first]]
    store.acquire_lease("leader", "b", now=T0 + timedelta(minutes=1), ttl=30)
    before = (store.load_states(), all_events(store), store.delivery_counts())
    for polls in (batch, batch[1:]):  # a tenant it wrote before, a new one
        with pytest.raises(FencedOut, match="made under token 1 of lease 'leader'"):
            store.save_polls(polls, fence=old)
        assert (store.load_states(), all_events(store), store.delivery_counts()) == before


def test_a_fence_on_a_lease_never_taken_refuses_and_no_fence_is_never_refused(
    store: Store,
) -> None:
    with pytest.raises(FencedOut):
        fenced_poll(store, "prod", "k1", Fence("leader", 1))
    assert all_events(store) == []
    store.acquire_lease("leader", "a", now=T0, ttl=30)
    first = event("prod", "k1")
    assert store.save_poll(snapshot("prod"), [first], [(first.id, "chat")]) == [first]
    store.mark_delivered(first.id, "chat", T0)  # the CLI and SQLite write without a fence


# --- retention -------------------------------------------------------------------------------


def test_pruning_deletes_old_delivered_rows_then_their_events_never_pending_or_dead(
    store: Store,
) -> None:
    day = timedelta(days=1)
    old = [event("prod", f"old-{n}", T0 + n * timedelta(seconds=1)) for n in range(5)]
    recent = event("prod", "recent", T0 + 50 * day)
    store.save_poll(snapshot("prod"), [*old, recent], [(e.id, "chat") for e in [*old, recent]])
    quiet = event("dev", "no-destination", T0)  # no destination wanted it
    store.save_poll(snapshot("dev"), [quiet])
    for e in old[:3]:
        store.mark_delivered(e.id, "chat", T0 + day)
    store.mark_failed(old[3].id, "chat", error="HTTP 404", retry_at=None)  # dead; old[4] pending
    store.mark_delivered(recent.id, "chat", T0 + 50 * day)
    cutoffs = {"events_before": T0 + 40 * day, "deliveries_before": T0 + 10 * day}

    # The deliveries go first: their events can go in the same batch (quiet, old[0]).
    assert store.prune(**cutoffs, limit=2) == Pruned(events=2, deliveries=2)
    assert store.prune(**cutoffs, limit=2) == Pruned(events=2, deliveries=1)
    assert store.prune(**cutoffs, limit=2) == Pruned()
    assert {e.id for e in all_events(store)} == {old[3].id, old[4].id, recent.id}
    assert store.delivery_counts() == {
        ("chat", "dead"): 1,
        ("chat", "pending"): 1,
        ("chat", "delivered"): 1,
    }
    later = {"events_before": T0 + 400 * day, "deliveries_before": T0 + 400 * day}
    assert store.prune(**later, limit=10) == Pruned(events=1, deliveries=1)  # only recent
    assert {e.id for e in all_events(store)} == {old[3].id, old[4].id}


def test_pruning_is_fenced_and_the_size_is_reported(store: Store) -> None:
    first = event("prod", "k1")
    store.save_poll(snapshot("prod"), [first], [(first.id, "chat")])
    store.mark_delivered(first.id, "chat", T0)
    empty = store.size_bytes()
    assert empty > 0
    stale = Fence("leader", store.acquire_lease("leader", "a", now=T0, ttl=30) or 0)
    store.acquire_lease("leader", "b", now=T0 + timedelta(minutes=1), ttl=30)
    later = T0 + timedelta(days=1)
    with pytest.raises(FencedOut):
        store.prune(events_before=later, deliveries_before=later, limit=10, fence=stale)
    assert store.delivery_counts() == {("chat", "delivered"): 1}
    current = Fence("leader", stale.token + 1)
    pruned = store.prune(events_before=later, deliveries_before=later, limit=10, fence=current)
    assert pruned == Pruned(events=1, deliveries=1)
    bodies = [event("prod", f"k{n}", details={"pad": "x" * 2000}) for n in range(200)]
    store.save_poll(snapshot("prod"), bodies)
    assert store.size_bytes() > empty


# --- durability ------------------------------------------------------------------------------


def test_reopening_finds_everything(backend: Backend) -> None:
    store = backend.open()
    first, second = event("prod", "k1"), event("dev", "k2", T0 + timedelta(seconds=1))
    store.save_poll(snapshot("prod"), [first], [(first.id, "chat")])
    store.save_poll(snapshot("dev"), [second], [(second.id, "chat")])
    store.mark_delivered(first.id, "chat", T0 + timedelta(seconds=3))
    store.acquire_lease("leader", "a", now=T0, ttl=30)
    store.close()

    reopened = backend.open()
    assert reopened.load_snapshots() == {"prod": snapshot("prod"), "dev": snapshot("dev")}
    assert reopened.recent_events() == [second, first]
    assert reopened.delivery_counts() == {("chat", "delivered"): 1, ("chat", "pending"): 1}
    [due] = reopened.pending_deliveries("chat", T0, limit=5)
    assert due.event == second
    assert not reopened.acquire_lease("leader", "b", now=T0, ttl=30)
    assert schema_versions(backend) == list(range(1, migrations.latest_version() + 1))


# --- helpers that look inside ----------------------------------------------------------------


def store_query(backend: Backend, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database behind the store's back, through a connection of its own."""
    if backend.name == "sqlite":
        path = backend.url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as connection:
            return connection.execute(sql, params).fetchall()
    import psycopg

    with psycopg.connect(backend.url, autocommit=True) as connection:
        return connection.execute(sql.replace("?", "%s"), params).fetchall()


def schema_versions(backend: Backend) -> list[int]:
    return [row[0] for row in store_query(backend, "SELECT version FROM schema_version ORDER BY 1")]


def table_exists(backend: Backend, table: str) -> bool:
    if backend.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = (
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
        )
    return bool(store_query(backend, sql, (table,)))


def delivery_row(backend: Backend, event_id: str, destination: str) -> tuple[Any, ...]:
    [row] = store_query(
        backend,
        "SELECT state, attempts, last_error FROM deliveries WHERE event_id = ? AND destination = ?",
        (event_id, destination),
    )
    return row


# --- open_store and SQLite specifics ---------------------------------------------------------


def test_sqlite_file_is_wal_with_full_sync_and_parents_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    store = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(store, SQLiteStore)
        assert store.pragma("journal_mode") == "wal"
        assert store.pragma("synchronous") == 2  # FULL
        assert store.pragma("foreign_keys") == 1
        assert int(str(store.pragma("busy_timeout"))) > 0
        assert path.is_file()
    finally:
        store.close()


def test_sqlite_outcome_commits_do_not_leave_the_connection_at_normal_sync(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert isinstance(store, SQLiteStore)
        first, second = event("prod", "k1"), event("prod", "k2")
        store.save_poll(snapshot("prod"), [first, second], [(first.id, "a"), (second.id, "a")])
        store.mark_delivered(first.id, "a", T0)
        store.mark_failed(second.id, "a", error="HTTP 503", retry_at=T0)
        assert store.pragma("synchronous") == 2  # back to FULL for snapshots and events
    finally:
        store.close()


def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///var/state.db")
    store.close()
    assert (tmp_path / "var" / "state.db").is_file()


def test_sqlite_in_memory() -> None:
    store = open_store("sqlite:///:memory:")
    try:
        first = event("prod", "k1")
        assert store.save_poll(snapshot("prod"), [first], [(first.id, "chat")]) == [first]
        assert store.load_snapshot("prod") == snapshot("prod")
    finally:
        store.close()


def test_sqlite_unopenable_path_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match=r"SQLite store .*file/state\.db"):
        open_store(f"sqlite:///{blocker}/state.db")


def test_sqlite_garbage_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, just bytes" * 100)
    with pytest.raises(StoreError, match=r"state\.db"):
        open_store(f"sqlite:///{path}")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root:hunter2@127.0.0.1/db", "'mysql'"),
        ("redis://:hunter2@127.0.0.1:6379/0", "'redis'"),
        ("hunter2", "none"),
        ("sqlite://host:hunter2@x/state.db", "not a SQLite URL"),
        ("sqlite:///", "not a SQLite URL"),
    ],
)
def test_bad_urls_are_named_without_the_password(url: str, expected: str) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(url)
    assert expected in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_unreachable_postgres_hides_the_password() -> None:
    port = unused_loopback_port()
    url = f"postgresql://keywatch:hunter%232@127.0.0.1:{port}/db?connect_timeout=2"
    with pytest.raises(StoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert f"postgresql://keywatch:***@127.0.0.1:{port}/db" in message
    assert "connect failed" in message
    assert "hunter" not in message
    assert "hunter" not in str(caught.value.__cause__ or "")


def test_postgres_malformed_url_does_not_echo_the_password() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://keywatch:s3cr%ZZet@127.0.0.1:1/db")
    assert "s3cr" not in str(caught.value)
    assert caught.value.__cause__ is None or "s3cr" not in str(caught.value.__cause__)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p%40ss@db.example:5433/kw?password=x&sslmode=require") == (
        "postgresql://u:***@db.example:5433/kw"
    )
    assert redact_url("postgres://db/kw") == "postgres://db/kw"
    assert redact_url("postgresql://u@[::1]:5432/kw") == "postgresql://u@[::1]:5432/kw"


def unused_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- PostgreSQL specifics --------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_reconnects_after_the_server_drops_it(postgres_url: str) -> None:
    import psycopg

    store = open_store(postgres_url)
    try:
        [(pid,)] = store_query_pg(store)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match="ping failed"):
            wait_until_dropped(store)
        store.ping()
        store.save_poll(snapshot("prod"), [])
        assert store.load_snapshot("prod") == snapshot("prod")
    finally:
        store.close()


def store_query_pg(store: Store) -> list[tuple[Any, ...]]:
    from monitor.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    with store._session("backend pid", write=False) as session:
        return session.query("SELECT pg_backend_pid()")


def wait_until_dropped(store: Store, *, deadline_seconds: float = 5.0) -> None:
    """Ping until the terminated connection shows; the termination is asynchronous."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        store.ping()
    raise AssertionError("the connection was never dropped")
