"""What a message says: the facts of an event, the human text, and user templates.

A destination's ``template`` is sandboxed Jinja2 (``ImmutableSandboxedEnvironment``: no access
to ``_`` attributes, no mutation) with strict undefined variables and no HTML autoescaping.
It sees one variable, ``event``, whose fields are plain strings (``event.details`` a mapping).
``check_template`` compiles a template and renders it against a sample of every event type,
so a syntax error or an unknown variable is a configuration error naming the template line.

Each kind escapes what its format would otherwise interpret (Slack ``& < >``, Discord markdown,
Google Chat card HTML); in a template only the ``{{ ... }}`` values are escaped, never the
template's own text, so a template may use the format's markup on purpose. Limits are counted in
UTF-16 code units, the strictest count any of the services uses, so a cut never overshoots.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import TracebackType
from typing import Any

from jinja2 import (
    StrictUndefined,
    Template,
    TemplateAssertionError,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
)
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from monitor.model import Event, EventType, make_event

__all__ = [
    "DETAIL_KEYS",
    "Escape",
    "MessageTemplate",
    "TemplateError",
    "check_template",
    "escape_discord",
    "escape_html",
    "escape_slack",
    "event_facts",
    "event_fields",
    "event_title",
    "iso_utc",
    "limit",
    "sample_event",
    "utf16_len",
]

Escape = Callable[[str], str]

# Every key detect, hygiene and reachability put into Event.details; templates may use any.
DETAIL_KEYS = (
    "thumbprint",
    "old_thumbprint",
    "new_thumbprint",
    "state",
    "old_state",
    "new_state",
    "current_since",
    "revoked_at",
    "last_kids",
    "keys",
    "old_cert_sha1",
    "new_cert_sha1",
    "fingerprint",
    "cert_sha1",
    # monitor.hygiene and monitor.reachability
    "not_after",
    "expires_in",
    "window",
    "current_until",
    "age",
    "limit",
    "reason",
    "error",
    "failures",
    "down_since",
    "downtime",
)
MAX_TEMPLATE_OUTPUT = 64_000
ELLIPSIS = "…"
_TEMPLATE_FILE = "<template>"
_MAPPING_READERS = frozenset({"get", "items", "keys", "values"})  # methods a template may call

_TITLES: Mapping[EventType, str] = {
    EventType.KEY_ROTATED: "Signing key rotated",
    EventType.KEY_REVOKED: "Signing key revoked",
    EventType.KEY_ADDED: "Signing key added",
    EventType.KEY_REMOVED: "Signing key removed",
    EventType.KEY_STATE_CHANGED: "Signing key state changed",
    EventType.KEY_CERTIFICATE_CHANGED: "Signing key certificate changed",
    EventType.TENANT_NO_CURRENT_KEY: "No current signing key",
    EventType.TENANT_NO_NEXT_KEY: "No next signing key",
    EventType.KEY_THUMBPRINT_MISMATCH: "Signing key thumbprint does not match its certificate",
    EventType.TENANT_CURRENT_KEY_RESTORED: "Current signing key restored",
    EventType.JWKS_MISMATCH: "Published signing keys disagree with the Management API",
    EventType.JWKS_CONSISTENT: "Published signing keys agree again",
    EventType.MIRROR_STALE: "JWKS mirror is stale",
    EventType.MIRROR_SYNCED: "JWKS mirror is in sync",
    EventType.KEY_EXPIRING: "Signing key certificate expiring",
    EventType.KEY_PREVIOUS_UNREVOKED: "Previous signing key not revoked",
    EventType.TENANT_ROTATION_OVERDUE: "Signing key rotation overdue",
    EventType.TENANT_UNREACHABLE: "Tenant unreachable",
    EventType.TENANT_RECOVERED: "Tenant reachable again",
}
_FIRST_DETAILS = ("thumbprint", "old_thumbprint", "new_thumbprint")


# --- text helpers ---------------------------------------------------------------------------


def iso_utc(moment: datetime) -> str:
    """``2026-05-01T12:00:00.000Z``: RFC 3339 in UTC with milliseconds."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utf16_len(text: str) -> int:
    return len(text) + sum(1 for character in text if ord(character) > 0xFFFF)


