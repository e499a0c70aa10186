"""Retention: the leader deletes old events and delivered deliveries, in small batches, off the
hot path.

``Pruner.run`` wakes every ``interval`` seconds (hourly), and the leader deletes what the
``retention`` settings allow (``Store.prune``: never a pending or dead delivery, nor an event a
delivery still refers to), ``batch`` rows of each table per transaction with a pause between
batches, so a poll or a delivery waits for one small transaction at most. Every batch carries
the lease's fence (a refused one ends the run and the leadership: ``Fencing.fenced_out``). A
standby deletes nothing; every process reads the store's size for ``keywatch_store_size_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from monitor.clock import Clock
from monitor.config import RetentionConfig
from monitor.errors import FencedOut, StoreError
from monitor.metrics import Telemetry
from monitor.store.base import Fencing, Pruned, Store

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0
"""Seconds between two retention runs (the first one is this long after the start)."""
PRUNE_BATCH = 500
"""Rows of each table deleted per transaction."""
BATCH_PAUSE = 0.1
"""Seconds between two batches: the polls and the dispatcher get the store in between."""


class Pruner:
    """Runs the retention policy while this process leads; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        telemetry: Telemetry,
        policy: Callable[[], RetentionConfig],
        leading: Callable[[], bool],
        lease: Callable[[], Fencing | None],
        clock: Clock | None = None,
        interval: float = PRUNE_INTERVAL,
        batch: int = PRUNE_BATCH,
    ) -> None:
        self._store = store
        self._telemetry = telemetry
        self._policy = policy
        self._leading = leading
        self._lease = lease
        self._clock = clock or Clock()
        self._interval = interval
        self._batch = batch

    async def run(self) -> None:
        """Read the size now, then prune (when leading) and read it again every interval."""
        await self._read_size()
        while True:
            await self._clock.sleep(self._interval)
            await self.prune()
            await self._read_size()

    async def prune(self) -> Pruned:
        """One retention run, batch after batch while there is more and this process leads;
        returns what it deleted. Store failures are logged and wait for the next run."""
        total = Pruned()
        policy = self._policy()
        now = self._clock.now()
        events_before = now - timedelta(seconds=policy.events)
        deliveries_before = now - timedelta(seconds=policy.deliveries)
        while self._leading():
            lease = self._lease()
            try:
                done = await asyncio.to_thread(
                    self._store.prune,
                    events_before=events_before,
                    deliveries_before=deliveries_before,
                    limit=self._batch,
                    fence=lease.fence if lease else None,
                )
            except FencedOut as exc:
                log.warning("retention stopped, stepping down: %s", exc)
                if lease is not None:
                    lease.fenced_out()
                break
            except StoreError as exc:
                log.warning("retention run failed (tried again in an hour): %s", exc)
                break
            self._telemetry.record_pruned(events=done.events, deliveries=done.deliveries)
            total = Pruned(total.events + done.events, total.deliveries + done.deliveries)
            if max(done.events, done.deliveries) < self._batch:
                break
            await self._clock.sleep(BATCH_PAUSE)
        if total != Pruned():
            log.info(
                "retention: deleted %d events and %d delivered deliveries",
                total.events,
                total.deliveries,
            )
        return total

    async def _read_size(self) -> None:
        try:
            self._telemetry.set_store_size(await asyncio.to_thread(self._store.size_bytes))
        except StoreError as exc:
            log.warning("cannot read the store's size: %s", exc)
