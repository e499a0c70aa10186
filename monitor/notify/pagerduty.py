"""PagerDuty Events API v2: a ``trigger`` whose ``dedup_key`` is the tenant and kid, so a
re-sent event (or another event about the same key) joins the open incident instead of opening
a second one. A problem with no kid of its own (no current key, unreachable, a JWKS URL that
disagrees) is keyed by its type (and URL), and the event that says it is over
(``monitor.notify.clearing.RECOVERIES``) is a ``resolve`` of that key, not a new incident.
Success is 202; 400 is permanent; 429 and 5xx are retried."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime

from monitor.config import PagerDutyDestination
from monitor.model import Event
from monitor.notify.base import (
    USER_AGENT,
    Notifier,
    Outcome,
    OutgoingRequest,
    Verdict,
    bounded_key,
    classify_status,
    json_body,
)
from monitor.notify.clearing import RECOVERIES, where
from monitor.templates import iso_utc, limit

SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255
COMPONENT = "auth0-signing-keys"


_PROBLEMS = frozenset(RECOVERIES.values())


def dedup_key(event: Event) -> str:
    """The incident ``event`` joins (or, for a recovery, resolves)."""
    problem = RECOVERIES.get(event.type, event.type)
    if problem in _PROBLEMS:  # keyed by what went wrong, where: its recovery knows no kid
        return _key(event.tenant, problem.value, where(event))
    return _key(event.tenant, event.kid or event.new_kid or event.type.value)


def _key(*parts: str | None) -> str:
    return bounded_key(":".join(["keywatch", *(part for part in parts if part)]), DEDUP_KEY_LIMIT)


def is_resolve(event: Event) -> bool:
    return event.type in RECOVERIES


class PagerDutyNotifier(Notifier):
    kind = "pagerduty"
    default_rate_limit = 5.0

    def __init__(self, config: PagerDutyDestination) -> None:
        super().__init__(config)
        self._destination = config

    @property
    def config(self) -> PagerDutyDestination:
        return self._destination

    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if is_resolve(event):
            return OutgoingRequest(
                url=self.config.target_url, body=json_body(self._resolve(event)), headers=headers
            )
        routing_key = self.config.routing_key
        details: dict[str, object] = {
            "tenant": event.tenant,
            "event_type": event.type.value,
            "event_id": event.id,
            "kid": event.kid,
            "old_kid": event.old_kid,
            "new_kid": event.new_kid,
            "detected_at": iso_utc(event.detected_at),
            **dict(event.details),
        }
        payload = {
            "routing_key": routing_key.get_secret_value(),
            "event_action": "trigger",
            "dedup_key": dedup_key(event),
            "payload": {
                "summary": limit(self.message_text(event, default=event.summary), SUMMARY_LIMIT),
                "source": event.tenant,
                "severity": event.severity.label,  # critical | warning | info ("error" unused)
                "timestamp": iso_utc(event.detected_at),
                "component": COMPONENT,
                "group": event.tenant,
                "class": event.type.value,
                "custom_details": details,
            },
            "client": "keywatch",
        }
        return OutgoingRequest(url=self.config.target_url, body=json_body(payload), headers=headers)

    def _resolve(self, event: Event) -> dict[str, object]:
        return {
            "routing_key": self.config.routing_key.get_secret_value(),
            "event_action": "resolve",
            "dedup_key": dedup_key(event),
        }

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        verdict = classify_status(status, headers)
        if verdict.outcome is Outcome.DELIVERED or status != 400:
            return verdict
        said = _pagerduty_errors(body)
        if not said:
            return verdict
        return dataclasses.replace(
            verdict, detail=f"{verdict.detail}: pagerduty says {self.service_message(said)}"
        )


def _pagerduty_errors(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict):
        return ""
    parts = [answer.get("message")]
    errors = answer.get("errors")
    if isinstance(errors, list):
        parts += errors
    return "; ".join(part for part in parts if isinstance(part, str))
