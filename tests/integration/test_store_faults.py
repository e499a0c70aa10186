"""The daemon survives its store failing: PostgreSQL restarted or unreachable, SQLite's disk
full or its file read-only. Each time it keeps running, /healthz and /readyz report the
problem, what could not be committed is committed later, nothing detected is lost, nothing is
sent twice, and it recovers by itself once the store is back.

PostgreSQL is a private server (``PrivatePostgres``) that the test stops and starts, so other
tests' server is left alone; it stays unreachable for 30 s while the test checks, once a
second, that the daemon keeps running and keeps reporting the problem. The full disk is a
real 2 MB tmpfs filled to the last byte. A file made read-only under a running process would
change nothing (its descriptor stays writable), so the read-only store is SQLite's own
``query_only`` on the daemon's connection, which refuses writes with SQLite's real error.
Without PostgreSQL's binaries or permission to mount these tests skip, except under CI=true.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest

from monitor.config import parse_config
from monitor.model import Event, EventType
from monitor.simulator import SimulatorServer
from monitor.simulator.tenant import SimulatedTenant
from monitor.store import Store, open_store
from monitor.store.sqlite import SQLiteStore
from tests.support.daemon import daemon_config, hook_destination, running
from tests.support.delivery import Answer, Receiver, eventually
from tests.support.deploy import wait_for
from tests.support.processes import DaemonProcess, PrivatePostgres, fill, small_filesystem

pytestmark = [pytest.mark.timeout(120), pytest.mark.simulator(tenants=1, key_pool_size=6)]

DEADLINE = 20.0
OUTAGE_SECONDS = 30.0


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def answer(replica: DaemonProcess, path: str) -> tuple[int, str] | None:
    response = replica.get(path)
    return None if response is None else (response.status_code, response.text)


def healthy(replica: DaemonProcess) -> bool:
    return answer(replica, "/healthz") == (200, "ok\n") and ready(replica)


def ready(replica: DaemonProcess) -> bool:
    response = answer(replica, "/readyz")
    return response is not None and response[0] == 200


def reports_store_problem(replica: DaemonProcess, words: str) -> bool:
    """/healthz and /readyz both answer 503 naming the store's problem."""
    health, readiness = answer(replica, "/healthz"), answer(replica, "/readyz")
    return (
        health is not None
        and readiness is not None
        and health[0] == readiness[0] == 503
        and "store unavailable" in health[1]
        and words in health[1]
    )


def rotations(store: Store) -> list[Event]:
    return [e for e in store.recent_events() if e.type is EventType.KEY_ROTATED]


def settled(
    store: Store, receiver: Receiver, rotated: int, paths: tuple[str, ...] = ("/hook", "/slack")
) -> bool:
    """``rotated`` rotations are stored, nothing is left to send, and every stored event has
    reached each destination that wants it (/hook: all, /slack: rotations)."""
    events = store.recent_events()
    wanted = {"/hook": events, "/slack": [e for e in events if e.type is EventType.KEY_ROTATED]}
    return (
        len(wanted["/slack"]) == rotated
        and all(state == "delivered" for _, state in store.delivery_counts())
        and all(
            {r.event_id for r in receiver.received(path)} == {e.id for e in wanted[path]}
            for path in paths
        )
    )


def assert_none_sent_twice(receiver: Receiver) -> None:
    for path in ("/hook", "/slack"):
        posted = Counter(r.event_id for r in receiver.received(path))
        assert set(posted.values()) <= {1}, f"{path}: {posted}"


@contextmanager
def healthy_daemon(
    server: SimulatorServer,
    receiver: Receiver,
    tmp_path: Path,
    *,
    state: str,
    extra_lines: str = "",
) -> Iterator[DaemonProcess]:
    """``keywatch run`` on the store ``state``, once /healthz and /readyz answer 200."""
    daemon = DaemonProcess(
        "daemon", server, receiver, tmp_path, state=state, extra_lines=extra_lines
    )
    with daemon:
        wait_for(
            lambda: healthy(daemon), timeout=DEADLINE, what="start", diagnostics=daemon.log_tail
        )
        yield daemon


@pytest.fixture
def tenant(server: SimulatorServer) -> SimulatedTenant:
    """The one simulated tenant, tenant-1."""
    return server.simulator.tenant("tenant-1")


@pytest.fixture
def daemon(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path, postgres: PrivatePostgres
) -> Iterator[DaemonProcess]:
    """The PostgreSQL tests' daemon: healthy, on the private server, holding a 3 s lease."""
    with healthy_daemon(
        server, receiver, tmp_path, state=postgres.url, extra_lines="lease: {ttl: 3s}"
    ) as daemon:
        yield daemon


def wait_until_recovered(
    daemon: DaemonProcess, store: Store, receiver: Receiver, rotated: int, *, what: str
) -> None:
    """Wait until the daemon is healthy again and ``settled`` holds for ``rotated``."""
    wait_for(
        lambda: settled(store, receiver, rotated) and healthy(daemon),
        timeout=DEADLINE,
        what=what,
        diagnostics=daemon.log_tail,
    )


