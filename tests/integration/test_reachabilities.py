"""The poller's view of each tenant's run of failed polls (``monitor.reachabilities``), over a
real SQLite store: every stored run read in one query, a tenant forgotten alone read alone,
and one unreadable run failing its own tenant only."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.errors import StoreError
from monitor.model import EventType
from monitor.reachabilities import Reachabilities
from monitor.reachability import Reachability
from monitor.store.sqlite import SQLiteStore
from tests.support.delivery import DEADLINE_SECONDS, eventually
from tests.support.snapshots import outage

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class ReadCountingStore(SQLiteStore):
    """A real SQLite store that records its reads of runs ("*" for all of them) and can hold
    the read of all of them until ``gate`` opens."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.reading_all = threading.Event()

    def load_reachability(self, tenant: str) -> Reachability:
        self.reads.append(tenant)
        return super().load_reachability(tenant)

    def load_reachabilities(self) -> dict[str, Reachability]:
        self.reads.append("*")
        self.reading_all.set()
        if not self.gate.wait(timeout=DEADLINE_SECONDS):
            raise AssertionError("the test never opened the gate")
        return super().load_reachabilities()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ReadCountingStore]:
    opened = ReadCountingStore(tmp_path / "state.db")
    opened.migrate()
    opened.save_reachability(outage(2, "prod")[0], [])  # announced: recovers with an event
    opened.save_reachability(outage(1, "staging")[0], [])  # below the threshold: ends silently
    yield opened
    opened.close()


async def recoveries(runs: Reachabilities, *names: str) -> list[list[EventType] | None]:
    later = T0 + timedelta(hours=1)
    changes = await asyncio.gather(*(runs.after_success(name, at=later) for name in names))
    return [None if change is None else [e.type for e in change[1]] for change in changes]


async def test_every_stored_run_is_read_in_one_query_for_all_the_polls_that_need_one(
    store: ReadCountingStore,
) -> None:
    runs = Reachabilities(store)
    assert await recoveries(runs, "prod", "staging", "dev") == [
        [EventType.TENANT_RECOVERED],
        [],
        None,  # reachable: nothing stored, nothing to write
    ]
    assert await recoveries(runs, "prod", "other") == [[EventType.TENANT_RECOVERED], None]
    assert store.reads == ["*"]


async def test_a_tenant_forgotten_alone_is_read_alone_and_forgetting_all_reads_all_again(
    store: ReadCountingStore,
) -> None:
    runs = Reachabilities(store)
    await recoveries(runs, "prod")
    runs.forget("staging")
    store.save_reachability(Reachability("staging"), [])  # another replica saw it recover
    assert await recoveries(runs, "staging", "prod") == [None, [EventType.TENANT_RECOVERED]]
    assert store.reads == ["*", "staging"]
    runs.forget()
    store.save_reachability(Reachability("prod"), [])
    assert await recoveries(runs, "prod") == [None]
    assert store.reads == ["*", "staging", "*"]


async def test_a_run_remembered_during_the_read_of_all_is_kept(store: ReadCountingStore) -> None:
    runs = Reachabilities(store)
    store.gate.clear()
    waiting = asyncio.create_task(recoveries(runs, "prod"))
    try:
        await eventually(store.reading_all.is_set, what="the read of every run")
        runs.remember(Reachability("prod"))  # this process' own commit: newer than the read
    finally:
        store.gate.set()
    assert await waiting == [None]


async def test_an_unreadable_run_fails_its_own_tenant_and_the_others_are_read_alone(
    store: ReadCountingStore,
) -> None:
    with store._session("test", write=True) as session:
        session.execute("UPDATE reachability SET body = '{}' WHERE tenant = ?", ("staging",))
    runs = Reachabilities(store)
    assert await recoveries(runs, "prod") == [[EventType.TENANT_RECOVERED]]
    with pytest.raises(StoreError, match="reachability of tenant 'staging' is unreadable"):
        await recoveries(runs, "staging")
    assert await recoveries(runs, "dev") == [None]
    assert store.reads == ["*", "prod", "staging", "dev"]
