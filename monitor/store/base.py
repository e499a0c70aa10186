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

from monitor.model import Event, Snapshot, TenantState
from monitor.reachability import Reachability


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
    failures: int = 0  # failed attempts that advance the backoff: every one but 429 answers


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """The undelivered part of one destination's outbox."""

    pending: int = 0
    dead: int = 0
    oldest_pending_at: datetime | None = None  # ``created_at`` of the oldest pending delivery


@dataclass(frozen=True, slots=True)
class PollWrite:
    """What one poll commits (``Store.save_polls``): the tenant's new state, the events found
    and one (event id, destination) pair per delivery owed."""

    state: TenantState
    events: Sequence[Event] = ()
    deliveries: Sequence[tuple[str, str]] = ()


LEADER_LEASE = "leader"
"""The name of the lease row the replicas of one store compete for."""


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a leader writes under: its name and the token the leader took it with. The
    store refuses the write (``FencedOut``) once the lease's token is another, newer one."""

    lease: str
    token: int


class Fencing(Protocol):
    """What a leader's writes carry (``leader.LeaderLease``): the fence of the lease it holds,
    and what to do when the store refused one (``FencedOut``): stop leading."""

    @property
    def fence(self) -> Fence | None: ...

    def fenced_out(self) -> None: ...


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """One lease row as stored (``keywatch status``)."""

    holder: str | None  # None once released
    token: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one ``Store.prune`` call deleted."""

    events: int = 0
    deliveries: int = 0


class Store(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema (numbered migrations, each applied once)."""

    def ping(self) -> None:
        """Raise ``StoreError`` unless the store answers and its last write, if any, worked
        (a full disk or a read-only file still answers reads)."""

    def load_snapshot(self, tenant: str) -> Snapshot | None:
        """The tenant's last confirmed snapshot."""

    def load_snapshots(self) -> dict[str, Snapshot]: ...

    def load_states(self) -> dict[str, TenantState]:
        """Every tenant's state: confirmed snapshot and what awaits confirmation."""

    def save_poll(
        self,
        state: TenantState | Snapshot,
        events: Sequence[Event],
        deliveries: Sequence[tuple[str, str]] = (),
        *,
        fence: Fence | None = None,
    ) -> list[Event]:
        """In ONE transaction: replace the tenant's state (a bare ``Snapshot`` is one believed
        with nothing pending), insert the events (a known id is a no-op) and one pending
        delivery per (event id, destination) pair. Returns the events that were new.

        Every write below that takes a ``fence`` raises ``FencedOut``, writing nothing, when
        the fence's lease has a newer token; the check is part of each guarded statement."""

    def save_polls(
        self, polls: Sequence[PollWrite], *, fence: Fence | None = None
    ) -> list[list[Event]]:
        """In ONE transaction, what ``save_poll`` does for each poll, in order (a tenant's later
        poll replaces its earlier one). Returns each poll's new events, in the polls' order.
        A failure, or ``FencedOut``, commits none of them."""

    def load_reachability(self, tenant: str) -> Reachability:
        """The tenant's run of failed polls; a healthy ``Reachability`` when there is none."""

    def load_reachabilities(self) -> dict[str, Reachability]:
        """Every stored run of failed polls, by tenant, in one read: a tenant missing from it
        is reachable (what ``load_reachability`` answers for it)."""

    def save_reachability(
        self,
        state: Reachability,
        events: Sequence[Event],
        deliveries: Sequence[tuple[str, str]] = (),
        *,
        fence: Fence | None = None,
    ) -> list[Event]:
        """In ONE transaction: replace the tenant's reachability (a healthy one deletes it),
        insert the events (a known id is a no-op) and one pending delivery per (event id,
        destination) pair. Returns the events that were new."""

    def recent_events(self, tenant: str | None = None, limit: int = 100) -> list[Event]:
        """Newest first."""

    def pending_deliveries(self, destination: str, now: datetime, limit: int) -> list[Delivery]:
        """Pending deliveries of one destination due at ``now``, oldest event first."""

    def queued_deliveries(self, destination: str, limit: int) -> list[Delivery]:
        """The head of one destination's queue: pending deliveries, due or not, in the order
        they must be sent (detection time, then the order of the events within one poll, then
        event id)."""

    def claim_delivery(self, event_id: str, destination: str, *, fence: Fence) -> bool:
        """Record, under ``fence``, that its leader sends this delivery now. False when the
        delivery is no longer pending (send nothing)."""

    def mark_delivered(
        self, event_id: str, destination: str, at: datetime, *, fence: Fence | None = None
    ) -> None: ...

    def mark_failed(
        self,
        event_id: str,
        destination: str,
        *,
        error: str,
        retry_at: datetime | None,
        throttled: bool = False,
        fence: Fence | None = None,
    ) -> None:
        """Count an attempt; ``retry_at=None`` moves the delivery to the dead state. A
        ``throttled`` attempt (a 429 answer) does not count as a failure for the backoff."""

    def requeue_dead(
        self, *, now: datetime, destination: str | None = None, event_id: str | None = None
    ) -> int:
        """Put dead deliveries (all, or those of one destination and/or event) back in the queue
        as if new: pending, due at ``now``, attempts and failures reset, ``created_at = now``
        (a fresh ``max_age``). The last error is kept. Returns how many were requeued."""

    def dead_deliveries(
        self, *, destination: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Dead deliveries, oldest event first."""

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        """{(destination, state): count}."""

    def outbox_stats(self) -> dict[str, OutboxStats]:
        """Pending and dead deliveries per destination (only destinations that have some);
        cheap: it does not read delivered rows."""

    def oldest_pending_at(self) -> datetime | None:
        """When the oldest pending delivery was created; None when nothing is pending."""

    def acquire_lease(self, name: str, holder: str, *, now: datetime, ttl: float) -> int | None:
        """Take or renew the lease ``name`` for ``holder`` until ``now + ttl`` seconds; returns
        its token, or None while another holder's lease has not expired. The token grows by
        one whenever the holder changes (a renewal keeps it). Holders' clocks must agree to
        well within ``ttl``."""

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (on shutdown) if ``holder`` still holds it; the token stays."""

    def lease_info(self, name: str) -> LeaseInfo | None:
        """The lease row ``name``; None when it was never taken."""

    def prune(
        self,
        *,
        events_before: datetime,
        deliveries_before: datetime,
        limit: int,
        fence: Fence | None = None,
    ) -> Pruned:
        """In one transaction, delete at most ``limit`` delivered deliveries delivered before
        ``deliveries_before`` and at most ``limit`` events detected before ``events_before``
        that no delivery refers to any more. Pending and dead deliveries, and their events,
        are never deleted."""

    def size_bytes(self) -> int:
        """The space the store's tables take (SQLite: the database file without its WAL)."""

    def close(self) -> None: ...
