"""Which earlier problems a delivered event shows are over, shared by the kinds that can end
an alert (Alertmanager resolves it, PagerDuty resolves the incident).

A problem is scoped to its tenant and, for publication events, to the URL it was seen at: one
JWKS URL agreeing again says nothing of another's mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping

from monitor.model import Event, EventType

_KEYS_AGAIN = frozenset({EventType.TENANT_NO_CURRENT_KEY, EventType.TENANT_NO_NEXT_KEY})
CLEARS: Mapping[EventType, frozenset[EventType]] = {
    EventType.KEY_ROTATED: _KEYS_AGAIN,  # the tenant has a current and a next key again
    EventType.KEY_ADDED: _KEYS_AGAIN,
    EventType.TENANT_CURRENT_KEY_RESTORED: frozenset({EventType.TENANT_NO_CURRENT_KEY}),
    EventType.JWKS_CONSISTENT: frozenset({EventType.JWKS_MISMATCH}),
    EventType.MIRROR_SYNCED: frozenset({EventType.MIRROR_STALE}),
    EventType.TENANT_RECOVERED: frozenset({EventType.TENANT_UNREACHABLE}),
}
RECOVERIES: Mapping[EventType, EventType] = {
    # events that say nothing but "that problem is over": the problem each one ends
    EventType.TENANT_CURRENT_KEY_RESTORED: EventType.TENANT_NO_CURRENT_KEY,
    EventType.JWKS_CONSISTENT: EventType.JWKS_MISMATCH,
    EventType.MIRROR_SYNCED: EventType.MIRROR_STALE,
    EventType.TENANT_RECOVERED: EventType.TENANT_UNREACHABLE,
}
_SCOPED_BY_URL = frozenset(
    {
        EventType.JWKS_MISMATCH,
        EventType.JWKS_CONSISTENT,
        EventType.MIRROR_STALE,
        EventType.MIRROR_SYNCED,
    }
)


def where(event: Event) -> str | None:
    """The URL a publication event is about; None for every other event."""
    return event.details.get("url") if event.type in _SCOPED_BY_URL else None


def clears(event: Event, *, tenant: str, problem: EventType, url: str | None) -> bool:
    """Whether ``event`` ends the problem ``problem`` seen on ``tenant`` (at ``url``)."""
    return (
        event.tenant == tenant
        and problem in CLEARS.get(event.type, frozenset())
        and (problem not in _SCOPED_BY_URL or where(event) == url)
    )
