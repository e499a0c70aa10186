"""Which destination gets which event: its tenants, then its event types or least severity."""

from __future__ import annotations

from monitor.config import DestinationConfig
from monitor.model import Event, Severity

__all__ = ["matches"]


def matches(destination: DestinationConfig, event: Event) -> bool:
    """Whether ``event`` goes to ``destination``: its tenant, then its type or severity."""
    if destination.tenants and event.tenant not in destination.tenants:
        return False
    if destination.events:
        return event.type.value in destination.events
    return event.severity >= Severity.parse(destination.min_severity)
