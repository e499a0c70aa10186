"""Discord webhooks: ``?wait=true`` (so a 200 means the message was saved), one embed within
Discord's limits, and ``allowed_mentions`` empty so nothing in a message can ping anyone.
A 429 says how long to wait in its JSON body (``retry_after``, float seconds) and header; a
response with ``X-RateLimit-Remaining: 0`` says the bucket is empty for ``Reset-After``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime

from monitor.model import Event, Severity
from monitor.notify.base import (
    USER_AGENT,
    Notifier,
    Outcome,
    OutgoingRequest,
    Verdict,
    as_seconds,
    classify_status,
    header,
    json_body,
    latest,
    parse_retry_after,
    with_query,
)
from monitor.templates import (
    Escape,
    escape_discord,
    event_facts,
    event_title,
    iso_utc,
    limit,
    utf16_len,
)

CONTENT_LIMIT = 2000
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
MAX_FIELDS = 25
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
EMBED_TOTAL_LIMIT = 6000
_COLOURS = {Severity.CRITICAL: 0xE01E5A, Severity.WARNING: 0xECB22E, Severity.INFO: 0x2EB67D}


class DiscordNotifier(Notifier):
    kind = "discord"
    default_rate_limit = 5.0

    @classmethod
    def value_escape(cls) -> Escape:
        return escape_discord

    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        summary = escape_discord(event.summary)
        payload = {
            "content": limit(summary, CONTENT_LIMIT),
            "embeds": [self._embed(event, self.message_text(event, default=summary))],
            "allowed_mentions": {"parse": []},
        }
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        url = with_query(self.config.target_url, {"wait": "true"})
        return OutgoingRequest(url=url, body=json_body(payload), headers=headers)

    def _embed(self, event: Event, description: str) -> dict[str, object]:
        title = limit(event_title(event), TITLE_LIMIT)
        footer = limit(f"event id {event.id}", FOOTER_LIMIT)
        facts = event_facts(event)[:MAX_FIELDS]
        fields: list[dict[str, object]] = []
        used = 0
        for cap in (FIELD_VALUE_LIMIT, 256, 64):
            fields = [
                {
                    "name": limit(label, FIELD_NAME_LIMIT),
                    "value": limit(escape_discord(value), cap) or "-",
                    "inline": True,
                }
                for label, value in facts
            ]
            used = utf16_len(title) + utf16_len(footer) + sum(_field_size(f) for f in fields)
            if used <= EMBED_TOTAL_LIMIT - 200:
                break
        room = min(DESCRIPTION_LIMIT, EMBED_TOTAL_LIMIT - used)
        embed: dict[str, object] = {
            "title": title,
            "description": limit(description, room),
            "color": _COLOURS.get(event.severity, 0),
            "fields": fields,
            "timestamp": iso_utc(event.detected_at),
            "footer": {"text": footer},
        }
        return embed

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        verdict = self._classify_status(status, headers, body)
        return dataclasses.replace(verdict, pause_for=_bucket_pause(headers))

    def _classify_status(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        answer = _json_object(body)
        if status == 429:
            retry_after = latest(
                parse_retry_after(header(headers, "retry-after")),
                as_seconds(answer.get("retry_after")),
            )
            scope = " (global)" if answer.get("global") is True else ""
            return Verdict(Outcome.RETRY, f"HTTP 429: rate limited{scope}", retry_after, status)
        verdict = classify_status(status, headers)
        message = answer.get("message")
        if verdict.outcome is Outcome.DELIVERED or not isinstance(message, str):
            return verdict
        code = answer.get("code")
        said = f"{message} (code {code})" if isinstance(code, int) else message
        detail = f"{verdict.detail}: discord says {self.service_message(said)}"
        return dataclasses.replace(verdict, detail=detail)


def _field_size(field: Mapping[str, object]) -> int:
    return utf16_len(str(field["name"])) + utf16_len(str(field["value"]))


def _json_object(body: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _bucket_pause(headers: Mapping[str, str]) -> float | None:
    """Seconds until the webhook's bucket refills, when the last answer emptied it."""
    if (header(headers, "x-ratelimit-remaining") or "").strip() != "0":
        return None
    return parse_retry_after(header(headers, "x-ratelimit-reset-after"))
