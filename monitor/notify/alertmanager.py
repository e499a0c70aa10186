"""Prometheus Alertmanager: each event becomes an alert POSTed to ``{url}/api/v2/alerts`` of
every configured Alertmanager (a cluster gossips, so one acceptance is enough).

Alertmanager keeps an alert active until its ``endsAt``, and expects its clients to re-send
active alerts (it keeps none across its own restarts) and to send ``endsAt=now`` to resolve
one early. So this notifier remembers the alerts it delivered:

* an event's alert starts at ``detected_at`` and ends ``resolve_after`` later;
* ``periodic`` (called by the dispatcher every minute) re-sends the still-active ones, and
  resolutions for five minutes after they were made, and forgets the expired ones;
* an alert ends early when an event that shows its problem is over is delivered
  (``monitor.notify.clearing``: a ``key.rotated`` ends ``tenant.no_next_key``, a
  ``jwks.consistent`` ends the ``jwks.mismatch`` of the same URL, ...): the resolution rides in
  the same POST.

The memory is per process: after a restart it holds only alerts delivered since. An alert
from before keeps firing in Alertmanager until its ``endsAt`` (at most ``resolve_after``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx

from monitor.config import AlertmanagerDestination
from monitor.model import Event, EventType
from monitor.notify.base import (
    USER_AGENT,
    Notifier,
    Outcome,
    OutgoingRequest,
    Verdict,
    json_body,
    latest,
)
from monitor.notify.clearing import clears, where
from monitor.templates import event_facts, iso_utc, limit

logger = logging.getLogger(__name__)

ALERTS_PATH = "/api/v2/alerts"
RESOLVED_RESEND = timedelta(minutes=5)
ANNOTATION_LIMIT = 4000
_WORD = re.compile(r"[a-z0-9]+")
_ALERTNAMES = {
    EventType.TENANT_NO_CURRENT_KEY: "Auth0TenantNoCurrentSigningKey",
    EventType.TENANT_NO_NEXT_KEY: "Auth0TenantNoNextSigningKey",
    EventType.TENANT_CURRENT_KEY_RESTORED: "Auth0TenantCurrentSigningKeyRestored",
    EventType.JWKS_MISMATCH: "Auth0JwksMismatch",
    EventType.JWKS_CONSISTENT: "Auth0JwksConsistent",
    EventType.MIRROR_STALE: "Auth0JwksMirrorStale",
    EventType.MIRROR_SYNCED: "Auth0JwksMirrorSynced",
    EventType.TENANT_ROTATION_OVERDUE: "Auth0TenantSigningKeyRotationOverdue",
    EventType.TENANT_UNREACHABLE: "Auth0TenantUnreachable",
    EventType.TENANT_RECOVERED: "Auth0TenantReachableAgain",
}

LabelKey = tuple[tuple[str, str], ...]


def alertname(event_type: EventType) -> str:
    """``key.revoked`` -> ``Auth0SigningKeyRevoked``, one CamelCase name per event type."""
    if event_type in _ALERTNAMES:
        return _ALERTNAMES[event_type]
    words = _WORD.findall(event_type.value.removeprefix("key."))
    return "Auth0SigningKey" + "".join(word.capitalize() for word in words)


@dataclass(frozen=True, slots=True)
class _Alert:
    tenant: str
    event_type: EventType
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime

    @property
    def key(self) -> LabelKey:
        return tuple(sorted(self.labels.items()))

    def ended(self, at: datetime) -> _Alert:
        return _Alert(
            self.tenant, self.event_type, self.labels, self.annotations, self.starts_at, at
        )

    def as_json(self) -> dict[str, object]:
        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": iso_utc(self.starts_at),
            "endsAt": iso_utc(self.ends_at),
        }


class AlertmanagerNotifier(Notifier):
    kind = "alertmanager"
    default_rate_limit = 5.0

    def __init__(self, config: AlertmanagerDestination) -> None:
        super().__init__(config)
        self._destination = config
        self._active: dict[LabelKey, _Alert] = {}
        self._resolved: dict[LabelKey, _Alert] = {}  # ends_at is when it was resolved

    @property
    def config(self) -> AlertmanagerDestination:
        return self._destination

    @property
    def alert_urls(self) -> list[str]:
        return [url.get_secret_value() + ALERTS_PATH for url in self.config.urls]

    def alert_for(self, event: Event) -> _Alert:
        labels = {
            "alertname": alertname(event.type),
            "tenant": event.tenant,
            "severity": event.severity.label,
            "source": "keywatch",
        }
        subject = event.kid or event.new_kid
        if subject:
            labels["kid"] = subject
        url = where(event)
        if url:  # one alert per JWKS URL, cleared by that URL agreeing again
            labels["url"] = url
        default = "\n".join(f"{label}: {value}" for label, value in event_facts(event))
        annotations = {
            "summary": limit(event.summary, ANNOTATION_LIMIT),
            "description": limit(self.message_text(event, default=default), ANNOTATION_LIMIT),
            "event_id": event.id,
        }
        ends_at = event.detected_at + timedelta(seconds=self.config.resolve_after)
        return _Alert(event.tenant, event.type, labels, annotations, event.detected_at, ends_at)

    def cleared_by(self, event: Event) -> list[_Alert]:
        """The active alerts ``event`` shows are over."""
        return [
            alert
            for alert in self._active.values()
            if clears(
                event, tenant=alert.tenant, problem=alert.event_type, url=alert.labels.get("url")
            )
        ]

    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        """The POST to the first Alertmanager (``deliver`` sends the same body to each)."""
        alerts = [self.alert_for(event), *(a.ended(now) for a in self.cleared_by(event))]
        return self._request(self.alert_urls[0], alerts)

    def _request(self, url: str, alerts: Iterable[_Alert]) -> OutgoingRequest:
        body = json_body([alert.as_json() for alert in alerts])
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        return OutgoingRequest(url=url, body=body, headers=headers)

    async def deliver(self, http: httpx.AsyncClient, event: Event, *, now: datetime) -> Verdict:
        alert = self.alert_for(event)
        cleared = self.cleared_by(event)
        verdict = await self._post_everywhere(http, [alert, *(a.ended(now) for a in cleared)])
        if verdict.outcome is Outcome.DELIVERED:
            for old in cleared:
                self._active.pop(old.key, None)
                self._resolved[old.key] = old.ended(now)
            if alert.ends_at > now:
                self._active[alert.key] = alert
                self._resolved.pop(alert.key, None)
        return verdict

    async def periodic(self, http: httpx.AsyncClient, now: datetime) -> Verdict | None:
        """Re-send the active alerts and recent resolutions; forget what has expired."""
        self._forget_expired(now)
        alerts = [*self._active.values(), *self._resolved.values()]
        if not alerts:
            return None
        verdict = await self._post_everywhere(http, alerts)
        if verdict.outcome is not Outcome.DELIVERED:
            logger.warning(
                "re-sending %d alerts failed: %s",
                len(alerts),
                verdict.detail,
                extra={"destination": self.name},
            )
        return verdict

    async def resolve(self, http: httpx.AsyncClient, event: Event, *, now: datetime) -> Verdict:
        """End ``event``'s alert now (say, an operator dealt with it) and stop re-sending it."""
        ended = self.alert_for(event).ended(now)
        verdict = await self._post_everywhere(http, [ended])
        if verdict.outcome is Outcome.DELIVERED:
            self._active.pop(ended.key, None)
            self._resolved[ended.key] = ended
        return verdict

    def active_alerts(self, now: datetime) -> list[dict[str, object]]:
        """The alerts still firing at ``now``, as they are (re-)sent."""
        return [alert.as_json() for alert in self._active.values() if alert.ends_at > now]

    def _forget_expired(self, now: datetime) -> None:
        for key, alert in list(self._active.items()):
            if alert.ends_at <= now:
                del self._active[key]
        for key, alert in list(self._resolved.items()):
            if alert.ends_at + RESOLVED_RESEND <= now:
                del self._resolved[key]

    async def _post_everywhere(self, http: httpx.AsyncClient, alerts: list[_Alert]) -> Verdict:
        requests = [self._request(url, alerts) for url in self.alert_urls]
        verdicts = await asyncio.gather(*(self.send(http, request) for request in requests))
        return combine(verdicts)


def combine(verdicts: list[Verdict]) -> Verdict:
    """Delivered when any Alertmanager accepted; dead when every one refused for good;
    otherwise retry (after the longest hint)."""
    if len(verdicts) == 1:
        return verdicts[0]
    accepted = [verdict for verdict in verdicts if verdict.outcome is Outcome.DELIVERED]
    if accepted:
        detail = f"accepted by {len(accepted)} of {len(verdicts)} Alertmanagers"
        return Verdict(Outcome.DELIVERED, detail, status=accepted[0].status)
    detail = "; ".join(f"urls[{index}]: {v.detail}" for index, v in enumerate(verdicts))
    if all(verdict.outcome is Outcome.DEAD for verdict in verdicts):
        return Verdict(Outcome.DEAD, detail, status=verdicts[0].status)
    retry_after = latest(*(verdict.retry_after for verdict in verdicts))
    return Verdict(Outcome.RETRY, detail, retry_after=retry_after)
