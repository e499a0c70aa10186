"""monitor.notify kinds: payload shapes and limits, answer classification, signatures,
templates, and delivery over real loopback HTTP."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import DestinationConfig, Settings, TenantConfig, parse_destination
from monitor.detect import diff
from monitor.model import Event, EventType, make_event
from monitor.notify import NOTIFIER_CLASSES, Notifier, build_notifier, sample_event
from monitor.notify.alertmanager import AlertmanagerNotifier, alertname
from monitor.notify.base import (
    Outcome,
    OutgoingRequest,
    Verdict,
    classify_status,
    parse_retry_after,
    with_query,
)
from monitor.notify.routing import matches
from monitor.notify.webhook import sign
from monitor.templates import (
    MessageTemplate,
    TemplateError,
    check_template,
    escape_slack,
    event_facts,
    event_title,
    limit,
    limit_escaped,
    utf16_len,
)
from tests.test_detect import STEADY, key, snap

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DETECTED = datetime(2026, 5, 1, 11, 59, 30, tzinfo=UTC)

SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/slackTokenSecret123456"
TEAMS_URL = "https://prod-42.westus.logic.azure.com/workflows/abc/triggers/manual?sig=teamsSig12345"
DISCORD_URL = "https://discord.com/api/webhooks/1234/discordTokenSecret9876?thread_id=555"
CHAT_URL = "https://chat.googleapis.com/v1/spaces/AAA/messages?key=chatKey12345&token=chatTok12345"
HOOK_URL = "https://audit.example/hooks/keywatch-path-secret-123"
AM_URLS = ["http://am-1.internal:9093", "http://am-2.internal:9093/"]
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
# The Standard Webhooks specification's published example secret, and a second one.
SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode()
URLS = {
    "slack": SLACK_URL,
    "teams": TEAMS_URL,
    "discord": DISCORD_URL,
    "googlechat": CHAT_URL,
    "webhook": HOOK_URL,
}
SECRET_VALUES = [*URLS.values(), *AM_URLS, ROUTING_KEY, SECRET_A, SECRET_B]
# Long, awkward text: markup characters, an emoji (two UTF-16 units), mention bait.
LONG = ("<&>_*`|🔑 @everyone " + "x" * 40) * 400


def destination(kind: str, **options: Any) -> DestinationConfig:
    data: dict[str, Any] = {"name": f"{kind}-dest", "kind": kind}
    if kind == "alertmanager":
        data["urls"] = AM_URLS
    elif kind == "pagerduty":
        data["routing_key"] = ROUTING_KEY
    else:
        data["url"] = URLS[kind]
    return parse_destination({**data, **options})


def notifier(kind: str, **options: Any) -> Notifier:
    return build_notifier(destination(kind, **options))


def rotation(tenant: str = "prod", old: str = "kid-old", new: str = "kid-new") -> Event:
    return make_event(
        tenant,
        EventType.KEY_ROTATED,
        DETECTED,
        [old, new],
        old_kid=old,
        new_kid=new,
        details={"old_thumbprint": "AAAA1111", "new_thumbprint": "BBBB2222"},
    )


def revoked(kid: str = "kid-old", tenant: str = "prod") -> Event:
    return make_event(
        tenant,
        EventType.KEY_REVOKED,
        DETECTED,
        [kid],
        kid=kid,
        details={"old_state": "previous", "thumbprint": "CCCC3333"},
    )


def tenant_event(event_type: EventType, tenant: str = "prod") -> Event:
    return make_event(tenant, event_type, DETECTED, ["x"], details={"last_kids": "kid-next"})


def long_event() -> Event:
    return make_event(
        "prod",
        EventType.KEY_ROTATED,
        DETECTED,
        ["long"],
        kid=LONG,
        old_kid=LONG,
        new_kid=LONG,
        details={"thumbprint": LONG, "old_thumbprint": LONG, "new_thumbprint": LONG},
    )


def payload(request: OutgoingRequest) -> Any:
    return json.loads(request.body)


def fits(text: str, size: int) -> bool:
    return utf16_len(text) <= size


# --- the registry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rate"),
    [
        ("slack", 1.0),
        ("teams", 2.0),
        ("discord", 5.0),
        ("googlechat", 1.0),
        ("webhook", 5.0),
        ("alertmanager", 5.0),
        ("pagerduty", 5.0),
    ],
)
def test_build_notifier_picks_the_kind_and_its_default_rate(kind: str, rate: float) -> None:
    built = notifier(kind)
    assert built.kind == kind
    assert built.name == f"{kind}-dest"
    assert built.rate_limit == rate
    assert notifier(kind, rate_limit=0.25).rate_limit == 0.25
    assert set(NOTIFIER_CLASSES) == {
        "slack",
        "teams",
        "discord",
        "googlechat",
        "webhook",
        "alertmanager",
        "pagerduty",
    }


def test_a_notifier_refuses_another_kinds_config() -> None:
    with pytest.raises(ValueError, match="needs a teams destination"):
        NOTIFIER_CLASSES["teams"](destination("slack"))


def test_matches_filters_tenants_types_and_severity() -> None:
    default = destination("slack")  # min_severity warning
    assert matches(default, rotation()) and matches(default, revoked())
    assert not matches(default, tenant_event(EventType.KEY_ADDED))
    only_revoked = destination("slack", events=["key.revoked"])
    assert matches(only_revoked, revoked()) and not matches(only_revoked, rotation())
    info = destination("slack", min_severity="INFO")
    assert matches(info, tenant_event(EventType.KEY_ADDED))
    critical = destination("slack", min_severity="critical")
    assert matches(critical, revoked()) and not matches(critical, rotation())
    staging_only = destination("slack", tenants=["staging"])
    assert not matches(staging_only, revoked()) and matches(staging_only, revoked(tenant="staging"))
    assert notifier("slack", tenants=["staging"]).matches(revoked(tenant="staging"))


# --- shared classification ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "retry_after", "detail"),
    [
        (200, {}, Outcome.DELIVERED, None, "HTTP 200 OK"),
        (202, {}, Outcome.DELIVERED, None, "HTTP 202 Accepted"),
        (204, {}, Outcome.DELIVERED, None, "HTTP 204 No Content"),
        (301, {"Location": "https://x"}, Outcome.DEAD, None, "redirects are not followed"),
        (307, {}, Outcome.DEAD, None, "redirects are not followed"),
        (400, {}, Outcome.DEAD, None, "HTTP 400 Bad Request"),
        (401, {}, Outcome.DEAD, None, "HTTP 401 Unauthorized"),
        (403, {}, Outcome.DEAD, None, "HTTP 403 Forbidden"),
        (404, {}, Outcome.DEAD, None, "HTTP 404 Not Found"),
        (410, {}, Outcome.DEAD, None, "HTTP 410 Gone"),
        (413, {}, Outcome.DEAD, None, "HTTP 413"),
        (422, {}, Outcome.DEAD, None, "HTTP 422"),
        (408, {}, Outcome.RETRY, None, "HTTP 408"),
        (429, {"Retry-After": "7"}, Outcome.RETRY, 7.0, "HTTP 429 Too Many Requests"),
        (429, {"retry-after": "1.5"}, Outcome.RETRY, 1.5, "HTTP 429"),
        (500, {}, Outcome.RETRY, None, "HTTP 500"),
        (502, {}, Outcome.RETRY, None, "HTTP 502"),
        (503, {"Retry-After": "Fri, 01 May 2026 12:01:00 GMT"}, Outcome.RETRY, 60.0, "HTTP 503"),
        (504, {"Retry-After": "soon"}, Outcome.RETRY, None, "HTTP 504"),
        (599, {}, Outcome.RETRY, None, "HTTP 599"),
        (101, {}, Outcome.DEAD, None, "HTTP 101"),
    ],
)
def test_classify_status(
    status: int,
    headers: dict[str, str],
    outcome: Outcome,
    retry_after: float | None,
    detail: str,
) -> None:
    verdict = classify_status(status, headers, now=NOW)
    assert verdict.outcome is outcome
    assert verdict.retry_after == retry_after
    assert verdict.status == status
    assert detail in verdict.detail


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("Fri, 01 May 2026 12:00:30 GMT", 30.0),
        ("Fri, 01 May 2026 11:00:00 GMT", 0.0),
        ("tomorrow", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_with_query_keeps_other_parameters_and_replaces_its_own() -> None:
    assert with_query("https://h/p", {"wait": "true"}) == "https://h/p?wait=true"
    assert (
        with_query("https://h/p?thread_id=5&wait=false&x=a%2Fb", {"wait": "true"})
        == "https://h/p?thread_id=5&x=a%2Fb&wait=true"
    )


@given(text=st.text(max_size=300), size=st.integers(min_value=1, max_value=200))
def test_limit_keeps_a_prefix_within_the_size(text: str, size: int) -> None:
    cut = limit(text, size)
    assert utf16_len(cut) <= size
    if cut != text:
        assert cut.endswith("…") and text.startswith(cut[:-1])


@given(text=st.text(alphabet="ab&<>🔑", max_size=300), size=st.integers(1, 200))
def test_limit_escaped_never_cuts_an_entity(text: str, size: int) -> None:
    cut = limit_escaped(escape_slack(text), size)
    assert utf16_len(cut) <= size
    assert "&" not in re.sub(r"&(amp|lt|gt);", "", cut)


# --- slack --------------------------------------------------------------------------------


def test_slack_payload_shape() -> None:
    request = notifier("slack").render(rotation(), now=NOW)
    body = payload(request)
    assert request.url == SLACK_URL
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("keywatch/")
    header, section, context = body["blocks"]
    assert header["type"] == "header"
    assert header["text"] == {"type": "plain_text", "text": ":warning: Signing key rotated on prod"}
    assert body["text"] == "signing key rotated on prod: kid-old -&gt; kid-new"
    assert section["text"] == {"type": "mrkdwn", "text": body["text"]}
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in section["fields"]}
    assert fields["*Tenant*"] == "prod"
    assert fields["*Event*"] == "key.rotated"
    assert fields["*Old kid*"] == "kid-old"
    assert fields["*New kid*"] == "kid-new"
    assert fields["*Old thumbprint*"] == "AAAA1111"
    assert fields["*Detected*"] == "2026-05-01T11:59:30.000Z"
    (footer,) = context["elements"]
    assert footer["type"] == "mrkdwn"
    assert rotation().id in footer["text"] and "2026-05-01T11:59:30.000Z" in footer["text"]


def test_slack_escapes_markup_in_event_values() -> None:
    body = payload(notifier("slack").render(revoked(kid="<!channel> & co"), now=NOW))
    assert "<!channel>" not in json.dumps(body)
    assert "&lt;!channel&gt; &amp; co" in body["text"]


def test_slack_limits_hold_for_huge_values_and_templates() -> None:
    for built in (notifier("slack"), notifier("slack", template="{{ event.kid }}" * 3)):
        body = payload(built.render(long_event(), now=NOW))
        header, section, context = body["blocks"]
        assert fits(header["text"]["text"], 150)
        assert fits(section["text"]["text"], 3000)
        assert fits(body["text"], 3000)
        assert len(section["fields"]) <= 10
        assert all(fits(f["text"], 2000) for f in section["fields"])
        assert fits(context["elements"][0]["text"], 3000)
        for text in [
            body["text"],
            section["text"]["text"],
            *(f["text"] for f in section["fields"]),
        ]:
            unescaped = re.sub(r"&(amp|lt|gt);", "", text)
            assert not re.search(r"[<>&]", unescaped), "a cut left a broken entity or raw markup"


SLACK_ANSWERS = [
    (200, {}, b"ok", Outcome.DELIVERED, None, "HTTP 200"),
    (200, {}, b'{"ok":true}', Outcome.DELIVERED, None, "HTTP 200"),
    (200, {}, b"<html>captive portal</html>", Outcome.DEAD, None, "no 'ok' in the answer"),
    (200, {}, b"channel_not_found", Outcome.DEAD, None, "slack error channel_not_found"),
    (400, {}, b"invalid_payload", Outcome.DEAD, None, "slack error invalid_payload"),
    (403, {}, b"action_prohibited", Outcome.DEAD, None, "slack error action_prohibited"),
    (404, {}, b"channel_not_found", Outcome.DEAD, None, "slack error channel_not_found"),
    (410, {}, b"channel_is_archived", Outcome.DEAD, None, "slack error channel_is_archived"),
    (404, {}, b"no_service", Outcome.DEAD, None, "slack error no_service"),
    (429, {"Retry-After": "3"}, b"", Outcome.RETRY, 3.0, "rate limited"),
    (
        429,
        {"Retry-After": "1"},
        b'{"ok":false,"error":"rate_limited","retry_after":4}',
        Outcome.RETRY,
        4.0,
        "rate limited",
    ),
    (500, {}, b"rollup_error", Outcome.RETRY, None, "slack error rollup_error"),
    (503, {"Retry-After": "10"}, b"", Outcome.RETRY, 10.0, "HTTP 503"),
]


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome", "retry_after", "detail"), SLACK_ANSWERS
)
def test_slack_classify(
    status: int,
    headers: dict[str, str],
    body: bytes,
    outcome: Outcome,
    retry_after: float | None,
    detail: str,
) -> None:
    verdict = notifier("slack").classify(status, headers, body)
    assert (verdict.outcome, verdict.retry_after) == (outcome, retry_after)
    assert detail in verdict.detail


# --- teams --------------------------------------------------------------------------------


def test_teams_payload_is_an_adaptive_card_message() -> None:
    body = payload(notifier("teams").render(revoked(), now=NOW))
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (card["type"], card["version"], card["msteams"]) == (
        "AdaptiveCard",
        "1.4",
        {"width": "full"},
    )
    heading, facts, footer = card["body"]
    assert heading["type"] == "TextBlock" and heading["style"] == "heading"
    assert heading["text"] == "signing key kid-old revoked on prod"
    assert heading["color"] == "Attention"
    assert facts["type"] == "FactSet"
    assert {"title": "Kid", "value": "kid-old"} in facts["facts"]
    assert {"title": "Thumbprint", "value": "CCCC3333"} in facts["facts"]
    assert footer["text"] == f"event id {revoked().id}"


def test_teams_body_stays_under_20_kb() -> None:
    for built in (notifier("teams"), notifier("teams", template="{{ event.kid }}" * 5)):
        request = built.render(long_event(), now=NOW)
        assert len(request.body) <= 20_000
        card = payload(request)["attachments"][0]["content"]
        heading, facts, footer = card["body"]
        assert heading["text"].endswith("…") and "<&>_*`|🔑 @everyone" in heading["text"]
        assert footer["text"] == f"event id {long_event().id}"
        assert [fact["title"] for fact in facts["facts"]][:3] == ["Tenant", "Event", "Severity"]


@pytest.mark.parametrize(
    ("status", "body", "outcome", "detail"),
    [
        (202, b"", Outcome.DELIVERED, "HTTP 202"),
        (200, b"", Outcome.DELIVERED, "HTTP 200"),
        (204, b"", Outcome.DEAD, "answers 202 or 200"),
        (
            200,
            b"Webhook message delivery failed with error: Microsoft Teams endpoint returned 400",
            Outcome.DEAD,
            "delivery failed",
        ),
        (400, b"", Outcome.DEAD, "HTTP 400"),
        (429, b"", Outcome.RETRY, "HTTP 429"),
        (502, b"", Outcome.RETRY, "HTTP 502"),
    ],
)
def test_teams_classify(status: int, body: bytes, outcome: Outcome, detail: str) -> None:
    verdict = notifier("teams").classify(status, {}, body)
    assert verdict.outcome is outcome
    assert detail in verdict.detail


# --- discord ------------------------------------------------------------------------------


def test_discord_waits_for_the_message_and_keeps_the_thread() -> None:
    request = notifier("discord").render(rotation(), now=NOW)
    parts = urlsplit(request.url)
    assert parts.path == "/api/webhooks/1234/discordTokenSecret9876"
    assert parse_qsl(parts.query) == [("thread_id", "555"), ("wait", "true")]
    overridden = notifier("discord", url="https://discord.com/api/webhooks/1/t?wait=false")
    assert urlsplit(overridden.render(rotation(), now=NOW).url).query == "wait=true"


def test_discord_payload_shape() -> None:
    body = payload(notifier("discord").render(revoked(kid="kid_with_underscores"), now=NOW))
    assert body["allowed_mentions"] == {"parse": []}
    assert body["content"] == r"signing key kid\_with\_underscores revoked on prod"
    (embed,) = body["embeds"]
    assert embed["title"] == "Signing key revoked on prod"
    assert embed["color"] == 0xE01E5A
    assert embed["timestamp"] == "2026-05-01T11:59:30.000Z"
    assert embed["footer"] == {"text": f"event id {revoked(kid='kid_with_underscores').id}"}
    assert {"name": "Kid", "value": r"kid\_with\_underscores", "inline": True} in embed["fields"]


def test_discord_limits_hold_for_huge_values_and_templates() -> None:
    for built in (notifier("discord"), notifier("discord", template="{{ event.kid }}" * 3)):
        body = payload(built.render(long_event(), now=NOW))
        assert body["allowed_mentions"] == {"parse": []}
        assert fits(body["content"], 2000)
        (embed,) = body["embeds"]
        assert fits(embed["title"], 256)
        assert fits(embed["description"], 4096)
        assert 0 < len(embed["fields"]) <= 25
        assert all(
            fits(f["name"], 256) and 0 < utf16_len(f["value"]) <= 1024 for f in embed["fields"]
        )
        assert fits(embed["footer"]["text"], 2048)
        total = utf16_len(embed["title"]) + utf16_len(embed["description"])
        total += utf16_len(embed["footer"]["text"])
        total += sum(utf16_len(f["name"]) + utf16_len(f["value"]) for f in embed["fields"])
        assert total <= 6000


def test_discord_mentions_in_a_template_do_not_ping() -> None:
    body = payload(
        notifier("discord", template="@everyone {{ event.kid }}").render(revoked(), now=NOW)
    )
    assert body["embeds"][0]["description"] == "@everyone kid-old"
    assert body["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize(
    ("status", "headers", "body", "outcome", "retry_after", "pause_for"),
    [
        (200, {"X-RateLimit-Remaining": "4"}, b'{"id":"1"}', Outcome.DELIVERED, None, None),
        (
            200,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "1.25"},
            b'{"id":"1"}',
            Outcome.DELIVERED,
            None,
            1.25,
        ),
        (
            429,
            {"Retry-After": "1", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "2.5"},
            b'{"message":"You are being rate limited.","retry_after":2.5,"global":false}',
            Outcome.RETRY,
            2.5,
            2.5,
        ),
        (429, {"Retry-After": "9"}, b'{"retry_after":0.4,"global":true}', Outcome.RETRY, 9.0, None),
        (429, {}, b"not json", Outcome.RETRY, None, None),
        (404, {}, b'{"message":"Unknown Webhook","code":10015}', Outcome.DEAD, None, None),
        (401, {}, b'{"message":"Invalid Webhook Token","code":50027}', Outcome.DEAD, None, None),
        (400, {}, b'{"embeds":["0"]}', Outcome.DEAD, None, None),
        (502, {}, b"", Outcome.RETRY, None, None),
    ],
)
def test_discord_classify(
    status: int,
    headers: dict[str, str],
    body: bytes,
    outcome: Outcome,
    retry_after: float | None,
    pause_for: float | None,
) -> None:
    verdict = notifier("discord").classify(status, headers, body)
    assert (verdict.outcome, verdict.retry_after, verdict.pause_for) == (
        outcome,
        retry_after,
        pause_for,
    )


def test_discord_error_message_is_in_the_detail() -> None:
    verdict = notifier("discord").classify(404, {}, b'{"message":"Unknown Webhook","code":10015}')
    assert verdict.detail == "HTTP 404 Not Found: discord says Unknown Webhook (code 10015)"
    global_limit = notifier("discord").classify(429, {}, b'{"retry_after":1,"global":true}')
    assert global_limit.detail == "HTTP 429: rate limited (global)"


# --- google chat --------------------------------------------------------------------------


def test_google_chat_threads_per_tenant_and_kid_keeping_key_and_token() -> None:
    request = notifier("googlechat").render(revoked(), now=NOW)
    query = dict(parse_qsl(urlsplit(request.url).query))
    assert query == {
        "key": "chatKey12345",
        "token": "chatTok12345",
        "messageReplyOption": "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD",
    }
    body = payload(request)
    assert body["thread"] == {"threadKey": "keywatch-prod-kid-old"}
    assert body["text"] == "signing key kid-old revoked on prod"
    (card,) = body["cardsV2"]
    assert card["cardId"] == revoked().id
    assert card["card"]["header"]["title"] == "Signing key revoked on prod"
    widgets = card["card"]["sections"][0]["widgets"]
    labels = {w["decoratedText"]["topLabel"]: w["decoratedText"]["text"] for w in widgets[:-1]}
    assert labels["Kid"] == "kid-old" and labels["Thumbprint"] == "CCCC3333"
    assert revoked().id in widgets[-1]["textParagraph"]["text"]
    rotated = payload(notifier("googlechat").render(rotation(), now=NOW))
    assert rotated["thread"] == {"threadKey": "keywatch-prod-kid-new"}
    tenant_wide = payload(
        notifier("googlechat").render(tenant_event(EventType.TENANT_NO_NEXT_KEY), now=NOW)
    )
    assert tenant_wide["thread"] == {"threadKey": "keywatch-prod-tenant.no_next_key"}


def test_google_chat_escapes_card_html_and_limits_size() -> None:
    body = payload(notifier("googlechat").render(revoked(kid="<b>x</b>"), now=NOW))
    widgets = body["cardsV2"][0]["card"]["sections"][0]["widgets"]
    assert {"topLabel": "Kid", "text": "&lt;b&gt;x&lt;/b&gt;", "wrapText": True} in [
        w.get("decoratedText") for w in widgets
    ]
    for built in (notifier("googlechat"), notifier("googlechat", template="{{ event.kid }}" * 3)):
        request = built.render(long_event(), now=NOW)
        assert len(request.body) <= 30_000
        long_body = payload(request)
        assert fits(long_body["text"], 4096)
        assert len(long_body["thread"]["threadKey"]) <= 4000
        assert long_body["cardsV2"][0]["cardId"] == long_event().id


# --- webhook (Standard Webhooks) ----------------------------------------------------------


def verify_standard_webhook(
    secrets: list[str], headers: Mapping[str, str], body: bytes, *, now: datetime
) -> bool:
    """A receiver's check, written from the Standard Webhooks spec (not keywatch's signer):
    HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with the base64-decoded part
    of the secret after whsec_, base64 in each space-separated "v1,<sig>", 5 min tolerance."""
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(now.timestamp() - int(timestamp)) > 300:
        return False
    content = f"{message_id}.{timestamp}.".encode() + body
    offered = [
        entry.split(",", 1)[1]
        for entry in headers["webhook-signature"].split(" ")
        if entry.startswith("v1,")
    ]
    for secret in secrets:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(expected, signature) for signature in offered):
            return True
    return False


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


# --- pagerduty ----------------------------------------------------------------------------


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
    verdict = notifier("pagerduty").classify(status, {}, body)
    assert verdict.outcome is outcome
    assert detail in verdict.detail


# --- alertmanager (client logic; tests/test_notify_alertmanager.py runs a real one) -------


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


# --- templates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("slack", lambda body: body["blocks"][1]["text"]["text"]),
        ("slack", lambda body: body["text"]),
        ("teams", lambda body: body["attachments"][0]["content"]["body"][0]["text"]),
        ("discord", lambda body: body["embeds"][0]["description"]),
        ("googlechat", lambda body: body["text"]),
        ("webhook", lambda body: body["data"]["message"]),
        ("pagerduty", lambda body: body["payload"]["summary"]),
        ("alertmanager", lambda body: body[0]["annotations"]["description"]),
    ],
)
def test_template_replaces_the_human_text(kind: str, where: Any) -> None:
    template = (
        "{{ event.severity | upper }}: {{ event.tenant }} lost {{ event.kid }} ({{ event.type }})"
    )
    body = payload(notifier(kind, template=template).render(revoked(), now=NOW))
    assert where(body) == "CRITICAL: prod lost kid-old (key.revoked)"


def test_template_sees_every_documented_field() -> None:
    template = (
        "{{ event.id }}|{{ event.tenant }}|{{ event.type }}|{{ event.severity }}|"
        "{{ event.detected_at }}|{{ event.kid }}|{{ event.old_kid }}|{{ event.new_kid }}|"
        "{{ event.details.new_thumbprint }}|{{ event.details.thumbprint }}|{{ event.summary }}"
    )
    check_template(template)
    text = MessageTemplate(template).render(rotation())
    assert text == (
        f"{rotation().id}|prod|key.rotated|warning|2026-05-01T11:59:30.000Z||kid-old|kid-new|"
        "BBBB2222||signing key rotated on prod: kid-old -> kid-new"
    )


def test_template_values_are_escaped_but_its_own_markup_is_kept() -> None:
    template = "<https://runbooks.example/keys|Runbook> {{ event.kid }}"
    body = payload(notifier("slack", template=template).render(revoked(kid="a<b>&c"), now=NOW))
    assert body["text"] == "<https://runbooks.example/keys|Runbook> a&lt;b&gt;&amp;c"
    discord = payload(
        notifier("discord", template="**{{ event.kid }}**").render(revoked(kid="a_b*"), now=NOW)
    )
    assert discord["embeds"][0]["description"] == r"**a\_b\***"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hello\n{% if %}", "template line 2: syntax error: Expected an expression"),
        ("{{ event.kid }\n", "template line 1: syntax error: unexpected '}'"),
        ("{{ event.tenant | shout }}", "template line 1: No filter named 'shout'"),
        ("a\nb\n{{ event.detials }}", "template line 3: unknown variable event.detials"),
        ("{{ evnt.kid }}", "template line 1: unknown variable evnt"),
        (
            "{{ event.details.thumbprnt }}",
            "template line 1: unknown variable event.details.thumbprnt",
        ),
        ("{{ event.tenant.nope }}", "template line 1: a str value has no attribute 'nope'"),
        ("{{ event.path_of('x') }}", "template line 1: unknown variable event.path_of"),
        ("{{ event.__class__ }}", "template line 1: refused by the sandbox: event.__class__"),
        (
            "x\n{{ event.__class__.__init__.__globals__ }}",
            "template line 2: refused by the sandbox: event.__class__",
        ),
        ("{{ event['_path'] }}", "refused by the sandbox: event._path"),
        ("{{ ''.__class__.__mro__ }}", "refused by the sandbox: attribute '__class__' of a str"),
        ("{{ event.details.update({'x': 1}) }}", "unknown variable event.details.update"),
        ("{{ cycler.__init__.__globals__ }}", "refused by the sandbox: attribute '__init__'"),
        ("{{ range(10**6) | list }}", "OverflowError: Range too big"),
        ("{{ 1 / 0 }}", "template line 1: ZeroDivisionError: division by zero"),
    ],
)
def test_bad_templates_are_refused_with_their_line(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(source)
    assert message in str(caught.value)


def test_a_template_failing_on_one_event_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="monitor.notify")
    # Passes the load-time check (sample tenant "example"), divides by zero for "prod".
    template = "{{ 100 // (event.tenant | length - 4) }}"
    check_template(template)
    body = payload(notifier("slack", template=template).render(revoked(), now=NOW))
    assert body["text"] == "signing key kid-old revoked on prod"
    assert "template failed, sending the default text" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_details_named_like_dict_methods_are_details() -> None:
    template = "[{{ event.details.keys }}]"
    check_template(template)
    no_next = make_event(
        "prod", EventType.TENANT_NO_NEXT_KEY, DETECTED, ["k"], details={"keys": "a:current"}
    )
    assert MessageTemplate(template).render(no_next) == "[a:current]"
    assert MessageTemplate(template).render(rotation()) == "[]"
    assert MessageTemplate("{{ event.details.get('x', 'none') }}").render(rotation()) == "none"


def test_missing_details_render_empty_at_run_time_only() -> None:
    template = "[{{ event.details.revoked_at }}]"
    check_template(template)
    assert MessageTemplate(template).render(rotation()) == "[]"
    with pytest.raises(TemplateError, match=r"unknown variable event\.details\.revoked_at"):
        MessageTemplate(template).render(rotation(), lenient=False)


def test_sample_event_is_new_each_time() -> None:
    first = sample_event(tenant="prod", detected_at=NOW)
    second = sample_event(tenant="prod", detected_at=NOW + timedelta(seconds=1))
    assert first.type is EventType.KEY_ROTATED and first.tenant == "prod"
    assert first.id != second.id
    assert first.old_kid and first.new_kid and "new_thumbprint" in first.details


# --- secrets never shown ------------------------------------------------------------------


def every_destination() -> list[DestinationConfig]:
    return [
        destination("slack"),
        destination("teams"),
        destination("discord"),
        destination("googlechat"),
        destination("webhook", secrets=[SECRET_A, SECRET_B]),
        destination("alertmanager"),
        destination("pagerduty"),
    ]


def test_reprs_never_show_urls_or_secrets() -> None:
    configs = every_destination()
    settings = Settings(
        tenants=(TenantConfig(name="prod", domain="a.auth0.com", token="t"),),
        destinations=tuple(configs),
        data_dir="/tmp/kw",  # type: ignore[call-arg]
    )
    texts = [repr(settings), str(settings)]
    for config in configs:
        built = build_notifier(config)
        request = built.render(revoked(), now=NOW)
        texts += [repr(config), str(config), repr(built), str(built), repr(request)]
        texts += [repr(config.model_dump()), repr(built.classify(404, {}, b""))]
    everything = "\n".join(texts)
    for secret in [*SECRET_VALUES, "slackTokenSecret123456", "discordTokenSecret9876"]:
        assert secret.rstrip("/") not in everything


def test_secret_values_cover_urls_and_the_tokens_inside_them() -> None:
    values = set()
    for config in every_destination():
        values.update(config.secret_values())
    for expected in [
        SLACK_URL,
        "slackTokenSecret123456",
        "teamsSig12345",
        "chatKey12345",
        "chatTok12345",
        "discordTokenSecret9876",
        ROUTING_KEY,
        SECRET_A,
        SECRET_B,
        "http://am-2.internal:9093",
    ]:
        assert expected in values


def test_service_error_text_is_redacted() -> None:
    echo = json.dumps({"message": f"unknown webhook {DISCORD_URL}", "code": 1}).encode()
    verdict = notifier("discord").classify(404, {}, echo)
    assert "discordTokenSecret9876" not in verdict.detail
    assert "***" in verdict.detail


# --- delivery over real loopback HTTP -----------------------------------------------------


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


# --- no placeholder where a kid belongs (issue 8) ---------------------------------------------


def detected_events() -> list[Event]:
    """At least one event of every type, as detection makes them (not hand-built)."""
    rotated = snap(
        key("A", "previous"), key("B", "previous"), key("C", "current"), key("D", "next")
    )
    gap = snap(key("A", "previous"), key("B", "unknown"), key("C", "next"), minutes=1)
    changes = [
        (STEADY, rotated, ()),
        (STEADY, snap(key("A", "revoked"), key("B"), key("C", "next")), ()),
        (STEADY, snap(key("B"), key("C", "next")), ()),
        (STEADY, snap(key("A", "previous", cert="A2"), key("B"), key("C", "next")), ()),
        (STEADY, snap(key("A", "previous", thumbprint="00"), key("B"), key("C", "next")), ()),
        (STEADY, snap(key("A", "previous"), key("B"), key("C")), ()),
        (STEADY, gap, ()),
        (gap, STEADY, ("B",)),
        (gap, STEADY, ()),
        (gap, rotated, ("B",)),
    ]
    events = [e for old, new, last in changes for e in diff(old, new, last_current=last)]
    assert {e.type for e in events} == set(EventType)
    return events


@pytest.mark.parametrize("kind", sorted(NOTIFIER_CLASSES))
def test_no_message_has_a_placeholder_where_a_kid_belongs(kind: str) -> None:
    built = notifier(kind)
    for event in detected_events():
        texts = [event.summary, event_title(event), *(value for _, value in event_facts(event))]
        for text in texts:
            assert text.strip() and "None" not in text and "null" not in text, (event, text)
        body = built.render(event, now=NOW).body.decode()
        assert "None" not in body and "->  " not in body and "-> \n" not in body, (kind, body)
