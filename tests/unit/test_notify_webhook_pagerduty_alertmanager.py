"""monitor.notify machine kinds: Standard Webhooks signatures and CloudEvents, PagerDuty events,
and the Alertmanager client logic (tests/integration/test_notify_alertmanager.py runs a real
Alertmanager)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from monitor.model import Event, EventType, make_event
from monitor.notify import Notifier
from monitor.notify.alertmanager import AlertmanagerNotifier, alertname
from monitor.notify.base import Outcome, Verdict
from monitor.notify.webhook import sign
from tests.support.notify import (
    DETECTED,
    LONG,
    NOW,
    ROUTING_KEY,
    SECRET_A,
    SECRET_B,
    assert_classified,
    fits,
    long_event,
    notifier,
    payload,
    revoked,
    rotation,
    tenant_event,
    verify_standard_webhook,
)

# --- webhook (Standard Webhooks) -----------------------------------------------------------


def test_signer_reproduces_the_specifications_published_example() -> None:
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_webhook_is_signed_per_attempt_with_every_secret() -> None:
    built = notifier("webhook", secrets=[SECRET_A, SECRET_B])
    first = built.render(revoked(), now=NOW)
    later = built.render(revoked(), now=NOW + timedelta(minutes=30))
    for request, moment in ((first, NOW), (later, NOW + timedelta(minutes=30))):
        headers = request.headers
        assert headers["webhook-id"] == revoked().id
        assert headers["webhook-timestamp"] == str(int(moment.timestamp()))
        assert len(headers["webhook-signature"].split(" ")) == 2
        # Each secret alone verifies: a receiver mid-rotation accepts with either.
        assert verify_standard_webhook([SECRET_A], headers, request.body, now=moment)
        assert verify_standard_webhook([SECRET_B], headers, request.body, now=moment)
        other = "whsec_" + base64.b64encode(b"x" * 32).decode()
        assert not verify_standard_webhook([other], headers, request.body, now=moment)
        assert not verify_standard_webhook([SECRET_A], headers, request.body + b" ", now=moment)
    assert first.body == later.body
    assert first.headers["webhook-signature"] != later.headers["webhook-signature"]
    assert not verify_standard_webhook(
        [SECRET_A], first.headers, first.body, now=NOW + timedelta(minutes=30)
    )


def test_webhook_body_is_standard_webhooks_json() -> None:
    request = notifier("webhook", template="{{ event.kid }} is gone").render(revoked(), now=NOW)
    assert request.headers["Content-Type"] == "application/json"
    assert "webhook-signature" not in request.headers  # no secrets configured
    body = payload(request)
    assert body["type"] == "auth0.key.revoked"
    assert body["timestamp"] == "2026-05-01T11:59:30.000Z"
    assert body["data"] == {
        "id": revoked().id,
        "tenant": "prod",
        "type": "key.revoked",
        "severity": "critical",
        "detected_at": "2026-05-01T11:59:30.000Z",
        "kid": "kid-old",
        "old_kid": None,
        "new_kid": None,
        "details": {"old_state": "previous", "thumbprint": "CCCC3333"},
        "summary": "signing key kid-old revoked on prod",
        "message": "kid-old is gone",
    }


def test_webhook_cloudevents_envelope() -> None:
    request = notifier("webhook", cloudevents=True, secrets=[SECRET_A]).render(rotation(), now=NOW)
    assert request.headers["Content-Type"] == "application/cloudevents+json"
    assert verify_standard_webhook([SECRET_A], request.headers, request.body, now=NOW)
    body = payload(request)
    assert body["specversion"] == "1.0"
    assert body["id"] == rotation().id == request.headers["webhook-id"]
    assert body["source"] == "keywatch://prod"
    assert body["type"] == "com.keywatch.key.rotated"
    assert body["time"] == "2026-05-01T11:59:30.000Z"
    assert body["datacontenttype"] == "application/json"
    assert body["subject"] == "kid-new"
    assert body["data"]["old_kid"] == "kid-old" and body["data"]["new_kid"] == "kid-new"


def test_webhook_message_is_capped() -> None:
    request = notifier("webhook", template="{{ event.kid }}" * 3).render(long_event(), now=NOW)
    assert fits(payload(request)["data"]["message"], 16_000)


# --- pagerduty -----------------------------------------------------------------------------


def test_pagerduty_event_shape() -> None:
    request = notifier("pagerduty").render(revoked(), now=NOW)
    assert request.url == "https://events.pagerduty.com/v2/enqueue"
    body = payload(request)
    assert body["routing_key"] == ROUTING_KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "keywatch:prod:kid-old"
    assert body["client"] == "keywatch"
    event_payload = body["payload"]
    assert event_payload["summary"] == "signing key kid-old revoked on prod"
    assert event_payload["source"] == "prod"
    assert event_payload["severity"] == "critical"
    assert event_payload["timestamp"] == "2026-05-01T11:59:30.000Z"
    assert event_payload["component"] == "auth0-signing-keys"
    assert event_payload["group"] == "prod"
    assert event_payload["class"] == "key.revoked"
    assert event_payload["custom_details"]["event_id"] == revoked().id
    assert event_payload["custom_details"]["thumbprint"] == "CCCC3333"


@pytest.mark.parametrize(
    ("event", "severity", "dedup_key"),
    [
        (rotation(), "warning", "keywatch:prod:kid-new"),
        (tenant_event(EventType.KEY_ADDED), "info", "keywatch:prod:key.added"),
        (tenant_event(EventType.TENANT_NO_NEXT_KEY), "warning", "keywatch:prod:tenant.no_next_key"),
        (
            tenant_event(EventType.TENANT_NO_CURRENT_KEY),
            "critical",
            "keywatch:prod:tenant.no_current_key",
        ),
    ],
)
def test_pagerduty_severity_and_dedup_key(event: Event, severity: str, dedup_key: str) -> None:
    body = payload(notifier("pagerduty").render(event, now=NOW))
    assert (body["payload"]["severity"], body["dedup_key"]) == (severity, dedup_key)


def publication(event_type: EventType, url: str, kid: str | None = None) -> Event:
    return make_event(
        "prod", event_type, DETECTED, [url], kid=kid, details={"source": "jwks", "url": url}
    )


JWKS_A = "https://prod.example/.well-known/jwks.json"
JWKS_B = "https://login.prod.example/.well-known/jwks.json"


@pytest.mark.parametrize(
    ("problem", "recovery"),
    [
        (
            tenant_event(EventType.TENANT_NO_CURRENT_KEY),
            tenant_event(EventType.TENANT_CURRENT_KEY_RESTORED),
        ),
        (tenant_event(EventType.TENANT_UNREACHABLE), tenant_event(EventType.TENANT_RECOVERED)),
        (
            publication(EventType.JWKS_MISMATCH, JWKS_A, kid="kid-new"),
            publication(EventType.JWKS_CONSISTENT, JWKS_A),
        ),
        (
            publication(EventType.MIRROR_STALE, JWKS_B),
            publication(EventType.MIRROR_SYNCED, JWKS_B),
        ),
    ],
)
def test_pagerduty_recovery_resolves_the_incident_of_its_problem(
    problem: Event, recovery: Event
) -> None:
    built = notifier("pagerduty")
    opened = payload(built.render(problem, now=NOW))
    ended = payload(built.render(recovery, now=NOW))
    assert opened["event_action"] == "trigger"
    assert ended == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": opened["dedup_key"],
    }


def test_pagerduty_keys_publication_problems_by_url() -> None:
    built = notifier("pagerduty")
    keys = {
        payload(built.render(publication(EventType.JWKS_MISMATCH, url, kid="k"), now=NOW))[
            "dedup_key"
        ]
        for url in (JWKS_A, JWKS_B)
    }
    assert keys == {
        f"keywatch:prod:jwks.mismatch:{JWKS_A}",
        f"keywatch:prod:jwks.mismatch:{JWKS_B}",
    }
    resolved = payload(built.render(publication(EventType.JWKS_CONSISTENT, JWKS_B), now=NOW))
    assert resolved["dedup_key"] == f"keywatch:prod:jwks.mismatch:{JWKS_B}"


def test_pagerduty_limits() -> None:
    built = notifier("pagerduty", url="https://events.eu.pagerduty.com/v2/enqueue")
    request = built.render(long_event(), now=NOW)
    assert request.url == "https://events.eu.pagerduty.com/v2/enqueue"
    body = payload(request)
    assert len(body["dedup_key"]) <= 255
    assert fits(body["payload"]["summary"], 1024)
    other = make_event("prod", EventType.KEY_REVOKED, DETECTED, ["y"], kid=LONG + "y")
    assert payload(built.render(other, now=NOW))["dedup_key"] != body["dedup_key"]


@pytest.mark.parametrize(
    ("status", "body", "outcome", "detail"),
    [
        (202, b'{"status":"success","dedup_key":"k"}', Outcome.DELIVERED, "HTTP 202"),
        (
            400,
            b'{"status":"invalid event","message":"Event object is invalid","errors":["bad"]}',
            Outcome.DEAD,
            "pagerduty says Event object is invalid; bad",
        ),
        (429, b"", Outcome.RETRY, "HTTP 429"),
        (500, b"", Outcome.RETRY, "HTTP 500"),
        (503, b"", Outcome.RETRY, "HTTP 503"),
    ],
)
def test_pagerduty_classify(status: int, body: bytes, outcome: Outcome, detail: str) -> None:
    assert_classified("pagerduty", status, body, outcome, detail)


# --- alertmanager (client logic; tests/integration/test_notify_alertmanager.py: a real one) ----


@pytest.mark.parametrize(
    ("event_type", "name"),
    [
        (EventType.KEY_ROTATED, "Auth0SigningKeyRotated"),
        (EventType.KEY_REVOKED, "Auth0SigningKeyRevoked"),
        (EventType.KEY_ADDED, "Auth0SigningKeyAdded"),
        (EventType.KEY_REMOVED, "Auth0SigningKeyRemoved"),
        (EventType.KEY_STATE_CHANGED, "Auth0SigningKeyStateChanged"),
        (EventType.KEY_CERTIFICATE_CHANGED, "Auth0SigningKeyCertificateChanged"),
        (EventType.TENANT_NO_CURRENT_KEY, "Auth0TenantNoCurrentSigningKey"),
        (EventType.TENANT_NO_NEXT_KEY, "Auth0TenantNoNextSigningKey"),
    ],
)
def test_alertnames(event_type: EventType, name: str) -> None:
    assert alertname(event_type) == name


def test_alertmanager_alert_shape() -> None:
    request = notifier("alertmanager", resolve_after="2h").render(revoked(), now=NOW)
    assert request.url == "http://am-1.internal:9093/api/v2/alerts"
    (alert,) = payload(request)
    assert alert["labels"] == {
        "alertname": "Auth0SigningKeyRevoked",
        "tenant": "prod",
        "kid": "kid-old",
        "severity": "critical",
        "source": "keywatch",
    }
    assert alert["annotations"]["summary"] == "signing key kid-old revoked on prod"
    assert alert["annotations"]["event_id"] == revoked().id
    assert "Thumbprint: CCCC3333" in alert["annotations"]["description"]
    assert alert["startsAt"] == "2026-05-01T11:59:30.000Z"
    assert alert["endsAt"] == "2026-05-01T13:59:30.000Z"
    templated = notifier("alertmanager", template="{{ event.kid }} revoked").render(
        revoked(), now=NOW
    )
    assert payload(templated)[0]["annotations"]["description"] == "kid-old revoked"
    long_alert = payload(notifier("alertmanager").render(long_event(), now=NOW))[0]
    assert all(fits(text, 4000) for text in long_alert["annotations"].values())


class AlertmanagerDouble:
    """Answers per base URL, and records every POSTed list of alerts."""

    def __init__(self, answers: dict[str, int]) -> None:
        self.answers = answers
        self.posts: list[tuple[str, list[dict[str, Any]]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.posts.append((host, json.loads(request.content)))
        status = self.answers[host]
        if status < 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status, json={} if status == 200 else {"message": "bad"})


async def am_deliver(
    answers: dict[str, int], event: Event, built: Notifier | None = None
) -> tuple[Verdict, AlertmanagerDouble]:
    double = AlertmanagerDouble(answers)
    async with httpx.AsyncClient(transport=httpx.MockTransport(double)) as http:
        verdict = await (built or notifier("alertmanager")).deliver(http, event, now=NOW)
    return verdict, double


@pytest.mark.parametrize(
    ("answers", "outcome", "detail"),
    [
        ({"am-1.internal": 200, "am-2.internal": 200}, Outcome.DELIVERED, "accepted by 2 of 2"),
        ({"am-1.internal": -1, "am-2.internal": 200}, Outcome.DELIVERED, "accepted by 1 of 2"),
        (
            {"am-1.internal": 503, "am-2.internal": -1},
            Outcome.RETRY,
            "urls[0]: HTTP 503 Service Unavailable; urls[1]: network error: ConnectError",
        ),
        ({"am-1.internal": 400, "am-2.internal": 503}, Outcome.RETRY, "urls[0]: HTTP 400"),
        ({"am-1.internal": 400, "am-2.internal": 400}, Outcome.DEAD, "urls[1]: HTTP 400"),
    ],
)
async def test_alertmanager_posts_to_every_url(
    answers: dict[str, int], outcome: Outcome, detail: str
) -> None:
    verdict, double = await am_deliver(answers, revoked())
    assert sorted(host for host, _ in double.posts) == ["am-1.internal", "am-2.internal"]
    assert verdict.outcome is outcome
    assert detail in verdict.detail
    assert "am-1" not in verdict.detail


async def test_alertmanager_resends_active_alerts_and_resolves_cleared_ones() -> None:
    built = notifier("alertmanager", urls=["http://am-1.internal:9093"], resolve_after="1h")
    assert isinstance(built, AlertmanagerNotifier)
    ok = {"am-1.internal": 200}
    no_next = tenant_event(EventType.TENANT_NO_NEXT_KEY)
    await am_deliver(ok, no_next, built)
    await am_deliver(ok, revoked(), built)
    assert [a["labels"]["alertname"] for a in built.active_alerts(NOW)] == [
        "Auth0TenantNoNextSigningKey",
        "Auth0SigningKeyRevoked",
    ]
    double = AlertmanagerDouble(ok)
    async with httpx.AsyncClient(transport=httpx.MockTransport(double)) as http:
        resent = await built.periodic(http, NOW + timedelta(minutes=1))
        assert resent is not None and resent.outcome is Outcome.DELIVERED
        assert len(double.posts[-1][1]) == 2
        # A rotation in the same tenant clears "no next key"; the resolution rides along.
        verdict = await built.deliver(http, rotation(), now=NOW + timedelta(minutes=2))
        assert verdict.outcome is Outcome.DELIVERED
        sent = {a["labels"]["alertname"]: a for a in double.posts[-1][1]}
        assert sent["Auth0TenantNoNextSigningKey"]["endsAt"] == "2026-05-01T12:02:00.000Z"
        assert sent["Auth0SigningKeyRotated"]["endsAt"] == "2026-05-01T12:59:30.000Z"
        active = {a["labels"]["alertname"] for a in built.active_alerts(NOW + timedelta(minutes=2))}
        assert active == {"Auth0SigningKeyRevoked", "Auth0SigningKeyRotated"}
        # The resolution is re-sent for five minutes, then forgotten; expired alerts too.
        again = await built.periodic(http, NOW + timedelta(minutes=3))
        assert again is not None
        assert len(double.posts[-1][1]) == 3
        await built.periodic(http, NOW + timedelta(minutes=10))
        assert len(double.posts[-1][1]) == 2
        assert await built.periodic(http, NOW + timedelta(hours=2)) is None
    assert built.active_alerts(NOW + timedelta(hours=2)) == []


async def test_alertmanager_remembers_only_delivered_alerts() -> None:
    built = notifier("alertmanager", urls=["http://am-1.internal:9093"])
    assert isinstance(built, AlertmanagerNotifier)
    verdict, _ = await am_deliver({"am-1.internal": 503}, revoked(), built)
    assert verdict.outcome is Outcome.RETRY
    assert built.active_alerts(NOW) == []
    base = notifier("slack")
    async with httpx.AsyncClient(transport=httpx.MockTransport(AlertmanagerDouble({}))) as http:
        assert await base.periodic(http, NOW) is None


async def test_alertmanager_clears_a_jwks_mismatch_only_for_the_url_that_agrees_again() -> None:
    built = notifier("alertmanager", urls=["http://am-1.internal:9093"], resolve_after="1h")
    assert isinstance(built, AlertmanagerNotifier)
    ok = {"am-1.internal": 200}
    await am_deliver(ok, publication(EventType.JWKS_MISMATCH, JWKS_A, kid="k"), built)
    await am_deliver(ok, publication(EventType.JWKS_MISMATCH, JWKS_B, kid="k"), built)
    firing = built.active_alerts(NOW)
    assert sorted(alert["labels"]["url"] for alert in firing) == sorted([JWKS_A, JWKS_B])
    _, double = await am_deliver(ok, publication(EventType.JWKS_CONSISTENT, JWKS_A), built)
    ended = [a for a in double.posts[-1][1] if a["labels"]["alertname"] == "Auth0JwksMismatch"]
    assert [a["labels"]["url"] for a in ended] == [JWKS_A]
    still = [a for a in built.active_alerts(NOW) if a["labels"]["alertname"] == "Auth0JwksMismatch"]
    assert [a["labels"]["url"] for a in still] == [JWKS_B]
