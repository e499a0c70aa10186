"""The lease part of ``SQLStore``: which replica leads, by a lease that expires."""

from __future__ import annotations

from datetime import datetime, timedelta

from monitor.store._sqlbase import SQLBase


class LeaseQueries(SQLBase):
    """Takes, renews and gives up named leases."""

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
