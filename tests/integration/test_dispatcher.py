"""The dispatcher against loopback receivers that script their answers: order, retries,
backoff, rate limits, dead letters, max_age, restarts and reloads; time runs 100x faster."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.config import DestinationConfig, parse_config, parse_destination
from monitor.daemon import build_daemon, secrets_of
from monitor.httpclient import build_http_client
from monitor.logs import configure_logging
from monitor.metrics import Telemetry, build_registry, render
from monitor.model import Event, EventType, Snapshot, make_event
from monitor.notify import build_notifier
from monitor.notify.base import Notifier
from monitor.notify.dispatcher import Dispatcher
from monitor.notify.pacing import Backoff, TokenBucket
from monitor.simulator import SimulatorServer
from monitor.store.base import Store
from monitor.store.sqlite import SQLiteStore
from tests.support.daemon import chat_destination, daemon_config, hook_destination
from tests.support.delivery import (
    Answer,
    Receiver,
    ScaledClock,
    eventually,
    first_successes,
    ids,
    timeout,
)

SCALE = 100.0
SLACK_OK = Answer(200, b"ok")


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(SCALE)


@pytest.fixture
def receiver(clock: ScaledClock) -> Iterator[Receiver]:
    with Receiver(defaults={"/slack": SLACK_OK}, clock=clock.monotonic) as running:
        yield running


@dataclass
class Metrics:
    telemetry: Telemetry = field(default_factory=Telemetry)
    registry: CollectorRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.registry = build_registry(self.telemetry, version="test")

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


def destination(name: str, kind: str, url: str, **options: Any) -> DestinationConfig:
    return parse_destination({"name": name, "kind": kind, "url": url, **options})


def notifiers(*configs: DestinationConfig) -> list[Notifier]:
    return [build_notifier(config) for config in configs]


def rotation(at: datetime, old: str, new: str) -> Event:
    return make_event("prod", EventType.KEY_ROTATED, at, [old, new], old_kid=old, new_kid=new)


def revocation(at: datetime, kid: str) -> Event:
    return make_event("prod", EventType.KEY_REVOKED, at, [kid, "previous", "revoked"], kid=kid)


def commit(store: Store, at: datetime, events: Sequence[Event], to: Sequence[str]) -> None:
    """One poll's transaction: snapshot, events and their deliveries."""
    deliveries = [(event.id, name) for event in events for name in to]
    store.save_poll(Snapshot(tenant="prod", taken_at=at, keys={}), events, deliveries)


def history(start: datetime) -> list[list[Event]]:
    """Three polls' events, in the order they must be delivered."""
    second, third = start + timedelta(seconds=1), start + timedelta(seconds=2)
    return [
        [rotation(start, "k1", "k2"), revocation(start, "k0")],
        [revocation(second, "k1")],
        [rotation(third, "k2", "k3"), revocation(third, "k9")],
    ]


def pending(store: Store) -> int:
    return sum(count for (_, state), count in store.delivery_counts().items() if state == "pending")


def row(store: SQLiteStore, event_id: str, name: str) -> tuple[Any, ...]:
    with sqlite3.connect(store.path) as connection:
        [found] = connection.execute(
            "SELECT state, attempts, failures, last_error FROM deliveries "
            "WHERE event_id = ? AND destination = ?",
            (event_id, name),
        ).fetchall()
    return tuple(found)


@asynccontextmanager
async def dispatching(
    store: Store,
    sending_to: Sequence[Notifier],
    *,
    clock: ScaledClock,
    metrics: Metrics | None = None,
    backoff: Backoff | None = None,
    resend_interval: float = 60.0,
) -> AsyncIterator[Dispatcher]:
    async with build_http_client(timeout=5.0) as http:
        dispatcher = Dispatcher(
            store=store,
            http=http,
            telemetry=(metrics or Metrics()).telemetry,
            clock=clock.clock,
            rng=random.Random(7),
            backoff=backoff,
            resend_interval=resend_interval,
        )
        await dispatcher.start(sending_to)
        try:
            yield dispatcher
        finally:
            await dispatcher.stop(grace=5.0)


async def drained(store: Store) -> None:
    await eventually(lambda: pending(store) == 0, what="an empty outbox")


