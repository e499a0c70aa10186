"""What a source of signing keys is to the rest of keywatch: one tenant, read as a ``Snapshot``.

``Auth0Client`` (the Management API, ``monitor.sources.auth0``) is the one implementation so far.
Another way of reading a tenant's keys (its published OIDC discovery document and JWKS, say)
fits beside it by implementing ``SnapshotSource``; poll and check only use this protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Protocol

from monitor.clock import utc_now
from monitor.model import Snapshot


class SnapshotSource(Protocol):
    """Reads every signing key of one tenant."""

    @property
    def tenant(self) -> str:
        """The tenant's configured name, as it appears in snapshots and messages."""

    async def fetch(
        self,
        *,
        previous: Snapshot | None,
        watched_kids: Collection[str] = (),
        now: Callable[[], datetime] = utc_now,
    ) -> Snapshot:
        """The tenant's keys now, stamped with ``now()``.

        ``previous`` (the last confirmed snapshot) and ``watched_kids`` (kids configured to be
        watched) name keys the answer should hold: a source double-checks one that is missing
        before the snapshot may leave it out. Raises ``SourceError`` when the tenant cannot be
        read; never returns half a view.
        """
