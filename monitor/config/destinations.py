"""Where notifications go: one model per destination kind, told apart by ``kind``.

``DestinationConfig`` is the union of the kinds (a pydantic discriminated union on ``kind``), so
each kind declares exactly the options it understands; an option of another kind is reported
as ``only for kind ...`` (``unknown_key_message``). ``url``, ``urls``, ``secrets`` and
``routing_key`` are secrets: their reprs show ``***``, and messages never echo them.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictStr,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.config.checks import destination_problems, given_fields, raise_found, run_by_caller
from monitor.config.problems import yaml_spelling
from monitor.config.values import (
    CaFile,
    DestinationKind,
    Duration,
    ProxyUrl,
    Secret,
    TenantName,
    lowercase,
    none_as,
)
from monitor.model import EventType
from monitor.templates import check_template

__all__ = [
    "DEFAULT_PAGERDUTY_URL",
    "AlertmanagerDestination",
    "DestinationConfig",
    "DestinationKind",
    "DiscordDestination",
    "GoogleChatDestination",
    "PagerDutyDestination",
    "SlackDestination",
    "TeamsDestination",
    "WebhookDestination",
    "destination_url_problem",
    "parse_destination",
    "unknown_key_message",
    "webhook_key",
]

SeverityName = Literal["info", "warning", "critical"]

DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_MAX_AGE = 7 * 86400.0
DEFAULT_RESOLVE_AFTER = 3600.0
DEFAULT_DESTINATION_TIMEOUT = 10.0
WEBHOOK_SECRET_PREFIX = "whsec_"
# Options that only one kind understands: setting them elsewhere is a mistake worth naming.
_KIND_OPTIONS = {
    "urls": "alertmanager",
    "resolve_after": "alertmanager",
    "secrets": "webhook",
    "cloudevents": "webhook",
    "routing_key": "pagerduty",
}
# Required options a YAML ``null`` leaves unset (reported as missing, not as a wrong type).
_NULL_IS_MISSING = ("url", "routing_key")
_RETIRED_TEAMS_DOMAIN = "webhook.office.com"
_MIN_WEBHOOK_KEY_BYTES, _MAX_WEBHOOK_KEY_BYTES = 24, 64


def unknown_key_message(kind: str, key: str) -> str | None:
    """What to say instead of "unknown key" when ``key`` is an option of another kind."""
    if kind == "alertmanager" and key == "url":
        return "alertmanager takes urls (a list of base URLs), not url"
    owner = _KIND_OPTIONS.get(key)
    return f"only for kind {owner}" if owner is not None and owner != kind else None


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_destination_url(value: SecretStr) -> SecretStr:
    """An absolute http(s) URL with a host. Messages never echo it: it is a secret."""
    text = value.get_secret_value()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise ValueError("not a valid URL (bad host or port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an https:// URL with a host")
    if any(character.isspace() for character in text):
        raise ValueError("must not contain spaces")
    if parts.fragment or text.endswith("#"):
        raise ValueError("must not contain a fragment (#...)")
    return value


def _check_alertmanager_url(value: SecretStr) -> SecretStr:
    """A base URL (``http://am:9093`` or a path prefix); returned without a trailing slash."""
    _check_destination_url(value)
    text = value.get_secret_value()
    if urlsplit(text).query or text.endswith("?"):
        raise ValueError("must be a base URL without a query (keywatch adds /api/v2/alerts)")
    return SecretStr(text.rstrip("/"))


def destination_url_problem(url: str, kind: str) -> str | None:
    """What is wrong with ``url`` for a destination of ``kind``, beyond its shape."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if kind == "teams" and (
        host == _RETIRED_TEAMS_DOMAIN or host.endswith("." + _RETIRED_TEAMS_DOMAIN)
    ):
        return "retired Office 365 connector URL; create a Workflows webhook"
    if parts.scheme == "http" and kind != "alertmanager" and not _is_loopback_host(host):
        return "must be https:// (http:// is allowed only for 127.0.0.1, ::1 and localhost)"
    return None


def _check_webhook_secret(value: SecretStr) -> SecretStr:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 to 64 random bytes."""
    text = value.get_secret_value()
    if not text.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("must start with whsec_ (whsec_ + base64 of 24 to 64 random bytes)")
    try:
        key = base64.b64decode(text.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("the part after whsec_ is not valid base64") from None
    if not _MIN_WEBHOOK_KEY_BYTES <= len(key) <= _MAX_WEBHOOK_KEY_BYTES:
        raise ValueError(f"must decode to 24 to 64 bytes, got {len(key)}")
    return value


def webhook_key(secret: SecretStr) -> bytes:
    """The HMAC key of a validated ``whsec_`` secret."""
    return base64.b64decode(secret.get_secret_value().removeprefix(WEBHOOK_SECRET_PREFIX))


_EVENT_TYPES = tuple(event_type.value for event_type in EventType)


def _check_event_type(value: str) -> str:
    if value in _EVENT_TYPES:
        return value
    close = difflib.get_close_matches(value, _EVENT_TYPES, n=1)
    hint = f"did you mean {close[0]!r}?" if close else "expected one of " + ", ".join(_EVENT_TYPES)
    raise ValueError(f"unknown event type {value!r} ({hint})")


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {yaml_spelling(value)}")
    return value


def _check_rate_limit(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number of messages per second, got {value!r}")
    return value


def _check_template(source: str) -> str:
    if not source.strip():
        raise ValueError("must not be empty")
    check_template(source)
    return source


DestinationUrl = Annotated[SecretStr, AfterValidator(_check_destination_url)]
AlertmanagerUrl = Annotated[SecretStr, AfterValidator(_check_alertmanager_url)]
WebhookSecret = Annotated[SecretStr, AfterValidator(_check_webhook_secret)]
EventTypeName = Annotated[StrictStr, AfterValidator(_check_event_type)]
RateLimit = Annotated[float, BeforeValidator(_not_a_boolean), AfterValidator(_check_rate_limit)]
Template = Annotated[StrictStr, AfterValidator(_check_template)]
MinSeverity = Annotated[SeverityName, BeforeValidator(lowercase)]


def _url_secrets(url: str) -> list[str]:
    """A destination URL is a secret whole, and so are the tokens inside it (query values,
    long path segments) that a service may echo back on their own."""
    parts = urlsplit(url)
    found = [url, parts.netloc + parts.path]
    found += [segment for segment in parts.path.split("/") if len(segment) >= 16]
    query_values = [piece.partition("=")[2] for piece in parts.query.split("&")]
    found += [value for value in query_values if len(value) >= 8]
    if parts.password:
        found.append(parts.password)
    return found


class _Destination(BaseModel):
    """What every kind has: a name, which events it wants, pacing and an optional template."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: TenantName
    """Unique among destinations; the ``destination`` metrics label."""
    kind: DestinationKind
    """Each kind's model narrows it to its own name: the union's discriminator."""
    events: Annotated[tuple[EventTypeName, ...], none_as(())] = ()
    """Event types to send; empty: every type at or above ``min_severity``."""
    tenants: Annotated[tuple[TenantName, ...], none_as(())] = ()
    """Tenant names to send for; empty: all."""
    min_severity: MinSeverity = "warning"
    rate_limit: RateLimit | None = None
    """Messages per second; None: the kind's default."""
    max_age: Duration = DEFAULT_MAX_AGE
    """Seconds a delivery keeps being retried before it is dead."""
    timeout: Duration = DEFAULT_DESTINATION_TIMEOUT
    """Seconds one attempt may take."""
    template: Template | None = None
    """Sandboxed Jinja2 text replacing the message's human text; checked at load."""
    proxy: ProxyUrl | None = None
    """This destination's proxy (``direct``: none), instead of the global ``proxy``."""
    ca_file: CaFile | None = None
    """This destination's private CA certificates, instead of the global ``ca_file``."""

    @model_validator(mode="before")
    @classmethod
    def _null_is_missing(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        return {
            key: value
            for key, value in data.items()
            if value is not None or key not in _NULL_IS_MISSING
        }

    @field_validator("url", check_fields=False)
    @classmethod
    def _check_url_for_kind(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            kind = cls.model_fields["kind"].default
            problem = destination_url_problem(url.get_secret_value(), kind)
            if problem:
                raise ValueError(problem)
        return url

    @model_validator(mode="after")
    def _check_options(self, info: ValidationInfo) -> _Destination:
        if not run_by_caller(info):
            raise_found(destination_problems({**given_fields(self), "kind": self.kind}))
        return self

    @property
    def target_url(self) -> str:
        """The URL to POST to (pagerduty's default included); "" for alertmanager."""
        return ""

    def secret_values(self) -> list[str]:
        """Every secret string of this destination, for log redaction: whole URLs and the
        tokens inside them (query values, long path segments), secrets, the routing key."""
        return []


class _UrlDestination(_Destination):
    """A kind that posts to one webhook URL."""

    url: DestinationUrl

    @property
    def target_url(self) -> str:
        return self.url.get_secret_value()

    def secret_values(self) -> list[str]:
        return _url_secrets(self.url.get_secret_value())


class SlackDestination(_UrlDestination):
    kind: Literal["slack"] = "slack"


class TeamsDestination(_UrlDestination):
    kind: Literal["teams"] = "teams"


class DiscordDestination(_UrlDestination):
    kind: Literal["discord"] = "discord"


class GoogleChatDestination(_UrlDestination):
    kind: Literal["googlechat"] = "googlechat"


class WebhookDestination(_UrlDestination):
    kind: Literal["webhook"] = "webhook"
    secrets: Annotated[tuple[WebhookSecret, ...], none_as(())] = ()
    """Standard Webhooks signing secrets; several while rotating (signs with each)."""
    cloudevents: bool = False
    """Send a CloudEvents 1.0 structured envelope."""

    def secret_values(self) -> list[str]:
        return [*super().secret_values(), *(s.get_secret_value() for s in self.secrets)]


class AlertmanagerDestination(_Destination):
    kind: Literal["alertmanager"] = "alertmanager"
    urls: Annotated[tuple[AlertmanagerUrl, ...], none_as(())] = ()
    """Base URLs; keywatch POSTs ``{url}/api/v2/alerts`` to each (at least one)."""
    resolve_after: Duration = DEFAULT_RESOLVE_AFTER
    """Seconds an event's alert stays active unless its condition clears."""

    def secret_values(self) -> list[str]:
        return [secret for url in self.urls for secret in _url_secrets(url.get_secret_value())]


class PagerDutyDestination(_Destination):
    kind: Literal["pagerduty"] = "pagerduty"
    routing_key: Secret
    """The Events API v2 integration key."""
    url: DestinationUrl | None = None
    """The Events API endpoint; None: ``DEFAULT_PAGERDUTY_URL``."""

    @property
    def target_url(self) -> str:
        return DEFAULT_PAGERDUTY_URL if self.url is None else self.url.get_secret_value()

    def secret_values(self) -> list[str]:
        urls = [] if self.url is None else _url_secrets(self.url.get_secret_value())
        return [*urls, self.routing_key.get_secret_value()]


DestinationConfig = Annotated[
    SlackDestination
    | TeamsDestination
    | DiscordDestination
    | GoogleChatDestination
    | WebhookDestination
    | AlertmanagerDestination
    | PagerDutyDestination,
    Field(discriminator="kind"),
]
"""One configured destination, of whichever kind its ``kind`` names."""

_DESTINATION = TypeAdapter[DestinationConfig](DestinationConfig)


def parse_destination(data: Mapping[str, Any]) -> DestinationConfig:
    """The destination ``data`` describes (as in YAML: ``{"name": ..., "kind": ..., ...}``);
    ``pydantic.ValidationError`` when it is not one."""
    destination: DestinationConfig = _DESTINATION.validate_python(data)
    return destination
