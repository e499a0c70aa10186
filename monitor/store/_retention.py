"""The retention part of ``SQLStore``: deleting old events and delivered deliveries in small
batches. Pending and dead deliveries are never deleted, nor an event any delivery still
refers to (so an event outlives its deliveries, and a pending or dead one keeps it)."""

from __future__ import annotations

from datetime import datetime

from monitor.store._sqlbase import SQLBase
from monitor.store.base import Fence, Pruned


class RetentionQueries(SQLBase):
    def prune(
        self,
        *,
        events_before: datetime,
        deliveries_before: datetime,
        limit: int,
        fence: Fence | None = None,
    ) -> Pruned:
        guard, fenced = self._guard(fence)
        with self._session("prune", write=True) as session:
            deliveries = session.execute(
                "DELETE FROM deliveries WHERE (event_id, destination) IN ("
                "SELECT event_id, destination FROM deliveries "
                "WHERE state = 'delivered' AND delivered_at < ? ORDER BY delivered_at LIMIT ?"
                f") AND {guard}",
                (self._to_db_time(deliveries_before), max(limit, 0), *fenced),
            )
            events = session.execute(
                "DELETE FROM events WHERE id IN ("
                "SELECT e.id FROM events e WHERE e.detected_at < ? AND NOT EXISTS "
                "(SELECT 1 FROM deliveries d WHERE d.event_id = e.id) "
                f"ORDER BY e.detected_at LIMIT ?) AND {guard}",
                (self._to_db_time(events_before), max(limit, 0), *fenced),
            )
            if not events and not deliveries:  # nothing to delete, or refused
                self._check_fence(session, fence, "prune")
        return Pruned(events=events, deliveries=deliveries)
