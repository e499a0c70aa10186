"""monitor.notify delivery over real loopback HTTP: every kind delivers, signatures verify,
redirects are not followed, hangs and closed ports are classified."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from typing import Any

import httpx
import pytest

from monitor.notify.base import Outcome, Verdict
from tests.support.delivery import Answer, Receiver, timeout
from tests.support.notify import (
    NOW,
    SECRET_A,
    notifier,
    revoked,
    rotation,
    verify_standard_webhook,
)


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def test_slack_delivery_over_loopback(receiver: Receiver, http: httpx.AsyncClient) -> None:
    built = notifier("slack", url=receiver.url("/services/T/B/token"))
    receiver.script(
        "/services/T/B/token",
        Answer(429, b"", {"Retry-After": "2"}),
        Answer(404, b"channel_not_found"),
        Answer(200, b"ok"),
    )
    verdicts = [await built.deliver(http, revoked(), now=NOW) for _ in range(3)]
    assert [(v.outcome, v.retry_after) for v in verdicts] == [
        (Outcome.RETRY, 2.0),
        (Outcome.DEAD, None),
        (Outcome.DELIVERED, None),
    ]
    assert verdicts[1].detail == "HTTP 404: slack error channel_not_found"
    assert len(receiver.received()) == 3
    first = receiver.received()[0]
    assert first.path == "/services/T/B/token"
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.body)["blocks"][0]["type"] == "header"


async def test_webhook_delivery_over_loopback_verifies(
    receiver: Receiver, http: httpx.AsyncClient
) -> None:
    built = notifier("webhook", url=receiver.url("/hook"), secrets=[SECRET_A])
    receiver.script("/hook", Answer(503, b"", {"Retry-After": "5"}), Answer(204, b""))
    first = await built.deliver(http, rotation(), now=NOW)
    second = await built.deliver(http, rotation(), now=NOW + timedelta(seconds=90))
    assert (first.outcome, first.retry_after) == (Outcome.RETRY, 5.0)
    assert (second.outcome, second.status) == (Outcome.DELIVERED, 204)
    moments = (NOW, NOW + timedelta(seconds=90))
    for got, moment in zip(receiver.received(), moments, strict=True):
        assert verify_standard_webhook([SECRET_A], got.headers, got.body, now=moment)
        assert got.headers["webhook-id"] == rotation().id
        assert got.headers["user-agent"].startswith("keywatch/")
    assert receiver.received()[0].body == receiver.received()[1].body


@pytest.mark.parametrize("kind", ["teams", "discord", "googlechat", "pagerduty"])
async def test_other_kinds_deliver_over_loopback(
    kind: str, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    built = notifier(kind, url=receiver.url("/in?token=abc12345"))
    receiver.script("/in", Answer(202 if kind in ("teams", "pagerduty") else 200, b"{}"))
    verdict = await built.deliver(http, revoked(), now=NOW)
    assert verdict.outcome is Outcome.DELIVERED
    (got,) = receiver.received()
    assert "token=abc12345" in got.query
    assert json.loads(got.body)


async def test_redirects_are_not_followed(receiver: Receiver, http: httpx.AsyncClient) -> None:
    built = notifier("webhook", url=receiver.url("/hook"))
    receiver.script("/hook", Answer(302, b"", {"Location": receiver.url("/elsewhere")}))
    verdict = await built.deliver(http, revoked(), now=NOW)
    assert verdict.outcome is Outcome.DEAD
    assert "redirects are not followed" in verdict.detail
    assert [got.path for got in receiver.received()] == ["/hook"]


async def test_a_hanging_receiver_is_a_timeout(receiver: Receiver, http: httpx.AsyncClient) -> None:
    built = notifier("slack", url=receiver.url("/hook"), timeout=0.2)
    receiver.script("/hook", timeout(2.0))  # held past the 0.2 s timeout
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
