"""``keywatch test-notify``, ``status`` and ``redeliver``: output and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.model import Event, EventType, KeyState, Snapshot, make_event
from monitor.store.sqlite import SQLiteStore
from tests.support import REPO
from tests.support.delivery import Answer, Receiver, timeout

DEMO_CONFIG = REPO / "monitor" / "demo.yaml"

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
TOKEN = "path-token-1f2e3d4c5b6a"


def config(tmp_path: Path, receiver: Receiver, *, names: tuple[str, ...] = ("hook", "chat")) -> str:
    urls = {"hook": ("webhook", f"/hook/{TOKEN}"), "chat": ("slack", f"/slack/{TOKEN}")}
    lines = [
        f"state: sqlite:///{tmp_path}/state.db",
        "tenants:",
        "  - {name: prod, base_url: 'http://127.0.0.1:9/prod', token: tenant-token-1234}",
        "  - {name: dev, base_url: 'http://127.0.0.1:9/dev', token: tenant-token-1234}",
        "destinations:",
    ]
    for name in names:
        kind, path = urls[name]
        lines.append(f"  - {{name: {name}, kind: {kind}, url: '{receiver.url(path)}'}}")
    path = tmp_path / "keywatch.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def revocation(kid: str, at: datetime) -> Event:
    return make_event("prod", EventType.KEY_REVOKED, at, [kid], kid=kid)


def seed(tmp_path: Path) -> list[Event]:
    """prod's snapshot; three events: one delivered, one dead, one pending, to hook and chat,
    and one pending to a destination no longer configured."""
    events = [revocation(f"k{n}", T0 + timedelta(minutes=n)) for n in range(3)]
    current = KeyState(
        kid="k-current", thumbprint="AB", fingerprint="AB", cert_sha1="AB", current=True
    )
    store = SQLiteStore(tmp_path / "state.db")
    store.migrate()
    pairs = [(e.id, d) for e in events for d in ("hook", "chat")] + [(events[0].id, "old")]
    snapshot = Snapshot(tenant="prod", taken_at=T0, keys={current.kid: current})
    store.save_poll(snapshot, events, pairs)
    for name in ("hook", "chat"):
        store.mark_delivered(events[0].id, name, T0)
        store.mark_failed(events[1].id, name, error="HTTP 404 Not Found", retry_at=None)
    store.close()
    return events


# --- test-notify --------------------------------------------------------------------------------


def test_test_notify_sends_a_sample_event_and_exits_0(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, receiver)
    assert main(["test-notify", "--config", path, "--destination", "hook"]) == 0
    out = capsys.readouterr().out
    assert out == "hook (webhook): delivered: HTTP 204 No Content\n"
    [request] = receiver.received(f"/hook/{TOKEN}")
    data = request.json["data"]
    assert (data["tenant"], data["type"]) == ("keywatch-test", "key.rotated")
    assert not (tmp_path / "state.db").exists()  # sent directly, not through the store


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Answer(404, b"no_service"), "chat (slack): NOT delivered: HTTP 404"),
        (Answer(503, headers={"Retry-After": "7"}), "the daemon would retry in 7s"),
        (timeout(1.5), "chat (slack): NOT delivered: timeout"),
    ],
)
def test_test_notify_reports_an_answer_that_is_not_a_delivery_and_exits_1(
    tmp_path: Path,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    answer: Answer,
    expected: str,
) -> None:
    path = config(tmp_path, receiver)
    text = Path(path).read_text().replace("kind: slack,", "kind: slack, timeout: 500ms,")
    Path(path).write_text(text)
    receiver.script(f"/slack/{TOKEN}", answer)
    assert main(["test-notify", "--config", path, "--destination", "chat"]) == 1
    out = capsys.readouterr().out
    assert expected in out
    assert TOKEN not in out and "127.0.0.1" not in out


def test_test_notify_unknown_destination_exits_2(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, receiver)
    assert main(["test-notify", "--config", path, "--destination", "nope"]) == 2
    assert capsys.readouterr().err == f"{path}: no destination named 'nope' (known: hook, chat)\n"
    assert receiver.received() == []


# --- status ---------------------------------------------------------------------------------------


def test_status_json_lists_tenants_and_deliveries_per_destination(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    events = seed(tmp_path)
    path = config(tmp_path, receiver)
    daemon_store = SQLiteStore(tmp_path / "state.db")  # the daemon holds the file open
    try:
        asked = datetime.now(UTC).replace(microsecond=0)
        assert main(["status", "--config", path, "--json"]) == 0
        answered = datetime.now(UTC)
    finally:
        daemon_store.close()
    document = json.loads(capsys.readouterr().out)
    assert document["tenants"] == [
        {
            "name": "prod",
            "configured": True,
            "snapshot_at": T0.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "current_kids": ["k-current"],
        },
        {"name": "dev", "configured": True, "snapshot_at": None, "current_kids": []},
    ]
    by_name = {d["name"]: d for d in document["destinations"]}
    assert list(by_name) == ["hook", "chat", "old"]
    hook = by_name["hook"]
    assert (hook["kind"], hook["pending"], hook["dead"], hook["delivered"]) == ("webhook", 1, 1, 1)
    # The oldest pending delivery was created at T0, an hour before the module was imported:
    # its age is whatever time it is now, however long the suite took to get here.
    age = hook["oldest_pending_age_seconds"]
    assert (asked - T0).total_seconds() <= age <= (answered - T0).total_seconds() + 1
    assert (by_name["old"]["configured"], by_name["old"]["pending"]) == (False, 1)
    dead = {(d["event_id"], d["destination"]) for d in document["dead"]}
    assert dead == {(events[1].id, "hook"), (events[1].id, "chat")}
    assert document["dead"][0]["last_error"] == "HTTP 404 Not Found"


def test_status_prints_tables(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    events = seed(tmp_path)
    path = config(tmp_path, receiver, names=("hook",))
    assert main(["status", "--config", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TENANT", "SNAPSHOT_AT", "CURRENT_KID"]
    assert lines[1].split() == ["prod", T0.strftime("%Y-%m-%dT%H:%M:%SZ"), "k-current"]
    assert lines[2].split() == ["dev", "never", "-"]
    table = {line.split()[0]: line.split() for line in lines[4:8]}
    assert table["DESTINATION"] == [
        "DESTINATION",
        "KIND",
        "PENDING",
        "DEAD",
        "DELIVERED",
        "OLDEST_PENDING",
    ]
    assert table["hook"][:5] == ["hook", "webhook", "1", "1", "1"]
    assert table["hook"][5].startswith(("59m", "1h"))
    assert table["chat"][:5] == ["chat", "-", "1", "1", "1"]
    assert "(not configured: not sent)" in " ".join(table["chat"])
    assert any(line.startswith(events[1].id) and "HTTP 404 Not Found" in line for line in lines)
    assert TOKEN not in "\n".join(lines)


def test_status_shows_the_leader_lease_holder_and_its_token(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(tmp_path)
    path = config(tmp_path, receiver)
    assert main(["status", "--config", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["leader"] is None
    assert main(["status", "--config", path]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("leader lease: none taken")

    store = SQLiteStore(tmp_path / "state.db")
    now = datetime.now(UTC)
    try:
        store.acquire_lease("leader", "host-a/1", now=now - timedelta(minutes=5), ttl=15)
        assert store.acquire_lease("leader", "host-b/2", now=now, ttl=3600) == 2
    finally:
        store.close()
    assert main(["status", "--config", path, "--json"]) == 0
    leader = json.loads(capsys.readouterr().out)["leader"]
    until = (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leader == {"holder": "host-b/2", "token": 2, "expires_at": until, "lapsed": False}
    assert main(["status", "--config", path]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"leader lease: held by host-b/2 with token 2, until {until}"


def test_status_without_a_store_exits_2(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, receiver)
    assert main(["status", "--config", path]) == 2
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "state.db").exists()


# --- redeliver ------------------------------------------------------------------------------------


def test_redeliver_queues_dead_deliveries_again(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    events = seed(tmp_path)
    path = config(tmp_path, receiver)
    assert main(["redeliver", "--config", path, "--destination", "hook"]) == 0
    assert capsys.readouterr().out == "1 dead delivery queued again\n"
    store = SQLiteStore(tmp_path / "state.db")
    try:
        assert [d.destination for d in store.dead_deliveries()] == ["chat"]
        queued = store.queued_deliveries("hook", limit=10)
        assert [d.event.id for d in queued] == [events[1].id, events[2].id]
        assert (queued[0].attempts, queued[0].failures) == (0, 0)
    finally:
        store.close()
    assert main(["redeliver", "--config", path, "--event", "no-such-event"]) == 0
    assert capsys.readouterr().out == "0 dead deliveries queued again\n"
    assert main(["redeliver", "--config", path, "--event", events[1].id]) == 0
    assert capsys.readouterr().out == "1 dead delivery queued again\n"
    assert main(["redeliver", "--config", path, "--destination", "old"]) == 0
    assert "'old' is not in" in capsys.readouterr().err


# --- demo receiver ------------------------------------------------------------------------------


async def test_the_demo_receiver_answers_every_kind_like_its_service() -> None:
    from monitor.config import load_config
    from monitor.demo import RECEIVER_VARIABLE, DemoReceiver
    from monitor.httpclient import build_http_client
    from monitor.notify import build_notifier, sample_event
    from monitor.notify.base import Outcome

    lines: list[str] = []
    event = sample_event(tenant="demo", detected_at=datetime.now(UTC))
    with DemoReceiver(say=lines.append) as receiver:
        env = {RECEIVER_VARIABLE: receiver.url, "KEYWATCH_DEMO_STATE": "/nonexistent/x.db"}
        destinations = load_config(DEMO_CONFIG, env=env).destinations
        async with build_http_client() as http:
            for destination in destinations:
                notifier = build_notifier(destination)
                verdict = await notifier.deliver(http, event, now=datetime.now(UTC))
                assert verdict.outcome is Outcome.DELIVERED, (destination.kind, verdict)
    kinds = {"slack", "teams", "discord", "googlechat", "webhook", "alertmanager", "pagerduty"}
    assert {d.kind for d in destinations} == kinds
    assert len(lines) == len(kinds)
    for line in lines:
        assert line.startswith("receiver: ")
        assert f"{event.old_kid} -> {event.new_kid}" in line, line
