"""Shared helpers of the notifier tests (tests/unit/test_notify_*.py): destinations of every kind
with secret-looking URLs, and the events they are sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from monitor.config import DestinationConfig, parse_destination
from monitor.model import Event, EventType, make_event
from monitor.notify import Notifier, build_notifier
from monitor.notify.base import Outcome, OutgoingRequest, Verdict
from monitor.templates import utf16_len

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


def assert_classified(
    kind: str,
    status: int,
    body: bytes,
    outcome: Outcome,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> Verdict:
    """``kind``'s notifier classifies the answer as ``outcome``, with ``detail`` in its words;
    returns the verdict for the checks a kind adds."""
    verdict = notifier(kind).classify(status, dict(headers or {}), body)
    assert verdict.outcome is outcome
    assert detail in verdict.detail
    return verdict


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