async def commit_a_rotation_and_await_its_post(
    store: Store, dispatcher: Dispatcher, receiver: Receiver, clock: ScaledClock
) -> Event:
    """Commit a rotation (k1 to k2) for ``hook`` while ``dispatcher`` runs, wake it, and wait
    until ``receiver`` has its one POST; returns the event."""
    event = rotation(clock.now(), "k1", "k2")
    commit(store, event.detected_at, [event], ["hook"])
    dispatcher.wake(["hook"])
    await eventually(lambda: len(receiver.received("/hook")) == 1, what="the POST")
    return event


# --- order, retries, every event everywhere -----------------------------------------------------


async def test_scripted_failures_delay_but_every_event_reaches_every_destination_in_order(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    polls = history(clock.now())
    events = [event for poll in polls for event in poll]
    for poll in polls:
        commit(store, poll[0].detected_at, poll, ["hook", "chat"])
    receiver.script(
        "/hook",
        timeout(0.5),  # held past the 0.2 s timeout
        Answer(503),
        Answer(429, headers={"Retry-After": "3"}),
    )
    receiver.script("/slack", Answer(503), Answer(429, b"rate_limited", {"Retry-After": "2"}))
    hook = destination("hook", "webhook", receiver.url("/hook"), timeout="200ms")
    chat = destination("chat", "slack", receiver.url("/slack"))
    metrics = Metrics()

    async with dispatching(store, notifiers(hook, chat), clock=clock, metrics=metrics):
        await drained(store)
        await eventually(
            lambda: metrics.value("keywatch_outbox_pending", destination="hook") == 0,
            what="the pending gauge",
        )

    order = [event.id for event in events]
    first = order[0]
    # head-of-line: nothing overtook the first event while it was being retried
    assert list(ids(receiver.received("/hook"))) == [first] * 4 + order[1:]
    assert list(ids(receiver.received("/slack"))) == [first] * 3 + order[1:]
    for path in ("/hook", "/slack"):
        assert first_successes(receiver.received(path)) == order
        assert sum(r.succeeded for r in receiver.received(path)) == len(order)  # once each
    assert store.delivery_counts() == {("hook", "delivered"): 5, ("chat", "delivered"): 5}
    assert row(store, first, "hook")[:3] == ("delivered", 4, 2)  # the 429 is no failure

    hook_requests = receiver.received("/hook")
    retried_after = hook_requests[3].at - hook_requests[2].at
    assert retried_after >= 3.0 - clock.resolution  # Retry-After honoured
    chat_successes = [r.at for r in receiver.received("/slack") if r.succeeded]
    gaps = [later - earlier for earlier, later in itertools.pairwise(chat_successes)]
    assert min(gaps) >= 0.9  # slack: 1 message per second

    assert metrics.value("keywatch_notifications_total", destination="hook", outcome="retry") == 3
    delivered = metrics.value(
        "keywatch_notifications_total", destination="chat", outcome="delivered"
    )
    assert delivered == 5
    count = metrics.value("keywatch_notification_latency_seconds_count", destination="hook")
    assert count == 5
    assert metrics.value("keywatch_deliveries_dead", destination="chat") == 0


async def test_events_committed_while_running_wake_the_dispatcher(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    hook = destination("hook", "webhook", receiver.url("/hook"))
    async with dispatching(store, notifiers(hook), clock=clock) as dispatcher:
        event = await commit_a_rotation_and_await_its_post(store, dispatcher, receiver, clock)
        await drained(store)
    [request] = receiver.received("/hook")
    assert request.event_id == event.id
    assert request.json["data"]["old_kid"] == "k1"


# --- dead letters, max_age, 429s, redirects -----------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 302])
async def test_a_permanent_error_is_a_dead_letter_kept_counted_and_not_blocking(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock, status: int
) -> None:
    polls = history(clock.now())
    for poll in polls:
        commit(store, poll[0].detected_at, poll, ["hook"])
    redirect = {"Location": receiver.url("/elsewhere")}
    receiver.script("/hook", Answer(status, headers=redirect if status == 302 else {}))
    metrics = Metrics()
    hook = destination("hook", "webhook", receiver.url("/hook"))

    async with dispatching(store, notifiers(hook), clock=clock, metrics=metrics):
        await drained(store)
        await eventually(
            lambda: metrics.value("keywatch_deliveries_dead", destination="hook") == 1,
            what="the dead-letter gauge",
        )

    first = polls[0][0]
    [dead] = store.dead_deliveries()
    assert (dead.event, dead.destination, dead.attempts) == (first, "hook", 1)
    assert dead.last_error is not None and dead.last_error.startswith(f"HTTP {status}")
    assert store.delivery_counts() == {("hook", "dead"): 1, ("hook", "delivered"): 4}
    assert len(receiver.received("/hook")) == 5  # tried once, the others went on
    assert receiver.received("/elsewhere") == []  # redirects are not followed
    assert metrics.value("keywatch_notifications_total", destination="hook", outcome="dead") == 1


async def test_a_delivery_still_failing_after_max_age_is_given_up(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    committed = clock.monotonic()
    event = rotation(clock.now(), "k1", "k2")
    commit(store, event.detected_at, [event], ["hook"])
    receiver.script("/hook", *[Answer(503)] * 50)
    hook = destination("hook", "webhook", receiver.url("/hook"), max_age="30s")

    async with dispatching(store, notifiers(hook), clock=clock):
        await drained(store)

    [dead] = store.dead_deliveries()
    assert dead.last_error == "gave up after max_age 30s: HTTP 503 Service Unavailable"
    requests = receiver.received("/hook")
    # backoff 1, 2, 4, 8, 16 s (±20 %), the last attempt at the deadline
    assert 5 <= len(requests) <= 7
    assert 29.9 <= requests[-1].at - committed <= 33


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    asked: list[int] = field(default_factory=list)

    def delay(self, failures: int, rng: random.Random) -> float:
        self.asked.append(failures)
        return super().delay(failures, rng)


async def test_429_answers_do_not_advance_the_backoff_or_count_as_failures(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    event = rotation(clock.now(), "k1", "k2")
    commit(store, event.detected_at, [event], ["hook"])
    throttled = Answer(429, headers={"Retry-After": "1"})
    receiver.script("/hook", *[throttled] * 12, Answer(503), throttled, Answer(502))
    backoff = RecordingBackoff()
    hook = destination("hook", "webhook", receiver.url("/hook"))

    async with dispatching(store, notifiers(hook), clock=clock, backoff=backoff):
        await drained(store)

    assert row(store, event.id, "hook")[:3] == ("delivered", 16, 2)
    assert backoff.asked == [1, 2]  # the first real failure got the first backoff step


async def test_discord_bucket_headers_pause_the_destination(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    polls = history(clock.now())[:2]
    for poll in polls:
        commit(store, poll[0].detected_at, poll, ["discord"])
    empty_bucket = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "4.5"}
    receiver.script("/discord", Answer(200, b'{"id": "1"}', empty_bucket))
    receiver.defaults["/discord"] = Answer(200, b'{"id": "2"}')
    chat = destination("discord", "discord", receiver.url("/discord"), rate_limit=100)

    async with dispatching(store, notifiers(chat), clock=clock):
        await drained(store)

    first, second, *_ = receiver.received("/discord")
    assert second.at - first.at >= 4.5 - clock.resolution


# --- periodic hook, reload, shutdown -----------------------------------------------------------


class CountingNotifier(Notifier):
    kind = "webhook"
    default_rate_limit = 5.0

    def __init__(self, config: DestinationConfig) -> None:
        super().__init__(config)
        self.periodic_calls = 0

    def render(self, event: Event, *, now: datetime) -> Any:
        raise AssertionError("nothing to send")

    async def periodic(self, http: Any, now: datetime) -> None:
        self.periodic_calls += 1


async def test_the_periodic_hook_runs_every_resend_interval(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    counting = CountingNotifier(destination("am", "webhook", receiver.url("/x")))
    async with dispatching(store, [counting], clock=clock, resend_interval=6.0):
        await eventually(lambda: counting.periodic_calls >= 3, what="three re-sends")
        started = clock.monotonic()
    assert started >= 18


async def test_reload_adds_updates_and_removes_destinations(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    first = rotation(clock.now(), "k1", "k2")
    commit(store, first.detected_at, [first], ["hook", "gone"])
    metrics = Metrics()
    hook = destination("hook", "webhook", receiver.url("/hook"))
    gone = destination("gone", "webhook", receiver.url("/gone"))
    receiver.script("/gone", Answer(503))  # still pending when removed

    async with dispatching(store, notifiers(hook, gone), clock=clock, metrics=metrics) as d:
        await eventually(lambda: len(receiver.received("/gone")) == 1, what="one try")
        moved = destination("hook", "webhook", receiver.url("/moved"))
        added = destination("new", "slack", receiver.url("/slack"))
        d.configure(notifiers(moved, added))
        assert d.destinations == ["hook", "new"]
        second = revocation(clock.now(), "k1")
        commit(store, second.detected_at, [second], ["hook", "new"])
        d.wake()
        await eventually(lambda: store.delivery_counts().get(("new", "delivered")) == 1, what="new")
        await eventually(
            lambda: store.delivery_counts().get(("hook", "delivered")) == 2, what="hook"
        )

    assert [r.event_id for r in receiver.received("/moved")] == [second.id]
    assert len(receiver.received("/gone")) == 1  # not sent after its removal
    assert store.outbox_stats()["gone"].pending == 1  # but kept
    assert metrics.value("keywatch_outbox_pending", destination="gone") is None


async def test_a_destination_removed_and_added_back_mid_request_sends_once(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    receiver.script("/hook", Answer(204, delay=0.3))
    hook = destination("hook", "webhook", receiver.url("/hook"))
    async with dispatching(store, notifiers(hook), clock=clock) as dispatcher:
        await commit_a_rotation_and_await_its_post(store, dispatcher, receiver, clock)
        dispatcher.configure([])  # removed while its request is in flight
        dispatcher.configure(notifiers(hook))  # and back
        await drained(store)
    assert len(receiver.received("/hook")) == 1
    assert store.delivery_counts() == {("hook", "delivered"): 1}


async def test_shutdown_lets_the_request_in_flight_finish_and_commits_it(
    store: SQLiteStore, receiver: Receiver, clock: ScaledClock
) -> None:
    receiver.script("/hook", Answer(204, delay=0.3))  # slow, but within the timeout
    hook = destination("hook", "webhook", receiver.url("/hook"), timeout="2s")
    async with dispatching(store, notifiers(hook), clock=clock) as dispatcher:
        await commit_a_rotation_and_await_its_post(store, dispatcher, receiver, clock)
        assert store.delivery_counts() == {("hook", "pending"): 1}  # still in flight
    assert store.delivery_counts() == {("hook", "delivered"): 1}


# --- the daemon: deliveries with the poll, resume before the first poll --------------------------


def destinations_yaml(receiver: Receiver) -> str:
    return (
        "destinations:\n" + hook_destination(receiver) + chat_destination(receiver, "key.revoked")
    )


async def test_the_daemon_commits_deliveries_with_the_poll_and_sends_them(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    text = daemon_config(server, tmp_path) + destinations_yaml(receiver)
    daemon = build_daemon(parse_config(text))
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.wait_ready(), 15)
        old = tenant.current_kid
        tenant.rotate()
        tenant.revoke(old)
        events = await daemon.poll_tenant("tenant-1")
        await drained(daemon.store)
    finally:
        await daemon.shutdown()
    types = {EventType.KEY_ROTATED, EventType.KEY_ADDED, EventType.KEY_REVOKED}
    assert {e.type for e in events} == types
    assert first_successes(receiver.received("/hook")) == [e.id for e in events]
    [revoked] = receiver.received("/slack")
    assert revoked.event_id == next(e.id for e in events if e.type is EventType.KEY_REVOKED)
    assert f"signing key {old} revoked" in revoked.json["text"]


async def test_pending_deliveries_resume_before_the_first_poll(
    server: SimulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    settings = parse_config(daemon_config(server, tmp_path) + destinations_yaml(receiver))
    left_over = revocation(datetime.now(UTC), "k-old")
    seeded = SQLiteStore(tmp_path / "state.db")
    seeded.migrate()
    commit(seeded, left_over.detected_at, [left_over], ["hook", "chat"])
    seeded.close()

    daemon = build_daemon(settings)
    seen_at_first_poll: list[tuple[int, dict[tuple[str, str], int]]] = []
    poll = daemon.poller._poll

    async def first_poll_sees(*args: Any, **options: Any) -> list[Event]:
        if not seen_at_first_poll:
            counts = await asyncio.to_thread(daemon.store.delivery_counts)
            seen_at_first_poll.append((len(receiver.received()), counts))
        return await poll(*args, **options)

    daemon.poller._poll = first_poll_sees  # type: ignore[method-assign]
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.wait_ready(), 15)
    finally:
        await daemon.shutdown()
    [(posts, counts)] = seen_at_first_poll
    assert posts == 2
    assert counts == {("hook", "delivered"): 1, ("chat", "delivered"): 1}


# --- secrets ------------------------------------------------------------------------------------


async def test_destination_urls_and_secrets_never_reach_logs_or_metrics(
    store: SQLiteStore,
    receiver: Receiver,
    clock: ScaledClock,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    token = "T0KEN-in-the-path-8f3a9c1e77d2"
    query_secret = "sig-in-the-query-5b8e1f"
    signing_secret = "whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cy0xMjM0"
    hook_url = receiver.url(f"/hook/{token}") + f"?sig={query_secret}"
    chat_url = receiver.url(f"/slack/{token}")
    text = (
        "tenants: [{name: prod, domain: x.example.com, token: tenant-token-value}]\n"
        f"state: sqlite:///{tmp_path}/unused.db\n"
        "destinations:\n"
        f"  - {{name: hook, kind: webhook, url: '{hook_url}', secrets: ['{signing_secret}']}}\n"
        f"  - {{name: chat, kind: slack, url: '{chat_url}'}}\n"
    )
    settings = parse_config(text)
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(level="debug", secrets=secrets_of(settings), stream=stream)
    root.addHandler(caplog.handler)  # configure_logging replaced every root handler
    polls = history(clock.now())
    for poll in polls:
        commit(store, poll[0].detected_at, poll, ["hook", "chat"])
    receiver.script(f"/hook/{token}", timeout(0.5), Answer(503), Answer(404))
    receiver.script(f"/slack/{token}", Answer(500, b"rollup_error"), Answer(404, b"no_team"))
    receiver.defaults[f"/slack/{token}"] = SLACK_OK
    sending = [build_notifier(config) for config in settings.destinations]
    sending[0] = build_notifier(settings.destinations[0].model_copy(update={"timeout": 0.2}))
    metrics = Metrics()
    try:
        async with dispatching(store, sending, clock=clock, metrics=metrics):
            await drained(store)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    exposition = render(metrics.registry).decode()
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    outcomes = {r.getMessage().split(" (")[0] for r in caplog.records if "dispatcher" in r.name}
    assert {
        "notification delivered",
        "notification not delivered",
        "notification given up",
    } <= outcomes  # success, retry and dead paths all logged
    for text_out in (logs, stream.getvalue(), exposition):
        for secret in (token, query_secret, signing_secret, "c2VjcmV0LXNpZ25pbmct", "127.0.0.1"):
            assert secret not in text_out, secret


# --- pacing -------------------------------------------------------------------------------------


def test_backoff_is_exponential_then_the_standard_webhooks_schedule() -> None:
    backoff = Backoff()
    steps = [backoff.step(n) for n in range(1, 26)]
    assert steps[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert backoff.fast_failures == 15 and sum(steps[:15]) >= 600
    hours = [step / 3600 for step in steps[15:24]]
    assert hours == pytest.approx([5 / 60, 0.5, 2, 5, 10, 14, 20, 24, 24])
    rng = random.Random(1)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert 3.2 <= min(delays) < 3.5 and 4.5 < max(delays) <= 4.8  # ±20 % around 4 s
    with pytest.raises(ValueError, match="failures must be >= 1"):
        backoff.step(0)


def test_token_bucket_spaces_sends_and_honours_a_pause() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, clock=lambda: now[0])
    assert bucket.wait_time() == 0
    bucket.take()
    assert bucket.wait_time() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.wait_time() == 0
    bucket.take()
    bucket.pause(3.0)
    assert bucket.wait_time() == pytest.approx(3.0)
    now[0] = 3.5
    assert bucket.wait_time() == 0
    bucket.set_rate(0.5)
    bucket.take()
    assert bucket.wait_time() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0)
