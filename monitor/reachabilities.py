"""Each tenant's run of failed polls as last committed (``monitor.reachability``), kept for the
poller: read from the store when first needed, every tenant's in one query."""

from __future__ import annotations

import asyncio
from datetime import datetime

from monitor.config import TenantConfig
from monitor.errors import SourceError, StoreError
from monitor.model import Event
from monitor.reachability import Reachability, after_failure, after_success
from monitor.store.base import Store


class Reachabilities:
    """Each tenant's run of failed polls as last committed (``monitor.reachability``), loaded
    from the store when first needed, and what a poll's outcome makes of it.

    Every stored run is read in one query (``Store.load_reachabilities``) when the first is
    needed, and again after ``forget()``: a fleet's start-up makes one read, not one thread
    hand-off and query per tenant. A tenant forgotten alone, or every tenant once that read
    failed (one unreadable run fails its own tenant's polls, not the fleet's), is read alone."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._known: dict[str, Reachability] = {}
        self._complete = False  # every stored run is in ``_known``: a tenant not there is healthy
        self._alone: set[str] = set()  # forgotten one at a time since: read alone
        self._all_alone = False  # the read of every run failed: read each alone
        self._loading: asyncio.Task[None] | None = None
        self._generation = 0  # moves at each ``forget()``: what was read before is stale

    def forget(self, name: str | None = None) -> None:
        """Read the tenant's (or every tenant's) run from the store again when next needed."""
        if name is None:
            self._known.clear()
            self._alone.clear()
            self._complete = self._all_alone = False
            self._generation += 1
        else:
            self._known.pop(name, None)
            self._alone.add(name)

    def remember(self, state: Reachability) -> None:
        self._known[state.tenant] = state

    async def after_failure(
        self, config: TenantConfig, error: SourceError, *, at: datetime
    ) -> tuple[Reachability, list[Event]]:
        known = await self._of(config.name)
        reason, threshold = error.reason, config.unreachable_after
        return after_failure(known, reason=reason, error=str(error), at=at, threshold=threshold)

    async def after_success(
        self, name: str, *, at: datetime
    ) -> tuple[Reachability, list[Event]] | None:
        """None in the steady state (reachable before, and now): nothing to write."""
        known = await self._of(name)
        return None if known.healthy else after_success(known, at=at)

    async def _of(self, name: str) -> Reachability:
        while True:
            known = self._known.get(name)
            if known is not None:
                return known
            if self._all_alone or name in self._alone:
                return await self._read_alone(name)
            if self._complete:
                return Reachability(name)
            if self._loading is None:
                self._loading = asyncio.create_task(self._read_all(), name="reachabilities")
            try:
                await asyncio.shield(self._loading)
            except StoreError:
                self._all_alone = True

    async def _read_alone(self, name: str) -> Reachability:
        generation = self._generation
        known = await asyncio.to_thread(self._store.load_reachability, name)
        if generation == self._generation:
            self._alone.discard(name)
            # a run remembered meanwhile is this process' own commit: newer than the read
            known = self._known.setdefault(name, known)
        return known

    async def _read_all(self) -> None:
        generation = self._generation
        try:
            stored = await asyncio.to_thread(self._store.load_reachabilities)
        finally:
            self._loading = None
        if generation == self._generation:
            for name, state in stored.items():
                self._known.setdefault(name, state)
            self._complete = True
