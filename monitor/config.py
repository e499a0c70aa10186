"""YAML configuration -> frozen, validated ``Settings``.

Loading happens in three steps, each reporting every problem it finds with the key path and
the YAML line (``tenants[1].domain: ... (line 14)``):

1. ``yaml.compose`` builds a node tree (syntax errors stop here, with their line).
2. ``_YamlReader`` turns nodes into plain values, remembering each path's line, rejecting
   duplicate keys, and expanding ``${VAR}`` / ``${VAR:-default}`` inside each string scalar
   (after parsing, so a variable's value can never inject YAML).
3. pydantic validates the plain values; its errors are mapped back to paths and lines.

Everything is reported together as one ``ConfigError``. Values of secret keys are never echoed.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import math
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from monitor.errors import ConfigError
from monitor.model import EventType
from monitor.redact import redact_url
from monitor.templates import check_template

__all__ = [
    "Defaults",
    "DestinationConfig",
    "DestinationKind",
    "LeaseConfig",
    "Settings",
    "TenantConfig",
    "is_secret_key",
    "load_config",
    "parse_config",
    "parse_duration",
]

KeyPath = tuple[str | int, ...]

DEFAULT_LISTEN = "0.0.0.0:9464"
DEFAULT_INTERVAL = 60.0
DEFAULT_JITTER = 0.1
DEFAULT_TIMEOUT = 10.0
MAX_JITTER = 0.5
DEFAULT_CONFIRM_POLLS = 2
MAX_CONFIRM_POLLS = 10
DEFAULT_LEASE_TTL = 15.0
MIN_LEASE_TTL = 1.0
MIN_INTERVAL = 0.1
"""Seconds; the least time between two polls of any tenant."""
MIN_AUTH0_INTERVAL = 1.0
"""Seconds; the least for a tenant given by ``domain``: every poll spends the tenant's
Management API rate limit, which every other tool using the tenant shares."""
MAX_CONFIG_BYTES = 1024 * 1024
MAX_YAML_DEPTH = 50
"""Levels of nested lists and mappings; deeper is refused (and never recursed into)."""
MIN_ALIAS_BUDGET = 10_000
"""Values aliases may add beyond the document's own (or as many as it has, if more)."""

# Keys whose values are never echoed, wherever they appear (``destinations`` adds its own).
_SECRET_KEYS = frozenset({"client_secret", "token", "password"})
_SECRET_DESTINATION_KEYS = frozenset({"secret", "secrets", "url", "urls", "routing_key"})
# A custom pydantic error type: ``detail`` is the message, ``field`` (optional) a sub-key.
_KEYWATCH_ERROR = "keywatch"


def is_secret_key(path: Sequence[str | int]) -> bool:
    """Whether the value at ``path`` (e.g. ``("tenants", 0, "token")``) must never be shown."""
    keys = [part for part in path if isinstance(part, str)]
    if not keys:
        return False
    if keys[-1] in _SECRET_KEYS:
        return True
    return keys[0] == "destinations" and keys[-1] in _SECRET_DESTINATION_KEYS


# --- durations and fractions -------------------------------------------------------------


def yaml_spelling(value: object) -> str:
    """``value`` as the YAML that gave it: ``true``, ``null``, ``'text'``, ``5``, or what kind
    of collection it is (never a Python repr such as ``True`` or ``{'a': 1}``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_duration(value: object) -> float:
    """Seconds in ``value``: ``"500ms"``, ``"60s"``, ``"5m"``, ``"1h30m"``, ``"2d"``, or a bare
    number of seconds (``60``, ``0.5``, ``"60"``). Raises ``ValueError`` unless it is > 0."""
    seconds = _duration_seconds(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"must be a positive duration, got {yaml_spelling(value)}")
    return seconds


def _duration_seconds(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        if _DURATION.fullmatch(text):
            return sum(
                float(number) * _DURATION_UNITS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
    raise ValueError(f"not a duration: {yaml_spelling(value)}")


def _parse_fraction(value: object) -> float:
    """A jitter fraction from ``0.1`` or ``"10%"``, between 0 and ``MAX_JITTER``."""
    fraction: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith("%") and _NUMBER.fullmatch(text[:-1].strip()):
            fraction = float(text[:-1]) / 100
        elif _NUMBER.fullmatch(text):
            fraction = float(text)
    if fraction is None:
        raise ValueError(f"not a fraction or percentage: {yaml_spelling(value)}")
    if not 0 <= fraction <= MAX_JITTER:
        shown = yaml_spelling(value)
        raise ValueError(f"must be between 0 and {MAX_JITTER} (0% to 50%), got {shown}")
    return fraction


# --- field validators ----------------------------------------------------------------------

_TENANT_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::\d{{1,5}})?")
_LISTEN_HOST = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\]")


def _check_tenant_name(value: str) -> str:
    if not _TENANT_NAME.fullmatch(value):
        raise ValueError(
            f"must be letters, digits, '_', '.' or '-' (it is the metrics label), got {value!r}"
        )
    return value


def _check_domain(value: str) -> str:
    if "://" in value:
        raise ValueError(
            f"must be a host name without a scheme (use base_url for a full URL), got {value!r}"
        )
    if "/" in value:
        raise ValueError(f"must be a host name without a path (use base_url), got {value!r}")
    if not _DOMAIN.fullmatch(value):
        raise ValueError(f"not a valid host name, got {value!r}")
    return value


def _check_base_url(value: str) -> str:
    """``http(s)://host[:port][/path]``; returned without a trailing slash. Never echoed."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials (use client_secret or token)")
    if parts.query or parts.fragment or value.endswith(("?", "#")):
        raise ValueError("must not contain a query or fragment")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value.rstrip("/")


