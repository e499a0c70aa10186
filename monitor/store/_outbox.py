"""The outbox part of ``SQLStore``: the deliveries of events to destinations, their
attempts, outcomes and dead letters, and the figures the metrics show."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from monitor.errors import StoreError
from monitor.store._sqlbase import Session, SQLBase
from monitor.store.base import Delivery, Fence, OutboxStats

LAST_ERROR_MAX_CHARS = 1000

_DELIVERY_COLUMNS = (
    "e.body, d.destination, d.state, d.attempts, d.next_attempt_at, d.created_at, "
    "d.delivered_at, d.last_error, d.failures"
)
_QUEUE_ORDER = "ORDER BY e.detected_at, e.poll_index, e.id"


class OutboxQueries(SQLBase):
    """The durable queue the dispatcher works through."""

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

    def claim_delivery(self, event_id: str, destination: str, *, fence: Fence) -> bool:
        operation = f"claim_delivery to {destination!r}"
        guard, fenced = self._guard(fence)
        with self._session(operation, write=True, flush=False) as session:
            changed = session.execute(
                "UPDATE deliveries SET claimed_token = ? WHERE event_id = ? "
                f"AND destination = ? AND state = 'pending' AND {guard}",
                (fence.token, event_id, destination, *fenced),
            )
            if not changed:
                self._check_fence(session, fence, operation)
                self._require_delivery(session, event_id, destination)
        return changed == 1

    def mark_delivered(
        self, event_id: str, destination: str, at: datetime, *, fence: Fence | None = None
    ) -> None:
        operation = f"mark_delivered to {destination!r}"
        guard, fenced = self._guard(fence)
        with self._session(operation, write=True, flush=False) as session:
            changed = session.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, "
                "delivered_at = ? WHERE event_id = ? AND destination = ? "
                f"AND state <> 'delivered' AND {guard}",
                (self._to_db_time(at), event_id, destination, *fenced),
            )
            if not changed:
                self._check_fence(session, fence, operation)
                self._require_delivery(session, event_id, destination)

    def mark_failed(
        self,
        event_id: str,
        destination: str,
        *,
        error: str,
        retry_at: datetime | None,
        throttled: bool = False,
        fence: Fence | None = None,
    ) -> None:
        """Count an attempt; ``retry_at=None`` moves the delivery to the dead state. A delivery
        that is no longer pending is left alone."""
        next_state = "dead" if retry_at is None else "pending"
        next_at = None if retry_at is None else self._to_db_time(retry_at)
        operation = f"mark_failed to {destination!r}"
        guard, fenced = self._guard(fence)
        with self._session(operation, write=True, flush=False) as session:
            changed = session.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, "
                "failures = failures + ?, last_error = ?, "
                "next_attempt_at = COALESCE(?, next_attempt_at) "
                f"WHERE event_id = ? AND destination = ? AND state = 'pending' AND {guard}",
                (
                    next_state,
                    0 if throttled else 1,
                    error[:LAST_ERROR_MAX_CHARS],
                    next_at,
                    event_id,
                    destination,
                    *fenced,
                ),
            )
            if not changed:
                self._check_fence(session, fence, operation)
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
