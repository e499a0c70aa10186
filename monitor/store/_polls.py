"""The poll part of ``SQLStore``: snapshots and confirmation state, events, and the
deliveries a poll queues, all written in the poll's one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.errors import StoreError
from monitor.model import (
    Event,
    Snapshot,
    TenantState,
    confirmation_to_json,
    event_to_json,
    snapshot_from_json,
    snapshot_to_json,
    tenant_state_from_json,
)
from monitor.store._sqlbase import Session, SQLBase
from monitor.store.base import Fence, PollWrite


@dataclass(frozen=True, slots=True)
class _Serialised:
    """A poll as its rows will hold it, serialised before its transaction begins."""

    write: PollWrite
    operation: str  # names the poll in errors
    taken_at: object
    snapshot: str
    confirmation: str
    events: list[str]


class PollQueries(SQLBase):
    """What polls leave behind: each tenant's state, and the events detected."""

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

    def save_poll(
        self,
        state: TenantState | Snapshot,
        events: Sequence[Event],
        deliveries: Sequence[tuple[str, str]] = (),
        *,
        fence: Fence | None = None,
    ) -> list[Event]:
        if isinstance(state, Snapshot):
            state = TenantState.confirmed(state)
        poll = self._serialise_poll(PollWrite(state, events, deliveries))
        with self._session(poll.operation, write=True) as session:
            return self._write_poll(session, poll, fence)

    def save_polls(
        self, polls: Sequence[PollWrite], *, fence: Fence | None = None
    ) -> list[list[Event]]:
        if not polls:
            return []
        serialised = [self._serialise_poll(poll) for poll in polls]
        operation = f"save_polls of {len(polls)} tenant{'s' if len(polls) > 1 else ''}"
        with self._session(operation, write=True) as session:
            return [self._write_poll(session, poll, fence) for poll in serialised]

    def _write_poll(self, session: Session, poll: _Serialised, fence: Fence | None) -> list[Event]:
        snapshot = poll.write.state.snapshot
        guard, fenced = self._guard(fence)
        changed = session.execute(
            "INSERT INTO snapshots (tenant, taken_at, body, confirmation) "
            f"SELECT ?, ?, ?, ? WHERE {guard} "
            "ON CONFLICT (tenant) DO UPDATE SET taken_at = excluded.taken_at, "
            "body = excluded.body, confirmation = excluded.confirmation",
            (snapshot.tenant, poll.taken_at, poll.snapshot, poll.confirmation, *fenced),
        )
        if not changed:
            self._check_fence(session, fence, poll.operation)
        events = poll.write.events
        new_events = [
            event
            for index, (event, body) in enumerate(zip(events, poll.events, strict=True))
            if self._insert_event(session, event, body, poll_index=index, fence=fence)
        ]
        for event_id, destination in poll.write.deliveries:
            self._insert_delivery(
                session, event_id, destination, poll.taken_at, fence, poll.operation
            )
        return new_events

    def _insert_delivery(
        self,
        session: Session,
        event_id: str,
        destination: str,
        created_at: object,
        fence: Fence | None,
        operation: str,
    ) -> None:
        """A pending delivery, due at once; a known one is left alone."""
        guard, fenced = self._guard(fence)
        inserted = session.execute(
            "INSERT INTO deliveries (event_id, destination, state, attempts, next_attempt_at, "
            f"created_at) SELECT ?, ?, 'pending', 0, ?, ? WHERE {guard} "
            "ON CONFLICT (event_id, destination) DO NOTHING",
            (event_id, destination, created_at, created_at, *fenced),
        )
        if not inserted:  # known, or refused
            self._check_fence(session, fence, operation)

    def _serialise_poll(self, poll: PollWrite) -> _Serialised:
        tenant = poll.state.tenant
        try:
            return _Serialised(
                write=poll,
                operation=f"save_poll of tenant {tenant!r}",
                taken_at=self._to_db_time(poll.state.snapshot.taken_at),
                snapshot=snapshot_to_json(poll.state.snapshot),
                confirmation=confirmation_to_json(poll.state),
                events=[event_to_json(event) for event in poll.events],
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(
                f"{self.where}: save_poll of tenant {tenant!r} failed: "
                f"cannot serialise the poll: {exc}"
            ) from exc

    def _insert_event(
        self, session: Session, event: Event, body: str, *, poll_index: int, fence: Fence | None
    ) -> bool:
        guard, fenced = self._guard(fence)
        inserted = session.execute(
            "INSERT INTO events (id, tenant, type, severity, detected_at, body, poll_index) "
            f"SELECT ?, ?, ?, ?, ?, ?, ? WHERE {guard} ON CONFLICT (id) DO NOTHING",
            (
                event.id,
                event.tenant,
                event.type.value,
                event.severity.label,
                self._to_db_time(event.detected_at),
                body,
                poll_index,
                *fenced,
            ),
        )
        if not inserted:  # known, or refused
            self._check_fence(session, fence, f"save_poll of tenant {event.tenant!r}")
        return inserted == 1

    def recent_events(self, tenant: str | None = None, limit: int = 100) -> list[Event]:
        where, params = ("WHERE tenant = ? ", [tenant]) if tenant is not None else ("", [])
        with self._session("recent_events", write=False) as session:
            rows = session.query(
                f"SELECT body FROM events {where}ORDER BY detected_at DESC, id DESC LIMIT ?",
                (*params, max(limit, 0)),
            )
        return [self._decode_event(body) for (body,) in rows]
