"""A generic JSON webhook signed per Standard Webhooks v1: ``webhook-id`` (the event id, the
same on every retry), ``webhook-timestamp`` (this attempt, in Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` of ``"{id}.{timestamp}.{body}"``, one per
configured secret, space-separated, so a receiver can rotate its secret without a gap).
The body is ``{"type", "timestamp", "data"}``, or a CloudEvents 1.0 structured envelope."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

from monitor.config import WebhookDestination, webhook_key
from monitor.model import Event
from monitor.notify.base import USER_AGENT, Notifier, OutgoingRequest, json_body
from monitor.templates import iso_utc, limit

MESSAGE_LIMIT = 16_000  # keeps a templated body well under Standard Webhooks' ~20 KB advice
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


def sign(key: bytes, message_id: str, timestamp: str, body: bytes) -> str:
    """One ``webhook-signature`` entry: ``v1,`` + base64 HMAC-SHA256 of id.timestamp.body."""
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def event_data(event: Event, message: str) -> dict[str, object]:
    """The event as the receiver gets it, under ``data``."""
    return {
        "id": event.id,
        "tenant": event.tenant,
        "type": event.type.value,
        "severity": event.severity.label,
        "detected_at": iso_utc(event.detected_at),
        "kid": event.kid,
        "old_kid": event.old_kid,
        "new_kid": event.new_kid,
        "details": dict(event.details),
        "summary": event.summary,
        "message": limit(message, MESSAGE_LIMIT),
    }


class WebhookNotifier(Notifier):
    kind = "webhook"
    default_rate_limit = 5.0

    def __init__(self, config: WebhookDestination) -> None:
        super().__init__(config)
        self._destination = config

    @property
    def config(self) -> WebhookDestination:
        return self._destination

    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        data = event_data(event, self.message_text(event, default=event.summary))
        if self.config.cloudevents:
            content_type = CLOUDEVENTS_CONTENT_TYPE
            payload = _cloudevent(event, data)
        else:
            content_type = "application/json"
            payload = {
                "type": f"auth0.{event.type.value}",
                "timestamp": data["detected_at"],  # the same instant, formatted once
                "data": data,
            }
        body = json_body(payload)
        timestamp = str(int(now.timestamp()))
        headers = {
            "Content-Type": content_type,
            "User-Agent": USER_AGENT,
            "webhook-id": event.id,
            "webhook-timestamp": timestamp,
        }
        if self.config.secrets:
            headers["webhook-signature"] = " ".join(
                sign(webhook_key(secret), event.id, timestamp, body)
                for secret in self.config.secrets
            )
        return OutgoingRequest(url=self.config.target_url, body=body, headers=headers)


def _cloudevent(event: Event, data: dict[str, object]) -> dict[str, object]:
    envelope: dict[str, object] = {
        "specversion": "1.0",
        "id": event.id,
        "source": f"keywatch://{event.tenant}",
        "type": f"com.keywatch.{event.type.value}",
        "time": iso_utc(event.detected_at),
        "datacontenttype": "application/json",
    }
    subject = event.kid or event.new_kid
    if subject:
        envelope["subject"] = subject
    envelope["data"] = data
    return envelope
