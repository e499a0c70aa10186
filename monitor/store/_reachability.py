"""The reachability part of ``SQLStore``: each tenant's run of failed polls, written in one
transaction with the events it raises and their deliveries."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.errors import StoreError
from monitor.model import Event, event_to_json
from monitor.reachability import Reachability, reachability_from_json, reachability_to_json
from monitor.store._polls import PollQueries


class ReachabilityQueries(PollQueries):
    """Loads and saves ``Reachability``; no row is a reachable tenant."""

    def load_reachability(self, tenant: str) -> Reachability:
        with self._session("load_reachability", write=False) as session:
            rows = session.query("SELECT body FROM reachability WHERE tenant = ?", (tenant,))
        if not rows:
            return Reachability(tenant)
        try:
            return reachability_from_json(tenant, rows[0][0])
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
    ) -> list[Event]:
        bodies = [event_to_json(event) for event in events]
        with self._session(f"save_reachability of tenant {state.tenant!r}", write=True) as session:
            if state.healthy:
                session.execute("DELETE FROM reachability WHERE tenant = ?", (state.tenant,))
            else:
                session.execute(
                    "INSERT INTO reachability (tenant, body) VALUES (?, ?) "
                    "ON CONFLICT (tenant) DO UPDATE SET body = excluded.body",
                    (state.tenant, reachability_to_json(state)),
                )
            new_events = [
                event
                for index, (event, body) in enumerate(zip(events, bodies, strict=True))
                if self._insert_event(session, event, body, poll_index=index)
            ]
            detected_at = {event.id: self._to_db_time(event.detected_at) for event in events}
            for event_id, destination in deliveries:
                session.execute(
                    "INSERT INTO deliveries (event_id, destination, state, attempts, "
                    "next_attempt_at, created_at) VALUES (?, ?, 'pending', 0, ?, ?) "
                    "ON CONFLICT (event_id, destination) DO NOTHING",
                    (event_id, destination, detected_at[event_id], detected_at[event_id]),
                )
        return new_events
