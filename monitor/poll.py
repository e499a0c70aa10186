"""One poll of one tenant: fetch, double-check what looks wrong, build the snapshot.

A suspicious answer (no keys, no current key) is fetched once more before it is believed, and a
kid that vanished since the last snapshot (or a configured kid missing from the list) is
confirmed with ``GET /keys/signing/{kid}`` before detection may call it removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from datetime import datetime

import httpx

from monitor.clock import utc_now
from monitor.config import TenantConfig
from monitor.detect import is_suspicious
from monitor.model import KeyState, Snapshot
from monitor.sources.auth0 import Auth0Client, Credentials

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


def _snapshot(tenant: str, keys: Iterable[KeyState], taken_at: datetime) -> Snapshot:
    return Snapshot(tenant=tenant, taken_at=taken_at, keys={key.kid: key for key in keys})


async def fetch_snapshot(
    client: Auth0Client,
    *,
    tenant: str,
    previous: Snapshot | None,
    watched_kids: Collection[str] = (),
    now: Callable[[], datetime] = utc_now,
) -> Snapshot:
    """Raises ``SourceError`` when the tenant cannot be read; never returns half a view."""
    snapshot = _snapshot(tenant, await client.list_signing_keys(), now())
    if is_suspicious(snapshot):
        log.warning(
            "suspicious answer (%d keys, no current key); fetching again before believing it",
            len(snapshot.keys),
            extra={"tenant": tenant},
        )
        snapshot = _snapshot(tenant, await client.list_signing_keys(), now())

    expected = set(watched_kids) | (set(previous.keys) if previous else set())
    confirmed: dict[str, KeyState] = {}
    for kid in sorted(expected - set(snapshot.keys)):
        key = await client.get_signing_key(kid)
        if key is not None:
            confirmed[kid] = key
        else:
            log.info("kid confirmed gone (404)", extra={"tenant": tenant, "kid": kid})
    if not confirmed:
        return snapshot
    return Snapshot(tenant=tenant, taken_at=snapshot.taken_at, keys={**snapshot.keys, **confirmed})
