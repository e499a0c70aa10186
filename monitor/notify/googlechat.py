"""Google Chat incoming webhooks: ``text`` plus a ``cardsV2`` card, threaded per tenant and kid
(``thread.threadKey`` with ``messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`` added to
the URL, keeping its ``key`` and ``token``). Success is 200 with the created message."""

from __future__ import annotations

from datetime import datetime

from monitor.model import Event
from monitor.notify.base import (
    USER_AGENT,
    Notifier,
    OutgoingRequest,
    bounded_key,
    fit_body,
    with_query,
)
from monitor.templates import escape_html, event_facts, event_title, limit

TEXT_LIMIT = 4096
MAX_BODY_BYTES = 30_000  # Chat refuses messages over 32,000 bytes
THREAD_KEY_LIMIT = 4000
WIDGET_TEXT_LIMIT = 2000
MAX_WIDGETS = 30
REPLY_OPTION = {"messageReplyOption": "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"}


def thread_key(event: Event) -> str:
    """One thread per tenant and kid (a rotation's new kid; the event type for tenant-wide
    events), so every message about one key lands in one thread."""
    subject = event.kid or event.new_kid or event.type.value
    return bounded_key(f"keywatch-{event.tenant}-{subject}", THREAD_KEY_LIMIT)


class GoogleChatNotifier(Notifier):
    kind = "googlechat"
    default_rate_limit = 1.0

    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        text = self.message_text(event, default=event.summary)
        facts = event_facts(event)[:MAX_WIDGETS]

        def message(cap: int | None) -> dict[str, object]:
            size = WIDGET_TEXT_LIMIT if cap is None else cap
            widgets: list[dict[str, object]] = [
                {
                    "decoratedText": {
                        "topLabel": label,
                        "text": escape_html(limit(value, size)),
                        "wrapText": True,
                    }
                }
                for label, value in facts
            ]
            widgets.append({"textParagraph": {"text": f"<i>event id {event.id}</i>"}})
            card = {
                "header": {
                    "title": limit(event_title(event), 200),
                    "subtitle": f"{event.type.value} · {event.severity.label}",
                },
                "sections": [{"widgets": widgets}],
            }
            return {
                "text": limit(text, TEXT_LIMIT if cap is None else cap * 4),
                "cardsV2": [{"cardId": event.id, "card": card}],
                "thread": {"threadKey": thread_key(event)},
            }

        headers = {"Content-Type": "application/json; charset=UTF-8", "User-Agent": USER_AGENT}
        url = with_query(self.config.target_url, REPLY_OPTION)
        return OutgoingRequest(
            url=url, body=fit_body(message, budget=MAX_BODY_BYTES), headers=headers
        )
