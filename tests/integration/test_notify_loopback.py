"""monitor.notify delivery over real loopback HTTP: every kind delivers, signatures verify,
redirects are not followed, hangs and closed ports are classified."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from monitor.notify.base import Outcome, Verdict
from tests.support.notify import (
    NOW,
    SECRET_A,
    notifier,
    revoked,
    rotation,
    verify_standard_webhook,
)


@dataclass
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False  # hold the answer until the test ends (a receiver that hangs)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and plays scripted answers."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[Answer] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                path, _, query = self.path.partition("?")
                receiver.received.append(
                    Received(path, query, dict(self.headers.items()), self.rfile.read(length))
                )
                answer = receiver.answers.pop(0) if receiver.answers else Answer()
                if answer.stall:
                    receiver.release.wait(timeout=30)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def test_slack_delivery_over_loopback(receiver: Receiver, http: httpx.AsyncClient) -> None:
    built = notifier("slack", url=receiver.url("/services/T/B/token"))
    receiver.answers = [
        Answer(429, b"", {"Retry-After": "2"}),
        Answer(404, b"channel_not_found"),
        Answer(200, b"ok"),
    ]
    verdicts = [await built.deliver(http, revoked(), now=NOW) for _ in range(3)]
    assert [(v.outcome, v.retry_after) for v in verdicts] == [
        (Outcome.RETRY, 2.0),
        (Outcome.DEAD, None),
        (Outcome.DELIVERED, None),
    ]
    assert verdicts[1].detail == "HTTP 404: slack error channel_not_found"
    assert len(receiver.received) == 3
    first = receiver.received[0]
    assert first.path == "/services/T/B/token"
    assert first.headers["Content-Type"] == "application/json"
    assert json.loads(first.body)["blocks"][0]["type"] == "header"


async def test_webhook_delivery_over_loopback_verifies(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    built = notifier("webhook", url=receiver.url(), secrets=[SECRET_A])
    receiver.answers = [Answer(503, b"", {"Retry-After": "5"}), Answer(204, b"")]
    first = await built.deliver(http, rotation(), now=NOW)
    second = await built.deliver(http, rotation(), now=NOW + timedelta(seconds=90))
    assert (first.outcome, first.retry_after) == (Outcome.RETRY, 5.0)
    assert (second.outcome, second.status) == (Outcome.DELIVERED, 204)
    for got, moment in zip(receiver.received, (NOW, NOW + timedelta(seconds=90)), strict=True):
        assert verify_standard_webhook([SECRET_A], got.headers, got.body, now=moment)
        assert got.headers["webhook-id"] == rotation().id
        assert got.headers["User-Agent"].startswith("keywatch/")
    assert receiver.received[0].body == receiver.received[1].body


@pytest.mark.parametrize("kind", ["teams", "discord", "googlechat", "pagerduty"])
async def test_other_kinds_deliver_over_loopback(
    kind: str, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    built = notifier(kind, url=receiver.url("/in?token=abc12345"))
    receiver.answers = [Answer(202 if kind in ("teams", "pagerduty") else 200, b"{}")]
    verdict = await built.deliver(http, revoked(), now=NOW)
    assert verdict.outcome is Outcome.DELIVERED
    (got,) = receiver.received
    assert "token=abc12345" in got.query
    assert json.loads(got.body)


async def test_redirects_are_not_followed(receiver: Receiver, http: httpx.AsyncClient) -> None:
    built = notifier("webhook", url=receiver.url())
    receiver.answers = [Answer(302, b"", {"Location": receiver.url("/elsewhere")})]
    verdict = await built.deliver(http, revoked(), now=NOW)
    assert verdict.outcome is Outcome.DEAD
    assert "redirects are not followed" in verdict.detail
    assert [got.path for got in receiver.received] == ["/hook"]


async def test_a_hanging_receiver_is_a_timeout(receiver: Receiver, http: httpx.AsyncClient) -> None:
    built = notifier("slack", url=receiver.url(), timeout=0.2)
    receiver.answers = [Answer(stall=True)]
    verdict = await built.deliver(http, revoked(), now=NOW)
    assert verdict == Verdict(Outcome.RETRY, "timeout")


async def test_a_closed_port_is_a_network_error(http: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    built = notifier("discord", url=f"http://127.0.0.1:{port}/api/webhooks/1/secret-token-value")
    verdict = await built.deliver(http, revoked(), now=NOW)
    assert verdict == Verdict(Outcome.RETRY, "network error: ConnectError")
    assert "secret-token-value" not in repr(verdict)