# --- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_restarted_mid_run(
    tenant: SimulatedTenant, receiver: Receiver, postgres: PrivatePostgres, daemon: DaemonProcess
) -> None:
    tenant.rotate()  # committed before, during or after the restart: never lost
    postgres.restart()
    with closing(open_store(postgres.url)) as store:
        wait_until_recovered(daemon, store, receiver, 1, what="rotation 1 stored and sent")
        tenant.rotate()  # the second rotation on the recovered store
        wait_until_recovered(daemon, store, receiver, 2, what="rotation 2 stored and sent")
        assert daemon.running()
        assert_none_sent_twice(receiver)


@pytest.mark.timeout(OUTAGE_SECONDS + 3 * DEADLINE)
def test_postgres_unreachable_for_30_seconds(
    tenant: SimulatedTenant, receiver: Receiver, postgres: PrivatePostgres, daemon: DaemonProcess
) -> None:
    postgres.stop()
    outage_ends = time.monotonic() + OUTAGE_SECONDS
    tenant.rotate()  # made while nothing can be committed
    wait_for(
        lambda: (
            reports_store_problem(daemon, "ping failed") and daemon.metric("keywatch_leader") == 0.0
        ),
        timeout=DEADLINE,
        what="/healthz and /readyz to report the store, and the daemon to stand by",
        diagnostics=daemon.log_tail,
    )
    paced = threading.Event()  # never set: its wait paces the checks, once a second
    while time.monotonic() < outage_ends:
        assert daemon.running(), daemon.log_tail()
        assert reports_store_problem(daemon, "ping failed"), daemon.log_tail()
        paced.wait(1.0)
    postgres.start()
    with closing(open_store(postgres.url)) as store:
        wait_until_recovered(
            daemon,
            store,
            receiver,
            1,
            what="the recovery, and the rotation stored and sent",
        )
        assert daemon.metric("keywatch_leader") == 1.0
        assert_none_sent_twice(receiver)


# --- SQLite -----------------------------------------------------------------------------------


def test_sqlite_disk_full(
    server: SimulatorServer, tenant: SimulatedTenant, receiver: Receiver, tmp_path: Path
) -> None:
    with small_filesystem(tmp_path / "disk") as disk:
        state = disk / "state.db"
        with healthy_daemon(server, receiver, tmp_path, state=f"sqlite:///{state}") as daemon:
            filler = fill(disk)
            tenant.rotate()
            wait_for(
                lambda: reports_store_problem(daemon, "database or disk is full"),
                timeout=DEADLINE,
                what="/healthz and /readyz to report the full disk",
                diagnostics=daemon.log_tail,
            )
            assert receiver.received() == []  # nothing is sent before it is committed
            filler.unlink()
            with closing(SQLiteStore(state)) as store:
                wait_until_recovered(
                    daemon,
                    store,
                    receiver,
                    1,
                    what="the recovery, and the rotation stored and sent",
                )
                assert daemon.running()
                assert_none_sent_twice(receiver)


def refuse_writes(store: Store, refuse: bool) -> None:
    with store._session("test", write=False) as session:  # type: ignore[attr-defined]
        session.execute(f"PRAGMA query_only = {'ON' if refuse else 'OFF'}")


async def test_sqlite_read_only_while_a_notification_is_in_flight(
    server: SimulatorServer,
    tenant: SimulatedTenant,
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The answer to a POST comes while the store refuses writes: the outcome is committed
    once it accepts them again, and the delivery is not sent again meanwhile."""
    caplog.set_level(logging.WARNING)  # an earlier test may have configured the root logger
    receiver.script("/hook", Answer(204, delay=2.0))  # holds the first POST
    text = daemon_config(server, tmp_path, interval="200ms") + (
        "destinations:\n" + hook_destination(receiver)
    )
    async with running(parse_config(text)) as daemon, httpx.AsyncClient() as http:

        async def status(path: str) -> tuple[int, str]:
            response = await http.get(f"http://127.0.0.1:{daemon.port}{path}")
            return response.status_code, response.text

        tenant.rotate()
        await eventually(lambda: bool(receiver.received("/hook")), what="the first POST")
        refuse_writes(daemon.store, True)
        [in_flight] = receiver.received("/hook")
        assert in_flight.answered_at is None, "the store must refuse writes before the answer"
        tenant.rotate()  # its poll cannot commit either
        await eventually(lambda: in_flight.answered_at is not None, what="the answer")
        await eventually(
            lambda: "cannot record the outcome (delivered)" in caplog.text,
            what="the mark of the delivery to fail",
        )
        for path in ("/healthz", "/readyz"):
            code, body = await status(path)
            assert code == 503 and "attempt to write a readonly database" in body, path
        assert len(rotations(daemon.store)) == 1  # the second one's poll did not commit
        refuse_writes(daemon.store, False)
        await eventually(
            lambda: settled(daemon.store, receiver, 2, paths=("/hook",)),
            what="both rotations stored and sent",
        )
        assert await status("/healthz") == (200, "ok\n")
        assert_none_sent_twice(receiver)
