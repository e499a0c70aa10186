"""Slack incoming webhooks: Block Kit (header, section, context) plus the ``text`` fallback that
mobile notifications show. Success is HTTP 200 with the body ``ok``; Slack's error codes for
a gone or misconfigured webhook are permanent."""

from __future__ import annotations

import json
import re
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
)
from monitor.templates import (
    Escape,
    escape_slack,
    event_facts,
    event_title,
    iso_utc,
    limit,
    limit_escaped,
)

HEADER_LIMIT = 150
TEXT_LIMIT = 3000  # a section's mrkdwn text; also used for the top-level text
FIELD_LIMIT = 2000
MAX_FIELDS = 10
# Answers that say this webhook will never accept the message (Slack changelog 2016-05-17).
PERMANENT_ERRORS = frozenset(
    {
        "invalid_payload",
        "user_not_found",
        "channel_not_found",
        "channel_is_archived",
        "action_prohibited",
        "no_service",
        "no_service_id",
        "no_team",
        "team_disabled",
        "invalid_token",
        "invalid_blocks",
        "invalid_blocks_format",
        "missing_text_or_fallback_or_attachments",
        "posting_to_general_channel_denied",
        "too_many_attachments",
    }
)
_ICONS = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class SlackNotifier(Notifier):
    kind = "slack"
    default_rate_limit = 1.0

    @classmethod
    def value_escape(cls) -> Escape:
        return escape_slack

    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        text = self.message_text(event, default=escape_slack(event.summary))
        facts = event_facts(event)
        shown, rest = facts[:MAX_FIELDS], facts[MAX_FIELDS:]
        section = text + "".join(f"\n*{label}:* {escape_slack(value)}" for label, value in rest)
        fields = [
            {
                "type": "mrkdwn",
                "text": limit_escaped(f"*{label}*\n{escape_slack(value)}", FIELD_LIMIT),
            }
            for label, value in shown
        ]
        footer = f"event id `{event.id}` · detected {iso_utc(event.detected_at)}"
        headline = f"{_ICONS.get(event.severity, '')} {event_title(event)}".strip()
        payload = {
            "text": limit_escaped(text, TEXT_LIMIT),
            "blocks": [
                {
                    "type": "header",
                    "text": {"type": "plain_text", "text": limit(headline, HEADER_LIMIT)},
                },
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": limit_escaped(section, TEXT_LIMIT)},
                    "fields": fields,
                },
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": limit(footer, TEXT_LIMIT)}],
                },
            ],
        }
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        return OutgoingRequest(url=self.config.target_url, body=json_body(payload), headers=headers)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        answer = body.decode("utf-8", "replace").strip()
        code, body_retry_after = _read_answer(answer)
        if status == 429:
            retry_after = latest(
                parse_retry_after(header(headers, "retry-after")), body_retry_after
            )
            return Verdict(Outcome.RETRY, "HTTP 429: rate limited", retry_after, status)
        if code in PERMANENT_ERRORS:
            return Verdict(Outcome.DEAD, f"HTTP {status}: slack error {code}", status=status)
        verdict = classify_status(status, headers)
        if verdict.outcome is Outcome.DELIVERED and code != "ok":
            shown = f"slack error {code}" if code else "no 'ok' in the answer"
            return Verdict(Outcome.DEAD, f"HTTP {status}: {shown}", status=status)
        if code and code != "ok" and verdict.outcome is not Outcome.DELIVERED:
            return Verdict(
                verdict.outcome,
                f"{verdict.detail}: slack error {code}",
                verdict.retry_after,
                status,
            )
        return verdict


def _read_answer(answer: str) -> tuple[str | None, float | None]:
    """Slack's answer code (``ok`` or an error such as ``channel_not_found``), from the text
    body of a webhook or a ``{"ok": ..., "error": ...}`` JSON body, and its ``retry_after``."""
    if _ERROR_CODE.fullmatch(answer):
        return answer, None
    try:
        parsed = json.loads(answer)
    except ValueError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    seconds = as_seconds(parsed.get("retry_after"))
    if parsed.get("ok") is True:
        return "ok", seconds
    error = parsed.get("error")
    code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None
    return code, seconds
