"""Baselines are committed many tenants to a transaction (``monitor.commits.GroupCommit``),
over a real SQLite store; a batch that fails commits nothing, and its polls detect again."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from monitor.commits import GroupCommit
from monitor.config import parse_config
from monitor.errors import FencedOut, StoreError
from monitor.metrics import Telemetry
from monitor.model import Event, EventType, Snapshot, TenantState, make_event
from monitor.poll import Poller
from monitor.simulator import SimulatorServer
from monitor.store.base import Fence, PollWrite
from monitor.store.sqlite import SQLiteStore
from tests.support.daemon import daemon_config
from tests.support.delivery import DEADLINE_SECONDS, eventually

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class BatchCountingStore(SQLiteStore):
    """A real SQLite store that remembers the size of each ``save_polls`` batch."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.batches: list[int] = []

    def save_polls(
        self, polls: Sequence[PollWrite], *, fence: Fence | None = None
    ) -> list[list[Event]]:
        self.batches.append(len(polls))
        return super().save_polls(polls, fence=fence)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BatchCountingStore]:
    opened = BatchCountingStore(tmp_path / "state.db")
    opened.migrate()
    yield opened
    opened.close()


def baseline(tenant: str, **details: object) -> PollWrite:
    state = TenantState.confirmed(Snapshot(tenant=tenant, taken_at=T0, keys={}))
    found = make_event(tenant, EventType.KEY_ADDED, T0, [tenant], kid="k1", details=details)
    return PollWrite(state, [found])


def refuse_writes(store: SQLiteStore, refuse: bool) -> None:
    with store._session("test", write=False) as session:
        session.execute(f"PRAGMA query_only = {'ON' if refuse else 'OFF'}")


async def test_polls_queued_together_commit_in_one_transaction(store: BatchCountingStore) -> None:
    commits = GroupCommit(store)
    writes = [baseline(f"t{n}") for n in range(5)]
    results = await asyncio.gather(*(commits.save(write, fence=None) for write in writes))
    assert results == [list(write.events) for write in writes]
    assert store.batches == [5]
    assert sorted(store.load_states()) == [f"t{n}" for n in range(5)]
    assert await commits.save(writes[0], fence=None) == []  # known: committed, nothing new
    assert store.batches == [5, 1]


async def test_a_poll_that_cannot_be_written_fails_alone(store: BatchCountingStore) -> None:
    commits = GroupCommit(store)
    writes = [baseline("a"), baseline("bad", oops=object()), baseline("c")]
    results = await asyncio.gather(
        *(commits.save(write, fence=None) for write in writes), return_exceptions=True
    )
    assert results[0] == list(writes[0].events) and results[2] == list(writes[2].events)
    assert isinstance(results[1], StoreError) and "cannot serialise" in str(results[1])
    assert sorted(store.load_states()) == ["a", "c"]


async def test_a_fenced_out_batch_fails_every_poll_and_commits_nothing(
    store: BatchCountingStore,
) -> None:
    old = Fence("leader", store.acquire_lease("leader", "a", now=T0, ttl=30) or 0)
    store.acquire_lease("leader", "b", now=T0.replace(minute=5), ttl=30)
    commits = GroupCommit(store)
    results = await asyncio.gather(
        *(commits.save(baseline(name), fence=old) for name in "abc"), return_exceptions=True
    )
    assert [type(result) for result in results] == [FencedOut] * 3
    assert len({id(result) for result in results}) == 3  # each poll raises its own
    assert store.batches == [3]
    assert store.load_states() == {} and store.recent_events() == []


NAMES = ["tenant-1", "tenant-2", "tenant-3"]


def poller_of(
    server: SimulatorServer,
    store: SQLiteStore,
    http: httpx.AsyncClient,
    tmp_path: Path,
    *,
    telemetry: Telemetry | None = None,
    max_concurrent: int = 10,
) -> Poller:
    """A leading poller of the simulator's three tenants, none polled yet, on ``store``."""
    settings = parse_config(daemon_config(server, tmp_path, tenants=NAMES))
    poller = Poller(
        store=store,
        client_of=lambda _: http,
        telemetry=telemetry or Telemetry(),
        wake=lambda _: None,
        leading=lambda: True,
        max_concurrent=max_concurrent,
    )
    for tenant in settings.tenants:
        poller.add_tenant(tenant, None)
    return poller


@pytest.mark.simulator(tenants=3)
async def test_a_failed_batch_leaves_the_tenants_unpolled_and_the_next_poll_detects_again(
    server: SimulatorServer, store: BatchCountingStore, tmp_path: Path
) -> None:
    names = NAMES
    async with httpx.AsyncClient() as http:
        poller = poller_of(server, store, http, tmp_path)
        refuse_writes(store, True)
        assert await asyncio.gather(*(poller.poll(name) for name in names)) == [[], [], []]
        assert [poller.tenants[name].state for name in names] == [None, None, None]
        refuse_writes(store, False)
        await asyncio.gather(*(poller.poll(name) for name in names))
    stored = store.load_states()
    assert sorted(stored) == names
    assert all(poller.tenants[name].state == stored[name] for name in names)
    assert sum(store.batches) == 6  # each baseline was tried twice, in batches


class GatedStore(BatchCountingStore):
    """Holds every ``save_polls`` batch until ``gate`` opens (``entered``: one is held)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def save_polls(
        self, polls: Sequence[PollWrite], *, fence: Fence | None = None
    ) -> list[list[Event]]:
        self.entered.set()
        if not self.gate.wait(timeout=DEADLINE_SECONDS):
            raise AssertionError("the test never opened the gate")
        return super().save_polls(polls, fence=fence)


@pytest.mark.simulator(tenants=3)
async def test_a_baseline_waits_for_its_commit_without_holding_a_poll_slot(
    server: SimulatorServer, tmp_path: Path
) -> None:
    store = GatedStore(tmp_path / "gated.db")
    store.migrate()
    names, telemetry = NAMES, Telemetry()
    async with httpx.AsyncClient() as http:
        poller = poller_of(server, store, http, tmp_path, telemetry=telemetry, max_concurrent=1)
        polls = [asyncio.create_task(poller.poll(name)) for name in names]
        try:
            # one slot: the later tenants fetch only if the first baseline's commit gave it back
            listed = server.simulator.tenant
            await eventually(
                lambda: (
                    store.entered.is_set()
                    and all(listed(name).requests["list_keys"] for name in names)
                    and not poller._slots.locked()
                ),  # the last one is past its fetch: queued
                what="every tenant fetched while the first batch is held",
            )
            assert telemetry.polled_once() == (0, 3)  # nothing shown polled before it is durable
            assert store.load_states() == {}
        finally:
            store.gate.set()
            await asyncio.gather(*polls, return_exceptions=True)
    assert store.batches == [1, 2]
    assert sorted(store.load_states()) == names
    assert telemetry.polled_once() == (3, 3)
    store.close()
