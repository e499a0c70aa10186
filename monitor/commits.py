"""A poll's commit (``Commits``), and the group commit of baselines: many tenants' polls in
one store transaction (``Store.save_polls``).

A fleet's start-up commits a baseline for every tenant, and one transaction (and one thread
hand-off) per tenant was a third of the start-up's CPU. ``GroupCommit.save`` queues a poll
and waits for its batch: while one batch commits in the store's thread, the polls finishing
meanwhile gather into the next, so a batch is as large as the store is slow, and a lone poll
waits for nothing but its own transaction.

All or nothing, per batch: a failure or ``FencedOut`` reaches every poll of the batch, so none
of them updates its in-memory state and each detects the same again on its next poll. A batch
refused by a ``StoreError`` is tried again one poll at a time, so one poll that cannot be
written (its events cannot be serialised, say) does not fail the tenants that share its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.errors import FencedOut, StoreError
from monitor.model import Event
from monitor.store.base import Fence, PollWrite, Store

MAX_BATCH = 500
"""Polls per transaction at most: a transaction holds the store's one lock (and, on SQLite,
the database's write lock) for its whole length."""


@dataclass
class _Queued:
    fence: Fence | None
    writes: list[PollWrite] = field(default_factory=list)
    waiters: list[asyncio.Future[list[Event]]] = field(default_factory=list)


class Commits:
    """Where a poll's writes go: a tenant's first state (its baseline) with other tenants' (a
    fleet's start-up), any later change at once, alone."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._baselines = GroupCommit(store)

    async def save(self, write: PollWrite, *, fence: Fence | None, baseline: bool) -> list[Event]:
        """The poll's new events; raises what the store raised (``StoreError``, ``FencedOut``)."""
        if baseline:
            return await self._baselines.save(write, fence=fence)
        state, events, deliveries = write.state, write.events, write.deliveries
        return await asyncio.to_thread(
            self._store.save_poll, state, events, deliveries, fence=fence
        )


class GroupCommit:
    """Commits queued polls in batches, one batch at a time; see the module docstring."""

    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: list[_Queued] = []
        self._committer: asyncio.Task[None] | None = None

    async def save(self, write: PollWrite, *, fence: Fence | None) -> list[Event]:
        """Commit ``write`` with the polls queued alongside it; returns its new events. Raises
        what the store raised for its batch (``StoreError``, ``FencedOut``)."""
        waiter: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        batch = self._batch_for(fence)
        batch.writes.append(write)
        batch.waiters.append(waiter)
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_queued(), name="group-commit")
        return await waiter

    def _batch_for(self, fence: Fence | None) -> _Queued:
        """The open batch of ``fence``: every write of one transaction carries the same fence."""
        last = self._queue[-1] if self._queue else None
        if last is None or last.fence != fence or len(last.writes) >= self._max_batch:
            last = _Queued(fence)
            self._queue.append(last)
        return last

    async def _commit_queued(self) -> None:
        try:
            await asyncio.sleep(0)  # the polls finishing in this turn of the loop join in
            while self._queue:
                batch = self._queue.pop(0)
                try:
                    outcomes = await asyncio.to_thread(self._commit, batch.writes, batch.fence)
                except asyncio.CancelledError:
                    self._queue.insert(0, batch)  # its polls are cancelled with the rest
                    raise
                except Exception as exc:  # a bug: each poll of the batch fails with it
                    outcomes = [exc] * len(batch.waiters)
                for waiter, outcome in zip(batch.waiters, outcomes, strict=True):
                    _settle(waiter, outcome)
        finally:
            for batch in self._queue:  # cancelled with polls still queued
                for waiter in batch.waiters:
                    waiter.cancel()
            self._queue.clear()
            self._committer = None

    def _commit(
        self, writes: Sequence[PollWrite], fence: Fence | None
    ) -> list[list[Event] | Exception]:
        """Each poll's new events, or what refused it (in the store's thread)."""
        try:
            return list(self._store.save_polls(writes, fence=fence))
        except FencedOut as exc:
            return [exc] * len(writes)
        except StoreError as exc:
            if len(writes) == 1:
                return [exc]
        outcomes: list[list[Event] | Exception] = []
        for write in writes:  # alone, so one poll that cannot be written fails alone
            try:
                outcomes.append(
                    self._store.save_poll(write.state, write.events, write.deliveries, fence=fence)
                )
            except StoreError as exc:
                outcomes.append(exc)
        return outcomes


def _settle(waiter: asyncio.Future[list[Event]], outcome: list[Event] | Exception) -> None:
    if waiter.done():  # its poll was cancelled meanwhile
        return
    if isinstance(outcome, Exception):
        # each poll raises its own copy: one exception object raised in many tasks would
        # collect all their tracebacks
        copy = type(outcome)(*outcome.args) if isinstance(outcome, StoreError) else outcome
        copy.__cause__ = outcome.__cause__
        waiter.set_exception(copy)
    else:
        waiter.set_result(outcome)