def _check_not_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _check_secret_not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


def _split_listen(value: str) -> tuple[str, int]:
    host, colon, port_text = value.rpartition(":")
    if not colon or not _LISTEN_HOST.fullmatch(host) or not port_text.isdigit():
        raise ValueError(f"expected host:port (e.g. 0.0.0.0:9464 or [::1]:9464), got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be between 0 and 65535, got {value!r}")
    return host.strip("[]"), port


def _check_listen(value: str) -> str:
    _split_listen(value)
    return value


def _check_state(value: str) -> str:
    """A state URL; never echoed because a PostgreSQL URL may carry a password."""
    expected = "expected sqlite:///PATH, sqlite:///:memory: or postgresql://..."
    scheme, separator, rest = value.partition("://")
    if not separator:
        raise ValueError(f"not a URL: {expected}")
    if scheme in ("postgresql", "postgres"):
        return value
    if scheme != "sqlite":
        raise ValueError(f"unsupported scheme {scheme!r}: {expected}")
    if not rest.startswith("/") or len(rest) < 2:
        raise ValueError(f"sqlite URL without a path: {expected}")
    return value


def _check_lease_ttl(seconds: float) -> float:
    if seconds < MIN_LEASE_TTL:
        raise ValueError(f"must be at least {MIN_LEASE_TTL:g}s, got {seconds:g}s")
    return seconds


def _check_interval(seconds: float) -> float:
    if seconds < MIN_INTERVAL:
        raise ValueError(f"must be at least {_seconds(MIN_INTERVAL)}, got {_seconds(seconds)}")
    return seconds


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _none_as(empty: object) -> BeforeValidator:
    return BeforeValidator(lambda value: empty if value is None else value)


def _check_unique_kids(kids: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for kid in kids:
        if kid in seen:
            raise ValueError(f"duplicate kid {kid!r}")
        seen.add(kid)
    return kids


Duration = Annotated[float, BeforeValidator(parse_duration)]
Fraction = Annotated[float, BeforeValidator(_parse_fraction)]
NonEmptyStr = Annotated[StrictStr, AfterValidator(_check_not_empty)]
Secret = Annotated[SecretStr, AfterValidator(_check_secret_not_empty)]
TenantName = Annotated[StrictStr, AfterValidator(_check_tenant_name)]
Domain = Annotated[StrictStr, AfterValidator(_check_domain)]
BaseUrl = Annotated[StrictStr, AfterValidator(_check_base_url)]
Kids = Annotated[tuple[NonEmptyStr, ...], _none_as(()), AfterValidator(_check_unique_kids)]
Listen = Annotated[StrictStr, AfterValidator(_check_listen)]
StateUrl = Annotated[StrictStr, AfterValidator(_check_state)]
DataDir = Annotated[StrictStr, AfterValidator(_check_not_empty)]
Interval = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_check_interval)]
LeaseTtl = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_check_lease_ttl)]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(_lowercase)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lowercase)]


def _keywatch_error(detail: str, *, field: str | None = None) -> PydanticCustomError:
    template = "{field}: {detail}" if field else "{detail}"
    return PydanticCustomError(_KEYWATCH_ERROR, template, {"detail": detail, "field": field})


def _revalidated(
    title: str, error: ValidationError | None, extra: list[InitErrorDetails]
) -> ValidationError:
    """One ``ValidationError`` with the errors pydantic found and the ones a wrap check added."""
    details = [_as_init_details(found) for found in error.errors()] if error else []
    return ValidationError.from_exception_data(title, [*details, *extra])


def _as_init_details(found: ErrorDetails) -> InitErrorDetails:
    context = found.get("ctx", {})
    if found["type"] == _KEYWATCH_ERROR:
        return {
            "type": _keywatch_error(context["detail"], field=context.get("field")),
            "loc": found["loc"],
            "input": found["input"],
        }
    details: InitErrorDetails = {
        "type": found["type"],
        "loc": found["loc"],
        "input": found["input"],
    }
    if context:
        details["ctx"] = context
    return details


def _validate_with_checks(
    model: type[BaseModel],
    data: Any,
    handler: ModelWrapValidatorHandler[Any],
    checks: list[InitErrorDetails],
) -> Any:
    """Run pydantic's validation and ``checks`` together, so both kinds are reported at once."""
    try:
        validated = handler(data)
    except ValidationError as error:
        if not checks:
            raise
        raise _revalidated(model.__name__, error, checks) from None
    if checks:
        raise _revalidated(model.__name__, None, checks)
    return validated


# --- models --------------------------------------------------------------------------------


