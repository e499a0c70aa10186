"""Microsoft Teams through a Workflows ("When a Teams webhook request is received") webhook:
an Adaptive Card in a ``message`` envelope, kept under 20 KB. Success is 202 (the flow
accepted it; it runs later) or 200 (a flow that answers itself). Retired Office 365
connector URLs are refused when the configuration loads."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from monitor.model import Event, Severity
from monitor.notify.base import (
    USER_AGENT,
    Notifier,
    Outcome,
    OutgoingRequest,
    Verdict,
    classify_status,
    fit_body,
)
from monitor.templates import event_facts, limit

MAX_BODY_BYTES = 20_000
HEADING_LIMIT = 2000
FACT_LIMIT = 2000
MAX_FACTS = 30
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
_COLOURS = {Severity.CRITICAL: "Attention", Severity.WARNING: "Warning", Severity.INFO: "Accent"}
_SUCCESS = frozenset({200, 202})


class TeamsNotifier(Notifier):
    kind = "teams"
    default_rate_limit = 2.0

    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        heading = self.message_text(event, default=event.summary)
        facts = event_facts(event)[:MAX_FACTS]

        def card(cap: int | None) -> dict[str, object]:
            fact_limit = FACT_LIMIT if cap is None else cap
            heading_limit = HEADING_LIMIT if cap is None else cap * 2
            content = {
                "$schema": CARD_SCHEMA,
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": limit(heading, heading_limit),
                        "style": "heading",
                        "size": "Medium",
                        "weight": "Bolder",
                        "color": _COLOURS.get(event.severity, "Default"),
                        "wrap": True,
                    },
                    {
                        "type": "FactSet",
                        "facts": [
                            {"title": label, "value": limit(value, fact_limit)}
                            for label, value in facts
                        ],
                    },
                    {
                        "type": "TextBlock",
                        "text": f"event id {event.id}",
                        "isSubtle": True,
                        "size": "Small",
                        "wrap": True,
                    },
                ],
                "msteams": {"width": "full"},
            }
            return {
                "type": "message",
                "attachments": [
                    {
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "contentUrl": None,
                        "content": content,
                    }
                ],
            }

        body = fit_body(card, budget=MAX_BODY_BYTES)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        return OutgoingRequest(url=self.config.target_url, body=body, headers=headers)

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        verdict = classify_status(status, headers)
        if verdict.outcome is not Outcome.DELIVERED:
            return verdict
        if status not in _SUCCESS:
            detail = f"{verdict.detail}: a Workflows webhook answers 202 or 200"
            return Verdict(Outcome.DEAD, detail, status=status)
        answer = body.decode("utf-8", "replace")
        if "delivery failed" in answer.lower():  # old connectors: 200 with the error as text
            detail = f"{verdict.detail}: {self.service_message(answer)}"
            return Verdict(Outcome.DEAD, detail, status=status)
        return verdict
