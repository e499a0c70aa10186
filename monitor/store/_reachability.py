"""The reachability part of ``SQLStore``: each tenant's run of failed polls, written in one
transaction with the events it raises and their deliveries."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.errors import StoreError
from monitor.model import Event, event_to_json
from monitor.reachability import Reachability, reachability_from_json, reachability_to_json
from monitor.store._polls import PollQueries
from monitor.store.base import Fence


class ReachabilityQueries(PollQueries):
    """Loads and saves ``Reachability``; no row is a reachable tenant."""

    def load_reachability(self, tenant: str) -> Reachability:
        with self._session("load_reachability", write=False) as session:
            rows = session.query("SELECT body FROM reachability WHERE tenant = ?", (tenant,))
        return self._decode_reachability(tenant, rows[0][0]) if rows else Reachability(tenant)

    def load_reachabilities(self) -> dict[str, Reachability]:
        with self._session("load_reachabilities", write=False) as session:
            rows = session.query("SELECT tenant, body FROM reachability ORDER BY tenant")
        return {tenant: self._decode_reachability(tenant, body) for tenant, body in rows}

    def _decode_reachability(self, tenant: str, body: str) -> Reachability:
        try:
            return reachability_from_json(tenant, body)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{self.where}: the stored reachability of tenant {tenant!r} is unreadable: "
                f"{type(exc).__name__}"
            ) from exc

    def save_reachability(
        self,
        state: Reachability,
        events: Sequence[Event],
        deliveries: Sequence[tuple[str, str]] = (),
        *,
        fence: Fence | None = None,
    ) -> list[Event]:
        bodies = [event_to_json(event) for event in events]
        operation = f"save_reachability of tenant {state.tenant!r}"
        guard, fenced = self._guard(fence)
        with self._session(operation, write=True) as session:
            if state.healthy:
                session.execute(
                    f"DELETE FROM reachability WHERE tenant = ? AND {guard}",
                    (state.tenant, *fenced),
                )
                self._check_fence(session, fence, operation)
            else:
                changed = session.execute(
                    "INSERT INTO reachability (tenant, body) "
                    f"SELECT ?, ? WHERE {guard} "
                    "ON CONFLICT (tenant) DO UPDATE SET body = excluded.body",
                    (state.tenant, reachability_to_json(state), *fenced),
                )
                if not changed:
                    self._check_fence(session, fence, operation)
            new_events = [
                event
                for index, (event, body) in enumerate(zip(events, bodies, strict=True))
                if self._insert_event(session, event, body, poll_index=index, fence=fence)
            ]
            detected_at = {event.id: self._to_db_time(event.detected_at) for event in events}
            for event_id, destination in deliveries:
                self._insert_delivery(
                    session, event_id, destination, detected_at[event_id], fence, operation
                )
        return new_events