class ConfirmConfig(BaseModel):
    """How long an alarming answer must persist before keywatch believes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    polls: Annotated[StrictInt, Field(ge=1, le=MAX_CONFIRM_POLLS)] = DEFAULT_CONFIRM_POLLS
    """Consecutive polls that must give the same alarming answer (1: believe it at once)."""


class Defaults(BaseModel):
    """Values every tenant inherits unless it sets its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval: Interval = DEFAULT_INTERVAL
    """Seconds between two polls of a tenant."""
    jitter: Fraction = DEFAULT_JITTER
    """Random spread of each interval, as a fraction of it (0..0.5)."""
    timeout: Duration = DEFAULT_TIMEOUT
    """Seconds one HTTP request may take."""
    confirm: Annotated[ConfirmConfig, _none_as({})] = Field(default_factory=ConfirmConfig)


class LeaseConfig(BaseModel):
    """The leader lease of replicas sharing a PostgreSQL store (unused with SQLite)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl: LeaseTtl = DEFAULT_LEASE_TTL
    """Seconds a lease lasts unless renewed; the leader renews it every ttl/3."""


class TenantConfig(BaseModel):
    """One Auth0 tenant to watch; ``interval``, ``timeout``, ``jitter`` and ``confirm`` are
    always resolved."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: TenantName
    domain: Domain | None = None
    base_url: BaseUrl | None = None
    audience: NonEmptyStr | None = None
    client_id: NonEmptyStr | None = None
    client_secret: Secret | None = None
    token: Secret | None = None
    kids: Kids = ()
    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration = DEFAULT_TIMEOUT
    jitter: Fraction = DEFAULT_JITTER
    confirm: Annotated[ConfirmConfig, _none_as({})] = Field(default_factory=ConfirmConfig)

    @model_validator(mode="wrap")
    @classmethod
    def _check_exactly_one(
        cls, data: Any, handler: ModelWrapValidatorHandler[TenantConfig]
    ) -> TenantConfig:
        checks = _tenant_shape_problems(data) if isinstance(data, Mapping) else []
        validated: TenantConfig = _validate_with_checks(cls, data, handler, checks)
        return validated

    @model_validator(mode="after")
    def _check_interval_floor(self) -> TenantConfig:
        if self.domain is None:
            try:
                _check_interval(self.interval)
            except ValueError as error:
                raise _keywatch_error(str(error), field="interval") from None
        elif self.interval < MIN_AUTH0_INTERVAL:
            detail = (
                f"must be at least {_seconds(MIN_AUTH0_INTERVAL)} for an Auth0 domain (each poll "
                "spends the tenant's Management API rate limit, shared with every other tool "
                f"using the tenant), got {_seconds(self.interval)}"
            )
            raise _keywatch_error(detail, field="interval")
        return self

    @property
    def api_base(self) -> str:
        """``https://{domain}`` or ``base_url``, without a trailing slash."""
        return self.base_url if self.base_url is not None else f"https://{self.domain}"

    @property
    def token_url(self) -> str:
        return f"{self.api_base}/oauth/token"

    @property
    def management_audience(self) -> str:
        return self.audience if self.audience is not None else f"{self.api_base}/api/v2/"

    @property
    def jwks_url(self) -> str:
        return f"{self.api_base}/.well-known/jwks.json"


def _tenant_shape_problems(data: Mapping[str, Any]) -> list[InitErrorDetails]:
    """Exactly one of domain/base_url and exactly one way to authenticate."""

    def given(key: str) -> bool:
        return data.get(key) is not None

    problems: list[PydanticCustomError] = []
    if given("domain") and given("base_url"):
        problems.append(_keywatch_error("domain and base_url are both set (set exactly one)"))
    elif not given("domain") and not given("base_url"):
        problems.append(_keywatch_error("missing domain or base_url (set exactly one)"))
    has_id, has_secret, has_token = given("client_id"), given("client_secret"), given("token")
    if has_token and (has_id or has_secret):
        problems.append(
            _keywatch_error("client credentials and token are both set (set exactly one)")
        )
    elif has_id and not has_secret:
        problems.append(_keywatch_error("missing", field="client_secret"))
    elif has_secret and not has_id:
        problems.append(_keywatch_error("missing", field="client_id"))
    elif not (has_id or has_token):
        problems.append(
            _keywatch_error("missing credentials (set client_id and client_secret, or token)")
        )
    return [{"type": problem, "loc": (), "input": dict(data)} for problem in problems]


# --- destinations --------------------------------------------------------------------------

DestinationKind = Literal[
    "slack", "teams", "discord", "googlechat", "webhook", "alertmanager", "pagerduty"
]
SeverityName = Literal["info", "warning", "critical"]

