"""What every destination kind shares: the request it renders, the verdict on the answer, and
delivery over the one shared HTTP client.

A kind (``slack.py``, ``teams.py``, …) subclasses ``Notifier`` and implements ``render``; most
keep the shared ``classify``. The dispatcher calls ``deliver`` and acts on the ``Verdict``:
``DELIVERED`` -> mark done; ``RETRY`` -> back off (at least ``retry_after``); ``DEAD`` -> dead
letter. ``pause_for``, on any verdict, says the destination's rate-limit bucket is empty: send
nothing more to it for that many seconds. A verdict's ``detail`` is safe to log: it never
contains the URL or a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from http import HTTPStatus
from typing import ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from monitor import __version__
from monitor.config import DestinationConfig
from monitor.httpclient import TOTAL_TIMEOUT_FACTOR, parse_retry_after
from monitor.model import Event
from monitor.notify.routing import matches
from monitor.redact import Redactor
from monitor.templates import Escape, MessageTemplate, TemplateError, iso_utc

__all__ = [
    "MAX_RESPONSE_BYTES",
    "USER_AGENT",
    "Notifier",
    "Outcome",
    "OutgoingRequest",
    "Verdict",
    "as_seconds",
    "bounded_key",
    "classify_status",
    "fit_body",
    "header",
    "json_body",
    "latest",
    "now_utc_iso",
    "parse_retry_after",
    "with_query",
]

logger = logging.getLogger(__name__)

USER_AGENT = f"keywatch/{__version__}"
MAX_RESPONSE_BYTES = 64 * 1024  # of an answer body, read for classification; the rest is dropped
_RETRIED_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """One HTTP request to a destination. ``url`` is a secret (it often embeds a token), and so
    may be the body (PagerDuty's carries the routing key): neither is in the repr."""

    url: str = field(repr=False)
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    detail: str
    retry_after: float | None = None
    status: int | None = None
    pause_for: float | None = None
    """The destination's bucket is empty (Discord): wait this long before its next send."""


def now_utc_iso(moment: datetime) -> str:
    return iso_utc(moment)


def json_body(payload: object) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are sent (and signed)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` set in its query, replacing same-named ones, keeping the rest
    (and their encoding) in order."""
    parts = urlsplit(url)
    kept = [
        piece for piece in parts.query.split("&") if piece and piece.partition("=")[0] not in params
    ]
    added = [f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in params.items()]
    return urlunsplit(parts._replace(query="&".join([*kept, *added])))


def bounded_key(text: str, size: int) -> str:
    """``text`` if it fits in ``size`` characters, else a prefix plus a hash of the whole, so
    two long keys stay distinct and the same text always gives the same key."""
    if len(text) <= size:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: size - len(digest) - 1]}-{digest}"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header value by case-insensitive name (``httpx.Headers`` or a plain dict)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def as_seconds(value: object) -> float | None:
    """A delay a service put into a JSON body (a number of seconds), if it is a sane one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def latest(*hints: float | None) -> float | None:
    """The longest of the delays given, None when there is none."""
    known = [hint for hint in hints if hint is not None]
    return max(known) if known else None


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def classify_status(
    status: int, headers: Mapping[str, str], *, now: datetime | None = None
) -> Verdict:
    """The shared reading of a status: 2xx delivered; 408, 429 and 5xx retried (after
    ``Retry-After`` when given); redirects and every other answer dead."""
    text = _status_text(status)
    if 200 <= status < 300:
        return Verdict(Outcome.DELIVERED, text, status=status)
    if status in _RETRIED_STATUSES or 500 <= status < 600:
        retry_after = parse_retry_after(header(headers, "retry-after"), now=now)
        return Verdict(Outcome.RETRY, text, retry_after=retry_after, status=status)
    if 300 <= status < 400:
        return Verdict(Outcome.DEAD, f"{text}: redirects are not followed", status=status)
    return Verdict(Outcome.DEAD, text, status=status)


async def _read_capped(response: httpx.Response, size: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        total += len(chunk)
        if total >= size:
            break
    return b"".join(chunks)[:size]


def fit_body(build: Callable[[int | None], object], *, budget: int) -> bytes:
    """The JSON of ``build(cap)`` for the loosest text cap whose body fits in ``budget`` bytes
    (``None``: no cap beyond each field's own limit)."""
    body = b""
    for cap in (None, 1000, 300, 100, 40):
        body = json_body(build(cap))
        if len(body) <= budget:
            return body
    return body


class Notifier(ABC):
    """One configured destination: renders events for its kind and delivers them."""

    kind: ClassVar[str]
    default_rate_limit: ClassVar[float]

    def __init__(self, config: DestinationConfig) -> None:
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs a {self.kind} destination")
        self._config = config
        self._template = (
            MessageTemplate(config.template, escape=self.value_escape())
            if config.template is not None
            else None
        )
        self.redact = Redactor(config.secret_values())
        """Hides this destination's secrets in ``text`` (say, an error a service sent back)."""

    @classmethod
    def value_escape(cls) -> Escape | None:
        """Applied to every ``{{ ... }}`` value of a template; None: the kind's text is plain."""
        return None

    @property
    def name(self) -> str:
        return self._config.name

    @property
    def config(self) -> DestinationConfig:
        return self._config

    @property
    def rate_limit(self) -> float:
        """Messages per second: the configured value, else the kind's default."""
        return self._config.rate_limit or self.default_rate_limit

    def matches(self, event: Event) -> bool:
        return matches(self._config, event)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def message_text(self, event: Event, *, default: str) -> str:
        """The template's text for ``event``; ``default`` without a template, or when the
        template fails on this event (logged; the message still goes out)."""
        if self._template is None:
            return default
        try:
            text = self._template.render(event)
        except TemplateError as error:
            logger.warning(
                "template failed, sending the default text: %s",
                error,
                extra={"destination": self.name, "event_id": event.id},
            )
            return default
        return text or default

    @abstractmethod
    def render(self, event: Event, *, now: datetime) -> OutgoingRequest:
        """The request for ``event``; pure. ``now`` is this attempt's time."""

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
        """What an answer means; kinds override where their service differs."""
        return classify_status(status, headers)

    async def deliver(self, http: httpx.AsyncClient, event: Event, *, now: datetime) -> Verdict:
        """Render, POST (no redirects, ``config.timeout``), classify. Never raises for HTTP or
        transport problems: those are a ``RETRY`` verdict."""
        return await self.send(http, self.render(event, now=now))

    async def send(self, http: httpx.AsyncClient, request: OutgoingRequest) -> Verdict:
        try:
            async with asyncio.timeout(self._config.timeout * TOTAL_TIMEOUT_FACTOR):
                async with http.stream(
                    request.method,
                    request.url,
                    content=request.body,
                    headers=dict(request.headers),
                    timeout=self._config.timeout,
                    follow_redirects=False,
                ) as response:
                    body = await _read_capped(response, MAX_RESPONSE_BYTES)
        except (httpx.TimeoutException, TimeoutError):
            return Verdict(Outcome.RETRY, "timeout")
        except httpx.InvalidURL:
            return Verdict(Outcome.DEAD, "invalid URL")
        except httpx.HTTPError as error:
            return Verdict(Outcome.RETRY, f"network error: {type(error).__name__}")
        return self.classify(response.status_code, response.headers, body)

    async def periodic(self, http: httpx.AsyncClient, now: datetime) -> Verdict | None:
        """Called by the dispatcher every ``resend_interval``; None when nothing was sent."""
        del http, now
        return None

    def service_message(self, text: str, *, size: int = 200) -> str:
        """A service's own error text, made safe for a verdict: one line, short, redacted."""
        line = " ".join(self.redact(text).split())
        return line if len(line) <= size else line[: size - 1] + "…"
