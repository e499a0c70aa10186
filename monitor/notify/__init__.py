"""Notifications: one ``Notifier`` per configured destination, built by ``build_notifier``.

Each kind renders an ``Event`` into the request its service expects and reads the answer into
a ``Verdict`` (see ``base.py``); the dispatcher owns queueing, retries and rate limits.
"""

from __future__ import annotations

from collections.abc import Mapping

from monitor.config import DestinationConfig
from monitor.notify.alertmanager import AlertmanagerNotifier
from monitor.notify.base import (
    Notifier,
    Outcome,
    OutgoingRequest,
    Verdict,
    classify_status,
)
from monitor.notify.discord import DiscordNotifier
from monitor.notify.googlechat import GoogleChatNotifier
from monitor.notify.pagerduty import PagerDutyNotifier
from monitor.notify.slack import SlackNotifier
from monitor.notify.teams import TeamsNotifier
from monitor.notify.webhook import WebhookNotifier
from monitor.templates import sample_event

__all__ = [
    "NOTIFIER_CLASSES",
    "Notifier",
    "Outcome",
    "OutgoingRequest",
    "Verdict",
    "build_notifier",
    "classify_status",
    "sample_event",
]

NOTIFIER_CLASSES: Mapping[str, type[Notifier]] = {
    notifier.kind: notifier
    for notifier in (
        SlackNotifier,
        TeamsNotifier,
        DiscordNotifier,
        GoogleChatNotifier,
        WebhookNotifier,
        AlertmanagerNotifier,
        PagerDutyNotifier,
    )
}


def build_notifier(config: DestinationConfig) -> Notifier:
    """The notifier for ``config.kind``."""
    return NOTIFIER_CLASSES[config.kind](config)