_DESTINATION_KINDS: tuple[str, ...] = get_args(DestinationKind)
DEFAULT_PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
DEFAULT_MAX_AGE = 7 * 86400.0
DEFAULT_RESOLVE_AFTER = 3600.0
DEFAULT_DESTINATION_TIMEOUT = 10.0
WEBHOOK_SECRET_PREFIX = "whsec_"
_KINDS_WITH_URL = ("slack", "teams", "discord", "googlechat", "webhook")
# Options that only one kind understands: setting them elsewhere is a mistake worth reporting.
_KIND_OPTIONS = {
    "urls": "alertmanager",
    "resolve_after": "alertmanager",
    "secrets": "webhook",
    "cloudevents": "webhook",
    "routing_key": "pagerduty",
}
_RETIRED_TEAMS_DOMAIN = "webhook.office.com"
_MIN_WEBHOOK_KEY_BYTES, _MAX_WEBHOOK_KEY_BYTES = 24, 64


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
MinSeverity = Annotated[SeverityName, BeforeValidator(_lowercase)]


class DestinationConfig(BaseModel):
    """Where notifications go: one chat webhook, signed webhook, Alertmanager or PagerDuty.

    ``url``, ``urls``, ``secrets`` and ``routing_key`` are secrets: their reprs show ``***``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: TenantName
    """Unique among destinations; the ``destination`` metrics label."""
    kind: DestinationKind
    url: DestinationUrl | None = None
    """Required for every kind but alertmanager (``urls``) and pagerduty (has a default)."""
    urls: Annotated[tuple[AlertmanagerUrl, ...], _none_as(())] = ()
    """alertmanager: base URLs; keywatch POSTs ``{url}/api/v2/alerts`` to each."""
    events: Annotated[tuple[EventTypeName, ...], _none_as(())] = ()
    """Event types to send; empty: every type at or above ``min_severity``."""
    tenants: Annotated[tuple[TenantName, ...], _none_as(())] = ()
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
    secrets: Annotated[tuple[WebhookSecret, ...], _none_as(())] = ()
    """webhook: Standard Webhooks signing secrets; several while rotating (signs with each)."""
    cloudevents: bool = False
    """webhook: send a CloudEvents 1.0 structured envelope."""
    routing_key: Secret | None = None
    """pagerduty: the Events API v2 integration key (required there)."""
    resolve_after: Duration = DEFAULT_RESOLVE_AFTER
    """alertmanager: seconds an event's alert stays active unless its condition clears."""

    @field_validator("url")
    @classmethod
    def _check_url_for_kind(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        kind = info.data.get("kind")
        if url is not None and isinstance(kind, str):
            problem = destination_url_problem(url.get_secret_value(), kind)
            if problem:
                raise ValueError(problem)
        return url

    @model_validator(mode="wrap")
    @classmethod
    def _check_kind_shape(
        cls, data: Any, handler: ModelWrapValidatorHandler[DestinationConfig]
    ) -> DestinationConfig:
        checks = _destination_shape_problems(data) if isinstance(data, Mapping) else []
        validated: DestinationConfig = _validate_with_checks(cls, data, handler, checks)
        return validated

    @property
    def target_url(self) -> str:
        """The URL to POST to (pagerduty's default included); "" for alertmanager."""
        if self.url is not None:
            return self.url.get_secret_value()
        return DEFAULT_PAGERDUTY_URL if self.kind == "pagerduty" else ""

    def secret_values(self) -> list[str]:
        """Every secret string of this destination, for log redaction: whole URLs and the
        tokens inside them (query values, long path segments), secrets, the routing key."""
        found: list[str] = []
        for url in (self.url, *self.urls):
            if url is not None:
                found.extend(_url_secrets(url.get_secret_value()))
        found.extend(secret.get_secret_value() for secret in self.secrets)
        if self.routing_key is not None:
            found.append(self.routing_key.get_secret_value())
        return found


def _url_secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [url, parts.netloc + parts.path]
    found += [segment for segment in parts.path.split("/") if len(segment) >= 16]
    query_values = [piece.partition("=")[2] for piece in parts.query.split("&")]
    found += [value for value in query_values if len(value) >= 8]
    if parts.password:
        found.append(parts.password)
    return found


def _destination_shape_problems(data: Mapping[str, Any]) -> list[InitErrorDetails]:
    """Kind-specific requirements: which URL key, which options, which credentials."""
    kind = data.get("kind")
    if kind not in _DESTINATION_KINDS:
        return []  # pydantic reports the bad kind

    def given(key: str) -> bool:
        return data.get(key) is not None

    found: list[tuple[PydanticCustomError, KeyPath]] = []
    for option, owner in _KIND_OPTIONS.items():
        if given(option) and kind != owner:
            found.append((_keywatch_error(f"only for kind {owner}"), (option,)))
    if kind in _KINDS_WITH_URL and not given("url"):
        found.append((_keywatch_error("missing", field="url"), ()))
    if kind == "alertmanager":
        if given("url"):
            message = "alertmanager takes urls (a list of base URLs), not url"
            found.append((_keywatch_error(message), ("url",)))
        elif not data.get("urls"):
            found.append((_keywatch_error("missing", field="urls"), ()))
    if kind == "pagerduty" and not given("routing_key"):
        found.append((_keywatch_error("missing", field="routing_key"), ()))
    events = data.get("events")
    if isinstance(events, list | tuple) and events and given("min_severity"):
        message = "set either events or min_severity, not both (an event type has one severity)"
        found.append((_keywatch_error(message), ("min_severity",)))
    return [{"type": problem, "loc": loc, "input": dict(data)} for problem, loc in found]


class Settings(BaseModel):
    """The whole configuration, validated once."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    listen: Listen = DEFAULT_LISTEN
    data_dir: DataDir
    state: StateUrl
    lease: Annotated[LeaseConfig, _none_as({})] = Field(default_factory=LeaseConfig)
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    defaults: Annotated[Defaults, _none_as({})] = Field(default_factory=Defaults)
    tenants: tuple[TenantConfig, ...]
    destinations: Annotated[tuple[DestinationConfig, ...], _none_as(())] = ()

    @field_validator("tenants", mode="before")
    @classmethod
    def _inherit_defaults(cls, tenants: Any, info: ValidationInfo) -> Any:
        """Fill each tenant's unset (or null) interval/timeout/jitter/confirm from ``defaults``."""
        defaults = info.data.get("defaults", Defaults())
        if not isinstance(tenants, list | tuple):
            return tenants
        if not tenants:
            # Checked here: pydantic's min_length would also fire when every tenant is invalid.
            raise ValueError("at least one tenant is required")
        inherited: dict[str, Any] = defaults.model_dump()
        return [
            _with_inherited(tenant, inherited) if isinstance(tenant, Mapping) else tenant
            for tenant in tenants
        ]

    @model_validator(mode="before")
    @classmethod
    def _fill_state_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        """Default ``data_dir`` from the environment (``context={"env": ...}``) and ``state``."""
        if not isinstance(data, Mapping):
            return data
        env = (info.context or {}).get("env", os.environ)
        return _with_state_defaults(data, env)

    @model_validator(mode="wrap")
    @classmethod
    def _check_unique_names(
        cls, data: Any, handler: ModelWrapValidatorHandler[Settings]
    ) -> Settings:
        checks: list[InitErrorDetails] = []
        if isinstance(data, Mapping):
            checks += _duplicate_name_problems(data.get("tenants"))
            checks += _destination_name_problems(data.get("destinations"))
            checks += _destination_tenant_problems(data.get("destinations"), data.get("tenants"))
        validated: Settings = _validate_with_checks(cls, data, handler, checks)
        return validated

    @property
    def listen_host(self) -> str:
        return _split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return _split_listen(self.listen)[1]

    @property
    def state_backend(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.state.startswith("sqlite://") else "postgresql"

    @property
    def sqlite_path(self) -> str | None:
        """The database path of a ``sqlite:///PATH`` state URL (``:memory:`` included)."""
        return self.state.removeprefix("sqlite:///") if self.state_backend == "sqlite" else None

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "state" and isinstance(value, str) else value)


def _with_inherited(tenant: Mapping[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
    own = {key: value for key, value in tenant.items() if value is not None or key not in inherited}
    return {**inherited, **own}


def _with_state_defaults(data: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    filled = dict(data)
    data_dir = filled.get("data_dir")
    if data_dir is None:
        data_dir = _default_data_dir(env)
    if isinstance(data_dir, str):
        data_dir = _expand_home(data_dir, env)
    filled["data_dir"] = data_dir
    if filled.get("state") is None:
        base = data_dir.rstrip("/") if isinstance(data_dir, str) and data_dir else "."
        filled["state"] = f"sqlite:///{base}/state.db"
    return filled


def _default_data_dir(env: Mapping[str, str]) -> str:
    if env.get("KEYWATCH_DATA_DIR"):
        return env["KEYWATCH_DATA_DIR"]
    # systemd's StateDirectory= may list several directories, separated by colons.
    state_directory = env.get("STATE_DIRECTORY", "").split(":")[0]
    return state_directory or "~/.local/state/keywatch"


def _expand_home(path: str, env: Mapping[str, str]) -> str:
    if path != "~" and not path.startswith("~/"):
        return path
    home = env.get("HOME") or str(Path.home())
    return home + path[1:]


def _duplicate_name_problems(tenants: object) -> list[InitErrorDetails]:
    if not isinstance(tenants, list | tuple):
        return []
    first_index: dict[str, int] = {}
    problems: list[InitErrorDetails] = []
    for index, tenant in enumerate(tenants):
        name = tenant.get("name") if isinstance(tenant, Mapping) else None
        if isinstance(tenant, TenantConfig):
            name = tenant.name
        if not isinstance(name, str):
            continue
        if name in first_index:
            detail = f"duplicate tenant name {name!r}, already used by tenants[{first_index[name]}]"
            problems.append(
                {"type": _keywatch_error(detail), "loc": ("tenants", index, "name"), "input": name}
            )
        else:
            first_index[name] = index
    return problems


def _name_of(item: object) -> object:
    if isinstance(item, TenantConfig | DestinationConfig):
        return item.name
    return item.get("name") if isinstance(item, Mapping) else None


def _destination_name_problems(destinations: object) -> list[InitErrorDetails]:
    if not isinstance(destinations, list | tuple):
        return []
    first_index: dict[str, int] = {}
    problems: list[InitErrorDetails] = []
    for index, destination in enumerate(destinations):
        name = _name_of(destination)
        if not isinstance(name, str):
            continue
        if name in first_index:
            detail = (
                f"duplicate destination name {name!r}, "
                f"already used by destinations[{first_index[name]}]"
            )
            loc = ("destinations", index, "name")
            problems.append({"type": _keywatch_error(detail), "loc": loc, "input": name})
        else:
            first_index[name] = index
    return problems


def _destination_tenant_problems(destinations: object, tenants: object) -> list[InitErrorDetails]:
    """Every tenant a destination names must be configured."""
    if not isinstance(destinations, list | tuple) or not isinstance(tenants, list | tuple):
        return []
    known = [name for name in map(_name_of, tenants) if isinstance(name, str)]
    problems: list[InitErrorDetails] = []
    for index, destination in enumerate(destinations):
        wanted = (
            destination.tenants
            if isinstance(destination, DestinationConfig)
            else destination.get("tenants")
            if isinstance(destination, Mapping)
            else None
        )
        if not isinstance(wanted, list | tuple):
            continue
        for position, name in enumerate(wanted):
            if isinstance(name, str) and name not in known:
                detail = f"unknown tenant {name!r} (tenants are: {', '.join(known)})"
                loc = ("destinations", index, "tenants", position)
                problems.append({"type": _keywatch_error(detail), "loc": loc, "input": name})
    return problems


# --- YAML -> plain values with lines ------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    message: str
    path: KeyPath | None = None
    line: int | None = None
    column: int | None = None

    def render(self) -> str:
        text = self.message if self.path is None else f"{_render_path(self.path)}: {self.message}"
        if self.line is None:
            return text
        if self.column is None:
            return f"{text} (line {self.line})"
        return f"{text} (line {self.line}, column {self.column})"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _render_path(path: KeyPath) -> str:
    rendered = ""
    for part in path:
        if isinstance(part, int):
            rendered += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            rendered += f".{part}" if rendered else part
        else:
            rendered += f"[{part!r}]"
    return rendered or "(top level)"


class _Unresolved:
    """Stands in for a value whose interpolation failed (already reported)."""

    def __repr__(self) -> str:
        return "<unresolved>"


_UNRESOLVED = _Unresolved()
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_REFERENCE_START = re.compile(r"\$\$\{|\$\{")
_REFERENCE_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class _InterpolationError(Exception):
    pass


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default when unset or empty); ``$${`` is a
    literal ``${``. Raises ``_InterpolationError`` naming the variable, never the text."""
    pieces: list[str] = []
    position = 0
    for start in _REFERENCE_START.finditer(text):
        if start.start() < position:
            continue
        pieces.append(text[position : start.start()])
        if start.group() == "$${":
            pieces.append("${")
            position = start.end()
            continue
        end = text.find("}", start.end())
        if end < 0:
            raise _InterpolationError("unterminated ${ (write $${ for a literal ${)")
        pieces.append(_resolve_reference(text[start.end() : end], env))
        position = end + 1
    pieces.append(text[position:])
    return "".join(pieces)


def _resolve_reference(body: str, env: Mapping[str, str]) -> str:
    reference = _REFERENCE_BODY.fullmatch(body)
    if reference is None:
        raise _InterpolationError("invalid ${...} reference (expected ${NAME} or ${NAME:-default})")
    name, default = reference.groups()
    value = env.get(name)
    if default is not None:
        return value if value else default
    if value is None:
        raise _InterpolationError(f"environment variable {name} is not set")
    return value


@dataclass
class _YamlReader:
    """Turns a composed node tree into plain values, recording lines and problems.

    Aliases are expanded here, so here is where an alias bomb would explode: reading stops
    (``over_budget``) after ``node_budget`` nodes, and nesting (aliases and merges included)
    deeper than ``MAX_YAML_DEPTH`` is not followed."""

    env: Mapping[str, str]
    node_budget: int = MIN_ALIAS_BUDGET
    over_budget: bool = False
    key_lines: dict[KeyPath, int] = field(default_factory=dict)
    node_lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[_Problem] = field(default_factory=list)
    secret_values: set[str] = field(default_factory=set)
    _constructor: SafeConstructor = field(default_factory=SafeConstructor)
    _open_nodes: set[int] = field(default_factory=set)
    _nodes_read: int = 0

    def read(self, node: Node, path: KeyPath) -> object:
        self._nodes_read += 1
        if self._nodes_read > self.node_budget:
            self.over_budget = True
        if self.over_budget:
            return _UNRESOLVED
        self.node_lines[path] = _line(node)
        if isinstance(node, ScalarNode):
            return self._read_scalar(node, path)
        if id(node) in self._open_nodes:
            self.problems.append(_Problem("recursive YAML alias", path, _line(node)))
            return _UNRESOLVED
        if len(self._open_nodes) >= MAX_YAML_DEPTH:
            message = f"nested deeper than {MAX_YAML_DEPTH} levels (through aliases)"
            self.problems.append(_Problem(message, path, _line(node)))
            return _UNRESOLVED
        self._open_nodes.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._read_mapping(node, path)
            assert isinstance(node, SequenceNode)
            return self._read_sequence(node, path)
        finally:
            self._open_nodes.discard(id(node))

    def _read_sequence(self, node: SequenceNode, path: KeyPath) -> list[object]:
        items: list[object] = []
        for index, item in enumerate(node.value):
            self.key_lines[(*path, index)] = _line(item)
            items.append(self.read(item, (*path, index)))
        return items

    def _read_mapping(self, node: MappingNode, path: KeyPath) -> dict[str, object]:
        mapping: dict[str, object] = {}
        explicit = [(key, value) for key, value in node.value if key.tag != _MERGE_TAG]
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                mapping.update(self._read_merge(value, path))
        self.node_lines[path] = _line(node)  # reading a merged mapping moved it to the anchor
        first_lines: dict[str, int] = {}
        for key_node, value_node in explicit:
            if not isinstance(key_node, ScalarNode):
                self.problems.append(_Problem("keys must be plain strings", path, _line(key_node)))
                continue
            key, line = key_node.value, _line(key_node)
            if key in first_lines:
                message = f"duplicate key, first defined on line {first_lines[key]}"
                self.problems.append(_Problem(message, (*path, key), line))
            first_lines.setdefault(key, line)
            self.key_lines[(*path, key)] = line
            mapping[key] = self.read(value_node, (*path, key))
        return mapping

    def _read_merge(self, node: Node, path: KeyPath) -> dict[str, object]:
        """``<<: *anchor`` or ``<<: [*a, *b]``; earlier mappings win, explicit keys win over all."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, object] = {}
        for source in reversed(sources):
            if not isinstance(source, MappingNode):
                message = "<< must merge a mapping or a list of mappings"
                self.problems.append(_Problem(message, path, _line(node)))
                continue
            read = self.read(source, path)
            if isinstance(read, dict):
                merged.update(read)
        return merged

    def _read_scalar(self, node: ScalarNode, path: KeyPath) -> object:
        try:
            value = self._constructor.construct_object(node)
        except (yaml.YAMLError, ValueError):
            message = f"unsupported YAML value (tag {node.tag})"
            self.problems.append(_Problem(message, path, _line(node)))
            return _UNRESOLVED
        if not isinstance(value, str):
            return value
        try:
            value = _interpolate(value, self.env)
        except _InterpolationError as error:
            self.problems.append(_Problem(str(error), path, _line(node)))
            return _UNRESOLVED
        if is_secret_key(path) and value:
            self.secret_values.add(value)
        return value


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


# --- pydantic errors -> problem lines -----------------------------------------------------


def _type_name(value: object) -> str:
    names: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (Mapping, "a mapping"),
        ((list, tuple), "a list"),
        (type(None), "null"),
        (bytes, "binary data"),
        (date, "a date"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return f"a YAML {type(value).__name__}"


_EXPECTED = {
    "string_type": "a string",
    "float_type": "a number",
    "float_parsing": "a number",
    "tuple_type": "a list",
    "list_type": "a list",
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(error: ErrorDetails, path: KeyPath) -> str:
    kind, value, context = error["type"], error["input"], error.get("ctx", {})
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == _KEYWATCH_ERROR:
        return str(context["detail"])
    if kind == "value_error":
        return str(context["error"])
    if kind in _EXPECTED:
        hint = " (quote the value)" if isinstance(value, int | float) else ""
        return f"expected {_EXPECTED[kind]}, got {_type_name(value)}{hint}"
    if kind == "literal_error":
        shown = "" if is_secret_key(path) else f", got {yaml_spelling(value)}"
        return f"expected {context['expected']}{shown}"
    return error["msg"]


def _problem_from_error(error: ErrorDetails, reader: _YamlReader) -> _Problem:
    path: KeyPath = tuple(error["loc"])
    context = error.get("ctx", {})
    if error["type"] == _KEYWATCH_ERROR and context.get("field"):
        return _Problem(
            str(context["detail"]),
            (*path, context["field"]),
            _line_of((*path, context["field"]), reader),
        )
    if error["type"] == "missing":
        return _Problem("missing", path, _line_of(path[:-1], reader))
    return _Problem(_describe(error, path), path, _line_of(path, reader))


def _line_of(path: KeyPath, reader: _YamlReader) -> int | None:
    """The line of ``path``'s key, else of the nearest ancestor the YAML has."""
    for length in range(len(path), -1, -1):
        prefix = path[:length]
        line = reader.key_lines.get(prefix) or reader.node_lines.get(prefix)
        if line is not None:
            return line
    return None


def _validation_problems(error: ValidationError, reader: _YamlReader) -> list[_Problem]:
    problems: list[_Problem] = []
    for found in error.errors(include_url=False):
        if found["input"] is _UNRESOLVED and found["type"] != "extra_forbidden":
            continue  # the failed interpolation is already reported
        problems.append(_problem_from_error(found, reader))
    return problems


def _is_under(path: KeyPath | None, ancestors: Iterable[KeyPath]) -> bool:
    return path is not None and any(path[: len(parent)] == parent for parent in ancestors)


# --- public entry points ------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the YAML file at ``path``; ``env`` defaults to ``os.environ``.

    Reading stops at ``MAX_CONFIG_BYTES``: a larger file (or ``/dev/zero``) is refused."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found") from None
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror or type(error).__name__}") from None
    if len(data) > MAX_CONFIG_BYTES:
        limit = MAX_CONFIG_BYTES // 1024 // 1024
        raise ConfigError(f"larger than {limit} MiB: not a configuration file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file") from None
    return parse_config(text, source=source, env=env)


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Settings:
    """Validate YAML ``text``.

    Problem lines never name the file: callers prefix them with ``source`` (the file name, or
    ``<config>``), as the CLI does, so the same text reads the same wherever it came from.
    """
    del source  # part of the API for callers that keep it; see above
    environment = os.environ if env is None else env
    root, nodes = _compose(text)
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        raise ConfigError("the configuration is empty (at least tenants is required)")
    if not isinstance(root, MappingNode):
        kind = "a list" if isinstance(root, SequenceNode) else "a single value"
        message = f"the top level must be a mapping of keys, got {kind}"
        raise ConfigError(_Problem(message, line=_line(root)).render())
    reader = _YamlReader(environment, node_budget=nodes + max(MIN_ALIAS_BUDGET, nodes))
    data = reader.read(root, ())
    if reader.over_budget:
        raise ConfigError(
            f"YAML aliases expand to more than {reader.node_budget} values "
            "(an alias bomb?): refused"
        )
    settings, problems = _validate(data, reader, environment)
    if problems or settings is None:
        raise ConfigError(_redacted(problems, reader.secret_values))
    return settings


class _LimitExceeded(yaml.MarkedYAMLError):
    """The document is nested too deeply: refused before it is recursed into."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader's composer, refusing nesting deeper than ``MAX_YAML_DEPTH`` (Python's
    recursion limit would otherwise end it) and counting the nodes it builds (aliases reuse
    theirs), the base of the alias expansion budget."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0
        self.nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if not self.check_event(yaml.AliasEvent):
            self.nodes += 1
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                problem = f"nested deeper than {MAX_YAML_DEPTH} levels"
                raise _LimitExceeded(problem=problem, problem_mark=mark)
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self.depth -= 1


def _compose(text: str) -> tuple[Node | None, int]:
    """The document's node tree and how many nodes it has (aliases not counted)."""
    try:
        loader = _BoundedLoader(text)  # checks every character first
    except yaml.reader.ReaderError as error:
        raise ConfigError(_character_error(text, error)) from None
    try:
        return loader.get_single_node(), loader.nodes
    except _LimitExceeded as error:
        raise ConfigError(_marked(f"the YAML is {error.problem}", error.problem_mark)) from None
    except yaml.MarkedYAMLError as error:
        raise ConfigError(_syntax_error(error)) from None
    except yaml.YAMLError:
        raise ConfigError("YAML syntax error") from None
    finally:
        loader.dispose()


def _marked(message: str, mark: yaml.Mark | None) -> str:
    if mark is None:
        return _Problem(message).render()
    return _Problem(message, line=int(mark.line) + 1, column=int(mark.column) + 1).render()


def _syntax_error(error: yaml.MarkedYAMLError) -> str:
    """The error at the line where the broken construct starts when the stream ended inside
    it (an unclosed quote or bracket), else where the parser stopped."""
    context, problem = error.context, error.problem or "invalid"
    at_end = "end of stream" in problem or "<stream end>" in problem
    if context and error.context_mark is not None and at_end:
        message = f"YAML syntax error: {problem} {context} that starts here"
        return _marked(message, error.context_mark)
    described = ", ".join(part for part in (context, problem) if part)
    return _marked(f"YAML syntax error: {described}", error.problem_mark or error.context_mark)


def _character_error(text: str, error: yaml.reader.ReaderError) -> str:
    """A character YAML does not allow (a NUL byte, say), named with its line and column."""
    before = text[: error.position]
    line, column = before.count("\n") + 1, error.position - (before.rfind("\n") + 1) + 1
    character = chr(error.character) if isinstance(error.character, int) else error.character
    kind = "control character" if unicodedata.category(character) == "Cc" else "character"
    message = f"{kind} U+{ord(character):04X} is not allowed in YAML"
    return _Problem(message, line=line, column=column).render()


def _validate(
    data: object, reader: _YamlReader, env: Mapping[str, str]
) -> tuple[Settings | None, list[_Problem]]:
    settings: Settings | None = None
    found: list[_Problem] = []
    try:
        settings = Settings.model_validate(data, context={"env": env})
    except ValidationError as error:
        found = _validation_problems(error, reader)
    unknown = [p.path for p in found if p.message == "unknown key" and p.path is not None]
    earlier = [p for p in reader.problems if not _is_under(p.path, unknown)]
    problems = sorted([*earlier, *found], key=_problem_order)
    return settings, problems


def _problem_order(problem: _Problem) -> tuple[int, tuple[tuple[int, int, str], ...]]:
    """By line, then by path (``tenants[1]`` before ``tenants[1].name``)."""
    path = problem.path or ()
    return problem.line or 0, tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, part) for part in path
    )


def _redacted(problems: Iterable[_Problem], secrets: set[str]) -> list[str]:
    """A last safety net: no secret value of four or more characters survives in a message."""
    lines = [problem.render() for problem in problems]
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        lines = [line.replace(secret, "***") for line in lines]
    return lines
