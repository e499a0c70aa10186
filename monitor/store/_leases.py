"""The lease part of ``SQLStore``: which replica leads, by a lease that expires, and the
lease's token, which fences the writes of a leader that lost it (``SQLBase._guard``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from monitor.store._sqlbase import SQLBase
from monitor.store.base import LeaseInfo

RELEASED_AT = datetime(1970, 1, 1, tzinfo=UTC)
"""The expiry a released lease gets: lapsed for everyone (the row, and its token, stay)."""


class LeaseQueries(SQLBase):
    """Takes, renews and gives up named leases."""

    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl: float) -> int | None:
        expires_at = self._to_db_time(now + timedelta(seconds=ttl))
        with self._session(f"acquire_lease {name!r}", write=True) as session:
            changed = session.execute(
                "INSERT INTO leases (name, holder, expires_at, token) VALUES (?, ?, ?, 1) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at, token = CASE "
                "WHEN leases.holder = excluded.holder THEN leases.token "
                "ELSE leases.token + 1 END "
                "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
                (name, holder, expires_at, self._to_db_time(now)),
            )
            if changed != 1:
                return None
            rows = session.query("SELECT token FROM leases WHERE name = ?", (name,))
        return int(rows[0][0])

    def release_lease(self, name: str, holder: str) -> None:
        with self._session(f"release_lease {name!r}", write=True) as session:
            session.execute(
                "UPDATE leases SET holder = '', expires_at = ? WHERE name = ? AND holder = ?",
                (self._to_db_time(RELEASED_AT), name, holder),
            )

    def lease_info(self, name: str) -> LeaseInfo | None:
        with self._session(f"lease_info {name!r}", write=False) as session:
            rows = session.query(
                "SELECT holder, token, expires_at FROM leases WHERE name = ?", (name,)
            )
        if not rows:
            return None
        holder, token, expires_at = rows[0]
        return LeaseInfo(
            holder=holder or None, token=int(token), expires_at=self._from_db_time(expires_at)
        )
