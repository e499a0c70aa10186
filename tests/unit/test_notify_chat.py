"""monitor.notify chat kinds (Slack, Teams, Discord, Google Chat): payload shapes and limits,
escaping, and answer classification."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlsplit

import pytest

from monitor.model import EventType
from monitor.notify.base import Outcome
from monitor.templates import utf16_len
from tests.support.notify import (
    NOW,
    SLACK_URL,
    assert_classified,
    fits,
    long_event,
    notifier,
    payload,
    revoked,
    rotation,
    tenant_event,
)

# --- slack ---------------------------------------------------------------------------------


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
    verdict = assert_classified("slack", status, body, outcome, detail, headers=headers)
    assert verdict.retry_after == retry_after


# --- teams ---------------------------------------------------------------------------------


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
    assert_classified("teams", status, body, outcome, detail)


# --- discord -------------------------------------------------------------------------------


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


# --- google chat ---------------------------------------------------------------------------


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
