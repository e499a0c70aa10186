"""The ``Store`` protocol every state backend implements, and the values it returns.

Methods are synchronous and thread-safe; the daemon calls them through ``asyncio.to_thread``.
Every write is one transaction: either all of it is committed or none of it, and a failure is
raised as ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from monitor.model import Event, Snapshot


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event owed to one destination (the outbox row)."""

    event: Event
    destination: str
    state: str  # pending | delivered | dead
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None


class Store(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema (numbered migrations, each applied once)."""

    def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers."""

    def load_snapshot(self, tenant: str) -> Snapshot | None: ...

    def load_snapshots(self) -> dict[str, Snapshot]: ...

    def save_poll(
        self,
        snapshot: Snapshot,
        events: Sequence[Event],
        deliveries: Sequence[tuple[str, str]] = (),
    ) -> list[Event]:
        """In ONE transaction: replace the tenant's snapshot, insert the events (a known id is a
        no-op) and one pending delivery per (event id, destination) pair. Returns the events
        that were new."""

    def recent_events(self, tenant: str | None = None, limit: int = 100) -> list[Event]:
        """Newest first."""

    def pending_deliveries(self, destination: str, now: datetime, limit: int) -> list[Delivery]:
        """Pending deliveries of one destination due at ``now``, oldest event first."""

    def mark_delivered(self, event_id: str, destination: str, at: datetime) -> None: ...

    def mark_failed(
        self, event_id: str, destination: str, *, error: str, retry_at: datetime | None
    ) -> None:
        """Count an attempt; ``retry_at=None`` moves the delivery to the dead state."""

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        """{(destination, state): count}."""

    def oldest_pending_at(self) -> datetime | None:
        """When the oldest pending delivery was created; None when nothing is pending."""

    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl`` seconds. False
        while another holder's lease has not expired. Holders' clocks must agree to well
        within ``ttl``."""

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (on shutdown) if ``holder`` still holds it."""

    def close(self) -> None: ...
