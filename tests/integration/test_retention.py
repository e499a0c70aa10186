"""Retention (``retention.Pruner``) on a real SQLite store: batches while there is more, only
while leading, a fenced batch ends the leadership, and the metrics of rows pruned and size.
What may be deleted at all is the store contract's (test_store_contract.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from monitor.clock import Clock
from monitor.config import RetentionConfig
from monitor.metrics import Telemetry, build_registry
from monitor.model import EventType, make_event
from monitor.retention import Pruner
from monitor.store.base import Fence, Pruned
from monitor.store.sqlite import SQLiteStore
from tests.support.delivery import eventually
from tests.support.snapshots import snap

T0 = datetime(2025, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOW = T0 + 120 * DAY


def seed(store: SQLiteStore, *, delivered: int, pending: int = 0) -> None:
    """``delivered`` events of 100 days ago delivered 99 days ago, then ``pending`` more."""
    events = [
        make_event(
            "prod", EventType.KEY_ADDED, T0 + n * timedelta(seconds=1), [f"k{n}"], kid=f"k{n}"
        )
        for n in range(delivered + pending)
    ]
    store.save_poll(snap(), events, [(e.id, "chat") for e in events])
    for e in events[:delivered]:
        store.mark_delivered(e.id, "chat", T0 + DAY)


@dataclass
class Lease:
    """The leader lease as the pruner sees it: its fence, and a count of refusals."""

    fence: Fence | None
    refused: int = 0

    def fenced_out(self) -> None:
        self.refused += 1


class Run:
    def __init__(
        self,
        store: SQLiteStore,
        *,
        leading: bool = True,
        fence: Fence | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ):
        self.telemetry = Telemetry()
        self.leading = leading
        self.lease = Lease(fence)
        self.sleeps: list[float] = []

        async def record_sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.pruner = Pruner(
            store=store,
            telemetry=self.telemetry,
            policy=RetentionConfig,
            leading=lambda: self.leading,
            lease=lambda: self.lease,
            clock=Clock(now=lambda: NOW, sleep=sleep or record_sleep),
            batch=2,
        )

    def sample(self, name: str, **labels: str) -> float | None:
        return build_registry(self.telemetry, version="t").get_sample_value(name, labels)


async def test_the_leader_prunes_in_batches_until_nothing_is_left_and_counts_the_rows(
    store: SQLiteStore,
) -> None:
    seed(store, delivered=5, pending=1)
    run = Run(store)
    assert await run.pruner.prune() == Pruned(events=5, deliveries=5)
    assert len(run.sleeps) == 2  # three batches of at most 2 rows, a pause between two
    assert store.delivery_counts() == {("chat", "pending"): 1}
    assert len(store.recent_events()) == 1
    assert run.sample("keywatch_store_pruned_rows_total", table="events") == 5
    assert run.sample("keywatch_store_pruned_rows_total", table="deliveries") == 5
    assert await run.pruner.prune() == Pruned()


async def test_a_standby_prunes_nothing(store: SQLiteStore) -> None:
    seed(store, delivered=3)
    run = Run(store, leading=False)
    assert await run.pruner.prune() == Pruned()
    assert store.delivery_counts() == {("chat", "delivered"): 3}
    assert run.sample("keywatch_store_pruned_rows_total", table="events") == 0


async def test_a_refused_batch_ends_the_run_and_the_leadership(store: SQLiteStore) -> None:
    seed(store, delivered=3)
    stale = store.acquire_lease("leader", "a", now=NOW - DAY, ttl=30)
    store.acquire_lease("leader", "b", now=NOW, ttl=30)
    run = Run(store, fence=Fence("leader", stale or 0))
    assert await run.pruner.prune() == Pruned()
    assert run.lease.refused == 1
    assert store.delivery_counts() == {("chat", "delivered"): 3}


async def test_the_run_loop_reports_the_store_size_at_start_then_waits_an_hour(
    store: SQLiteStore,
) -> None:
    run = Run(store, sleep=lambda _: asyncio.Event().wait())  # the hour never ends
    task = asyncio.ensure_future(run.pruner.run())
    try:
        await eventually(
            lambda: run.sample("keywatch_store_size_bytes") is not None, what="the size"
        )
    finally:
        task.cancel()
        await asyncio.wait({task})
    assert run.sample("keywatch_store_size_bytes") == store.size_bytes()