def limit(text: str, size: int) -> str:
    """``text`` cut to at most ``size`` UTF-16 code units, ending in ``…`` when cut."""
    if len(text) <= size // 2 or utf16_len(text) <= size:
        return text
    kept: list[str] = []
    used = 0
    for character in text[:size]:
        width = 2 if ord(character) > 0xFFFF else 1
        if used + width > size - 1:
            break
        kept.append(character)
        used += width
    return "".join(kept) + ELLIPSIS


def limit_escaped(text: str, size: int) -> str:
    """Like ``limit`` for text with ``&...;`` entities: never cuts inside one."""
    cut = limit(text, size)
    if cut == text:
        return text
    head = cut.removesuffix(ELLIPSIS)
    ampersand = head.rfind("&")
    if ampersand >= 0 and ";" not in head[ampersand:]:
        head = head[:ampersand]
    return head + ELLIPSIS


def escape_slack(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``) as the entities Slack decodes."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_DISCORD_MARKDOWN = str.maketrans({character: "\\" + character for character in "\\*_~`|"})


def escape_discord(text: str) -> str:
    """Discord markdown characters backslash-escaped (mentions are defused separately)."""
    return text.translate(_DISCORD_MARKDOWN)


def escape_html(text: str) -> str:
    """For Google Chat card text, which reads a small HTML subset."""
    return html.escape(text, quote=False)


def event_title(event: Event) -> str:
    return f"{_TITLES.get(event.type, event.type.value)} on {event.tenant}"


def event_facts(event: Event) -> list[tuple[str, str]]:
    """The labelled facts every message carries (the event id goes into each kind's footer)."""
    facts = [("Tenant", event.tenant), ("Event", event.type.value)]
    facts.append(("Severity", event.severity.label))
    kids = (("Kid", event.kid), ("Old kid", event.old_kid), ("New kid", event.new_kid))
    facts += [(label, kid) for label, kid in kids if kid]
    ordered = [key for key in _FIRST_DETAILS if key in event.details]
    ordered += sorted(key for key in event.details if key not in _FIRST_DETAILS)
    facts += [(key.replace("_", " ").capitalize(), event.details[key]) for key in ordered]
    facts.append(("Detected", iso_utc(event.detected_at)))
    return facts


# --- template variables -----------------------------------------------------------------------


class TemplateFields(dict[str, Any]):
    """A mapping a template reads with dots. ``path`` names it in errors; a lenient one
    answers "" for a missing key (at run time, a detail one event type lacks)."""

    __slots__ = ("_item_names", "_lenient", "_path")

    def __init__(
        self,
        path: str,
        values: Mapping[str, Any],
        *,
        lenient: bool = False,
        names: Iterable[str] = (),
    ) -> None:
        super().__init__(values)
        self._path = path
        self._lenient = lenient
        # Read as items even where dict has a method of the name ("keys"); "" when lenient.
        self._item_names = frozenset(values) | frozenset(names if lenient else ())

    def __missing__(self, key: str) -> str:
        if self._lenient:
            return ""
        raise KeyError(key)

    def reads_as_item(self, name: str) -> bool:
        return name in self._item_names

    def path_of(self, name: str) -> str:
        return f"{self._path}.{name}"


def event_fields(event: Event, *, lenient: bool = True) -> TemplateFields:
    """The ``event`` variable of a template."""
    details = TemplateFields(
        "event.details", dict(event.details), lenient=lenient, names=DETAIL_KEYS
    )
    values: dict[str, Any] = {
        "id": event.id,
        "tenant": event.tenant,
        "type": event.type.value,
        "severity": event.severity.label,
        "detected_at": iso_utc(event.detected_at),
        "kid": event.kid or "",
        "old_kid": event.old_kid or "",
        "new_kid": event.new_kid or "",
        "details": details,
        "summary": event.summary,
    }
    return TemplateFields("event", values)


class _StrictUndefined(StrictUndefined):
    """Names the unknown variable as the template wrote it: ``event.detials``."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        owner, name = self._undefined_obj, self._undefined_name
        if not isinstance(name, str):
            return super()._undefined_message
        if owner is missing:
            return f"unknown variable {name}"
        if isinstance(owner, TemplateFields):
            return f"unknown variable {owner.path_of(name)}"
        return f"a {type(owner).__name__} value has no attribute {name!r}"


class _Sandbox(ImmutableSandboxedEnvironment):
    """Reads ``event.details.keys`` as the detail, not as ``dict.keys``, and refuses an unsafe
    attribute at once (Jinja2 would return an undefined value and fail later, on whatever the
    template did next with it, naming the wrong thing)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if not isinstance(obj, TemplateFields) or attribute.startswith("_"):
            return super().getattr(obj, attribute)
        if obj.reads_as_item(attribute):
            return obj[attribute]
        if attribute in _MAPPING_READERS:
            return super().getattr(obj, attribute)
        return self.undefined(obj=obj, name=attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        where = obj.path_of(attribute) if isinstance(obj, TemplateFields) else None
        what = where or f"attribute {attribute!r} of a {type(obj).__name__} value"
        raise SecurityError(f"refused by the sandbox: {what}")


@lru_cache(maxsize=8)
def _environment(escape: Escape | None) -> ImmutableSandboxedEnvironment:
    def finalize(value: object) -> str:
        text = "" if value is None else str(value)
        return escape(text) if escape is not None else text

    return _Sandbox(undefined=_StrictUndefined, autoescape=False, finalize=finalize)


class TemplateError(ValueError):
    """A template that does not compile or render; the message names the template line."""


def _template_line(traceback: TracebackType | None) -> int | None:
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == _TEMPLATE_FILE:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _describe(error: Exception) -> str:
    if isinstance(error, TemplateAssertionError):
        return f"template line {error.lineno}: {error.message}"
    if isinstance(error, TemplateSyntaxError):
        return f"template line {error.lineno}: syntax error: {error.message}"
    line = _template_line(error.__traceback__)
    where = f"template line {line}" if line is not None else "template"
    if isinstance(error, UndefinedError | SecurityError):
        return f"{where}: {error}"
    return f"{where}: {type(error).__name__}: {error}"


class MessageTemplate:
    """A compiled template; ``escape`` is applied to every ``{{ ... }}`` value."""

    def __init__(self, source: str, *, escape: Escape | None = None) -> None:
        try:
            self._template: Template = _environment(escape).from_string(source)
        except TemplateSyntaxError as error:
            raise TemplateError(_describe(error)) from None

    def render(self, event: Event, *, lenient: bool = True) -> str:
        """The text for ``event``, stripped and capped; raises ``TemplateError``."""
        try:
            text = self._template.render(event=event_fields(event, lenient=lenient))
        except Exception as error:  # a user template can fail in any way; report, never crash
            raise TemplateError(_describe(error)) from None
        return limit(text.strip(), MAX_TEMPLATE_OUTPUT)


def check_template(source: str) -> None:
    """Compile ``source`` and render it for a sample of every event type, with strict details;
    raises ``TemplateError`` (a ``ValueError``) naming the template line."""
    template = MessageTemplate(source)
    for event in _check_samples():
        template.render(event, lenient=False)


@lru_cache(maxsize=1)
def _check_samples() -> tuple[Event, ...]:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    details = {key: f"sample-{key.replace('_', '-')}" for key in DETAIL_KEYS}
    return tuple(
        make_event(
            "example",
            event_type,
            moment,
            ["sample"],
            kid="sample-kid",
            old_kid="sample-old-kid",
            new_kid="sample-new-kid",
            details=details,
        )
        for event_type in EventType
    )


def sample_event(*, tenant: str, detected_at: datetime) -> Event:
    """A realistic ``key.rotated`` event for ``keywatch test-notify`` and demos; its id is new
    for every ``detected_at``, so receivers do not drop a second test as a duplicate."""
    return make_event(
        tenant,
        EventType.KEY_ROTATED,
        detected_at,
        ["keywatch-test-notify", detected_at.isoformat()],
        old_kid="kw-test-old-9Zx2QpL7",
        new_kid="kw-test-new-4Hc8RtV1",
        details={
            "old_thumbprint": "6F2C0B1E8A9D4C7B3E5F1A2D8C6B4E9F0A1B2C3D",
            "new_thumbprint": "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678",
            "current_since": iso_utc(detected_at - timedelta(seconds=30)),
        },
    )
