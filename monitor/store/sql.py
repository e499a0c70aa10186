"""The ``Store`` contract written once in SQL; ``sqlite.py`` and ``postgres.py`` supply the rest.

A backend provides a ``Session`` (one connection inside a transaction, or in autocommit for a
single read), its timestamp codec, and the translation of its driver's errors. Queries use
``?`` placeholders; the PostgreSQL session rewrites them.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from monitor.errors import StoreError
from monitor.model import (
    Event,
    Snapshot,
    TenantState,
    confirmation_to_json,
    event_from_json,
    event_to_json,
    snapshot_from_json,
    snapshot_to_json,
    tenant_state_from_json,
)
from monitor.store import migrations
from monitor.store.base import Delivery, OutboxStats

LAST_ERROR_MAX_CHARS = 1000


class Session(Protocol):
    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


_DELIVERY_COLUMNS = (
    "e.body, d.destination, d.state, d.attempts, d.next_attempt_at, d.created_at, "
    "d.delivered_at, d.last_error, d.failures"
)
_QUEUE_ORDER = "ORDER BY e.detected_at, e.poll_index, e.id"


class _Closable(Protocol):
    def close(self) -> None: ...


class SQLStore(ABC):
    """Every ``Store`` method, over the hooks a backend implements."""

    dialect: migrations.Dialect
    where: str  # names the store in messages; never holds a credential
    _lock: threading.Lock  # one session at a time on the one connection
    _closed: bool
    _connection: _Closable  # the driver's connection, narrowed by each backend

    # --- backend hooks --------------------------------------------------------------------

    @abstractmethod
    def _session(
        self, operation: str, *, write: bool, flush: bool = True
    ) -> AbstractContextManager[Session]:
        """Hold the store's lock, translate driver errors to ``StoreError`` naming
        ``operation``, and for ``write`` wrap the block in one transaction. ``flush=False``
        lets the commit return before it reaches the disk: for delivery outcomes only, where
        losing the last ones to a power cut means sending them again, never losing one."""

    @abstractmethod
    def _to_db_time(self, value: datetime) -> object: ...

    @abstractmethod
    def _from_db_time(self, value: object) -> datetime: ...

    @abstractmethod
    def _serialise_migrations(self, session: Session) -> None:
        """Keep two processes from migrating at once (called first in each transaction)."""

    @abstractmethod
    def _translated(self, operation: str) -> AbstractContextManager[None]:
        """Turn the driver's errors inside the block into ``StoreError`` naming ``operation``."""

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._translated("close"):
                self._connection.close()

    # --- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        current = self.schema_version()
        migrations.check_not_newer(current, self.where)
        for version in range(current + 1, migrations.latest_version() + 1):
            with self._session(f"migration {version}", write=True) as session:
                self._serialise_migrations(session)
                if self._schema_version(session) >= version:
                    continue  # another process applied it while we waited
                for statement in migrations.statements_of(version, self.dialect):
                    session.execute(statement)
                session.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, self._to_db_time(datetime.now(UTC))),
                )

    def schema_version(self) -> int:
        """The number of the last migration applied; 0 for an empty database."""
        with self._session("read the schema version", write=True) as session:
            self._serialise_migrations(session)
            return self._schema_version(session)

    def _schema_version(self, session: Session) -> int:
        session.execute(migrations.render(migrations.SCHEMA_VERSION_TABLE, self.dialect))
        rows = session.query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    def ping(self) -> None:
        with self._session("ping", write=False) as session:
            session.query("SELECT 1")

    # --- snapshots ------------------------------------------------------------------------

    def load_snapshot(self, tenant: str) -> Snapshot | None:
        with self._session("load_snapshot", write=False) as session:
            rows = session.query("SELECT body FROM snapshots WHERE tenant = ?", (tenant,))
        return self._decode_snapshot(rows[0][0], tenant) if rows else None

    def load_snapshots(self) -> dict[str, Snapshot]:
        with self._session("load_snapshots", write=False) as session:
            rows = session.query("SELECT tenant, body FROM snapshots ORDER BY tenant")
        return {tenant: self._decode_snapshot(body, tenant) for tenant, body in rows}

    def load_states(self) -> dict[str, TenantState]:
        with self._session("load_states", write=False) as session:
            rows = session.query("SELECT tenant, body, confirmation FROM snapshots ORDER BY tenant")
        return {
            tenant: self._decode_state(body, confirmation, tenant)
            for tenant, body, confirmation in rows
        }

    def _decode_state(self, body: str, confirmation: str | None, tenant: str) -> TenantState:
        snapshot = self._decode_snapshot(body, tenant)
        try:
            return tenant_state_from_json(snapshot, confirmation)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{self.where}: the stored confirmation of tenant {tenant!r} is unreadable: "
                f"{type(exc).__name__}"
            ) from exc

    def _decode_snapshot(self, body: str, tenant: str) -> Snapshot:
        try:
            return snapshot_from_json(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{self.where}: the stored snapshot of tenant {tenant!r} is unreadable: "
                f"{type(exc).__name__}"
            ) from exc

    def _decode_event(self, body: str) -> Event:
        try:
            return event_from_json(body)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{self.where}: a stored event is unreadable: {type(exc).__name__}"
            ) from exc

    # --- one poll -------------------------------------------------------------------------

    def save_poll(
        self,
        state: TenantState | Snapshot,
        events: Sequence[Event],
        deliveries: Sequence[tuple[str, str]] = (),
    ) -> list[Event]:
        if isinstance(state, Snapshot):
            state = TenantState.confirmed(state)
        snapshot = state.snapshot
        snapshot_body, confirmation, event_bodies = self._serialise_poll(state, events)
        taken_at = self._to_db_time(snapshot.taken_at)
        with self._session(f"save_poll of tenant {snapshot.tenant!r}", write=True) as session:
            session.execute(
                "INSERT INTO snapshots (tenant, taken_at, body, confirmation) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant) DO UPDATE SET taken_at = excluded.taken_at, "
                "body = excluded.body, confirmation = excluded.confirmation",
                (snapshot.tenant, taken_at, snapshot_body, confirmation),
            )
            new_events = [
                event
                for index, (event, body) in enumerate(zip(events, event_bodies, strict=True))
                if self._insert_event(session, event, body, poll_index=index)
            ]
            for event_id, destination in deliveries:
                session.execute(
                    "INSERT INTO deliveries (event_id, destination, state, attempts, "
                    "next_attempt_at, created_at) VALUES (?, ?, 'pending', 0, ?, ?) "
                    "ON CONFLICT (event_id, destination) DO NOTHING",
                    (event_id, destination, taken_at, taken_at),
                )
        return new_events

    def _serialise_poll(
        self, state: TenantState, events: Sequence[Event]
    ) -> tuple[str, str, list[str]]:
        try:
            return (
                snapshot_to_json(state.snapshot),
                confirmation_to_json(state),
                [event_to_json(event) for event in events],
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(
                f"{self.where}: save_poll of tenant {state.tenant!r} failed: "
                f"cannot serialise the poll: {exc}"
            ) from exc

    def _insert_event(self, session: Session, event: Event, body: str, *, poll_index: int) -> bool:
        inserted = session.execute(
            "INSERT INTO events (id, tenant, type, severity, detected_at, body, poll_index) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (
                event.id,
                event.tenant,
                event.type.value,
                event.severity.label,
                self._to_db_time(event.detected_at),
                body,
                poll_index,
            ),
        )
        return inserted == 1

    def recent_events(self, tenant: str | None = None, limit: int = 100) -> list[Event]:
        where, params = ("WHERE tenant = ? ", [tenant]) if tenant is not None else ("", [])
        with self._session("recent_events", write=False) as session:
            rows = session.query(
                f"SELECT body FROM events {where}ORDER BY detected_at DESC, id DESC LIMIT ?",
                (*params, max(limit, 0)),
            )
        return [self._decode_event(body) for (body,) in rows]

    # --- the outbox -----------------------------------------------------------------------

    def pending_deliveries(self, destination: str, now: datetime, limit: int) -> list[Delivery]:
        with self._session(f"pending_deliveries of {destination!r}", write=False) as session:
            rows = session.query(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id "
                "WHERE d.destination = ? AND d.state = 'pending' AND d.next_attempt_at <= ? "
                "ORDER BY e.detected_at, e.id LIMIT ?",
                (destination, self._to_db_time(now), max(limit, 0)),
            )
        return [self._delivery_from_row(row) for row in rows]

    def queued_deliveries(self, destination: str, limit: int) -> list[Delivery]:
        with self._session(f"queued_deliveries of {destination!r}", write=False) as session:
            rows = session.query(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id "
                f"WHERE d.destination = ? AND d.state = 'pending' {_QUEUE_ORDER} LIMIT ?",
                (destination, max(limit, 0)),
            )
        return [self._delivery_from_row(row) for row in rows]

    def dead_deliveries(
        self, *, destination: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        where, params = ("AND d.destination = ? ", [destination]) if destination else ("", [])
        with self._session("dead_deliveries", write=False) as session:
            rows = session.query(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.id = d.event_id "
                f"WHERE d.state = 'dead' {where}{_QUEUE_ORDER}, d.destination LIMIT ?",
                (*params, max(limit, 0)),
            )
        return [self._delivery_from_row(row) for row in rows]

    def _delivery_from_row(self, row: tuple[Any, ...]) -> Delivery:
        body, destination, state, attempts, next_at, created_at, delivered_at, error, failures = row
        return Delivery(
            event=self._decode_event(body),
            destination=destination,
            state=state,
            attempts=int(attempts),
            next_attempt_at=self._from_db_time(next_at),
            created_at=self._from_db_time(created_at),
            delivered_at=None if delivered_at is None else self._from_db_time(delivered_at),
            last_error=error,
            failures=int(failures),
        )

    def mark_delivered(self, event_id: str, destination: str, at: datetime) -> None:
        with self._session(
            f"mark_delivered to {destination!r}", write=True, flush=False
        ) as session:
            changed = session.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
                "delivered_at = ? WHERE event_id = ? AND destination = ? "
                "AND state <> 'delivered'",
                (self._to_db_time(at), event_id, destination),
            )
            if not changed:
                self._require_delivery(session, event_id, destination)

    def mark_failed(
        self,
        event_id: str,
        destination: str,
        *,
        error: str,
        retry_at: datetime | None,
        throttled: bool = False,
    ) -> None:
        """Count an attempt; ``retry_at=None`` moves the delivery to the dead state. A delivery
        that is no longer pending is left alone."""
        next_state = "dead" if retry_at is None else "pending"
        next_at = None if retry_at is None else self._to_db_time(retry_at)
        with self._session(f"mark_failed to {destination!r}", write=True, flush=False) as session:
            changed = session.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, "
                "failures = failures + ?, last_error = ?, "
                "next_attempt_at = COALESCE(?, next_attempt_at) "
                "WHERE event_id = ? AND destination = ? AND state = 'pending'",
                (
                    next_state,
                    0 if throttled else 1,
                    error[:LAST_ERROR_MAX_CHARS],
                    next_at,
                    event_id,
                    destination,
                ),
            )
            if not changed:
                self._require_delivery(session, event_id, destination)

    def _require_delivery(self, session: Session, event_id: str, destination: str) -> None:
        rows = session.query(
            "SELECT 1 FROM deliveries WHERE event_id = ? AND destination = ?",
            (event_id, destination),
        )
        if not rows:
            raise StoreError(f"{self.where}: no delivery of event {event_id!r} to {destination!r}")

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        with self._session("delivery_counts", write=False) as session:
            rows = session.query(
                "SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state"
            )
        return {(destination, state): int(count) for destination, state, count in rows}

    def requeue_dead(
        self, *, now: datetime, destination: str | None = None, event_id: str | None = None
    ) -> int:
        conditions, params = ["state = 'dead'"], []
        if destination is not None:
            conditions.append("destination = ?")
            params.append(destination)
        if event_id is not None:
            conditions.append("event_id = ?")
            params.append(event_id)
        at = self._to_db_time(now)
        with self._session("requeue_dead", write=True) as session:
            return session.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, failures = 0, "
                f"next_attempt_at = ?, created_at = ? WHERE {' AND '.join(conditions)}",
                (at, at, *params),
            )

    def outbox_stats(self) -> dict[str, OutboxStats]:
        with self._session("outbox_stats", write=False) as session:
            rows = session.query(
                "SELECT destination, state, COUNT(*), MIN(created_at) FROM deliveries "
                "WHERE state IN ('pending', 'dead') GROUP BY state, destination"
            )
        stats: dict[str, OutboxStats] = {}
        for destination, state, count, oldest in rows:
            known = stats.get(destination, OutboxStats())
            if state == "pending":
                oldest_at = None if oldest is None else self._from_db_time(oldest)
                stats[destination] = replace(known, pending=int(count), oldest_pending_at=oldest_at)
            else:
                stats[destination] = replace(known, dead=int(count))
        return stats

    def oldest_pending_at(self) -> datetime | None:
        with self._session("oldest_pending_at", write=False) as session:
            rows = session.query("SELECT MIN(created_at) FROM deliveries WHERE state = 'pending'")
        value = rows[0][0] if rows else None
        return None if value is None else self._from_db_time(value)

    # --- leader lease ---------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl: float) -> bool:
        expires_at = self._to_db_time(now + timedelta(seconds=ttl))
        with self._session(f"acquire_lease {name!r}", write=True) as session:
            changed = session.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
                (name, holder, expires_at, self._to_db_time(now)),
            )
        return changed == 1

    def release_lease(self, name: str, holder: str) -> None:
        with self._session(f"release_lease {name!r}", write=True) as session:
            session.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
