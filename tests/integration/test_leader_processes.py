"""Two replicas as real processes on PostgreSQL: a leader frozen (SIGSTOP) past its lease is
replaced, and when it wakes up (SIGCONT) it writes nothing, sends nothing and stands by."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psycopg
import pytest

from monitor.model import EventType
from monitor.simulator import SimulatorServer
from monitor.store import Store, open_store
from tests.support.delivery import Receiver
from tests.support.deploy import wait_for
from tests.support.processes import DaemonProcess

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

TTL = 2.0
DEADLINE = 20.0


def leads(replica: DaemonProcess) -> bool:
    return replica.metric("keywatch_leader") == 1.0


def ready(replica: DaemonProcess) -> bool:
    answer = replica.get("/readyz")
    return answer is not None and answer.status_code == 200


def stands_by(replica: DaemonProcess) -> bool:
    return replica.metric("keywatch_leader") == 0.0


def all_delivered(store: Store) -> bool:
    counts = store.delivery_counts()
    return bool(counts) and all(state == "delivered" for _, state in counts)


def test_a_leader_frozen_past_its_lease_wakes_up_as_a_standby_and_sends_nothing(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path, postgres_url: str
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    lease = f"lease: {{ttl: {TTL:g}s}}"
    old = DaemonProcess("old", server, receiver, tmp_path, state=postgres_url, extra_lines=lease)
    new = DaemonProcess("new", server, receiver, tmp_path, state=postgres_url, extra_lines=lease)
    store = open_store(postgres_url)

    def logs() -> str:
        return f"{old.log_tail()}\n{new.log_tail()}"

    with contextlib.ExitStack() as running:
        running.enter_context(old)
        wait_for(lambda: ready(old), timeout=DEADLINE, what="the first leader", diagnostics=logs)
        assert leads(old)
        running.enter_context(new)
        wait_for(lambda: stands_by(new), timeout=DEADLINE, what="the standby", diagnostics=logs)
        lease_before = store.lease_info("leader")
        assert lease_before is not None

        old.freeze()
        try:
            wait_for(lambda: leads(new), timeout=DEADLINE, what="the takeover", diagnostics=logs)
            tenant.rotate()
            rotated = wait_for(
                lambda: (
                    [e for e in store.recent_events() if e.type is EventType.KEY_ROTATED] or None
                ),
                timeout=DEADLINE,
                what="the new leader to detect the rotation",
                diagnostics=logs,
            )
            wait_for(
                lambda: all_delivered(store),
                timeout=DEADLINE,
                what="the new leader to send the rotation",
                diagnostics=logs,
            )
            log_before_thaw = len(old.log_text())
        finally:
            old.thaw()

        wait_for(lambda: stands_by(old), timeout=DEADLINE, what="the old leader to stand by")
        lease_after = store.lease_info("leader")
        assert lease_after is not None and lease_after.token == lease_before.token + 1
        # A few of the new leader's polls later, the old one has still sent nothing.
        polls = new.metric("keywatch_poll_duration_seconds_count") or 0.0
        wait_for(
            lambda: (new.metric("keywatch_poll_duration_seconds_count") or 0) >= polls + 3,
            timeout=DEADLINE,
            what="three more polls of the new leader",
        )
        assert stands_by(old) and leads(new)
        assert old.metric("keywatch_poll_duration_seconds_count") is not None
        woke_up = old.log_text()[log_before_thaw:]
        assert "event_id=" not in woke_up  # it committed no event and sent nothing
        assert "could not save poll result" not in woke_up
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            claims = connection.execute("SELECT DISTINCT claimed_token FROM deliveries")
            assert claims.fetchall() == [(lease_after.token,)]  # every send was the new one's
        [event] = rotated
        for path in ("/hook", "/slack"):
            posts = [r for r in receiver.received(path) if r.event_id == event.id]
            assert len(posts) == 1, f"{path}: {len(posts)} POSTs of the rotation\n{logs()}"
    store.close()
