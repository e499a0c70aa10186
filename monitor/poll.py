"""One poll of one tenant: fetch, double-check what looks wrong, build the snapshot.

The double-checking (a suspicious answer fetched again, a vanished kid confirmed with
``GET /keys/signing/{kid}``) is the source's: see ``Auth0Client.fetch``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime

import httpx

from monitor.clock import utc_now
from monitor.config import TenantConfig
from monitor.model import Snapshot
from monitor.sources.auth0 import Auth0Client, Credentials
from monitor.sources.base import SnapshotSource

log = logging.getLogger(__name__)


def client_for_tenant(http: httpx.AsyncClient, tenant: TenantConfig) -> Auth0Client:
    return Auth0Client(
        http,
        tenant=tenant.name,
        api_base=tenant.api_base,
        audience=tenant.management_audience,
        credentials=Credentials(
            client_id=tenant.client_id,
            client_secret=tenant.client_secret.get_secret_value() if tenant.client_secret else None,
            token=tenant.token.get_secret_value() if tenant.token else None,
        ),
        timeout=tenant.timeout,
    )


async def fetch_snapshot(
    client: SnapshotSource,
    *,
    tenant: str,
    previous: Snapshot | None,
    watched_kids: Collection[str] = (),
    now: Callable[[], datetime] = utc_now,
) -> Snapshot:
    """Raises ``SourceError`` when the tenant cannot be read; never returns half a view."""
    if tenant != client.tenant:
        raise ValueError(f"the source reads tenant {client.tenant!r}, not {tenant!r}")
    return await client.fetch(previous=previous, watched_kids=watched_kids, now=now)
