"""The value types of the configuration: durations, fractions, names, hosts and URLs, each a
pydantic annotated type whose validator says what is wrong in words a user can act on."""

from __future__ import annotations

import math
import re
import ssl
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr, StrictStr

from monitor.clock import span
from monitor.config.problems import yaml_spelling

DEFAULT_LISTEN = "0.0.0.0:9464"
DEFAULT_INTERVAL = 60.0
DEFAULT_JITTER = 0.1
DEFAULT_TIMEOUT = 10.0
MAX_JITTER = 0.5
DEFAULT_CONFIRM_POLLS = 2
MAX_CONFIRM_POLLS = 10
DEFAULT_LEASE_TTL = 15.0
MIN_LEASE_TTL = 1.0
DAY = 86400.0
DEFAULT_EVENTS_RETENTION = 90 * DAY
DEFAULT_DELIVERIES_RETENTION = 30 * DAY
MIN_RETENTION = DAY
"""Seconds; kept shorter, a change detected again (same event id) could be notified again."""
DEFAULT_EXPIRY_WARNINGS = (30 * 86400.0, 7 * 86400.0)
MAX_EXPIRY_WARNINGS = 10
DEFAULT_UNREACHABLE_AFTER = 3
MAX_UNREACHABLE_AFTER = 1000
MIN_INTERVAL = 0.1
"""Seconds; the least time between two polls of any tenant."""
MIN_AUTH0_INTERVAL = 1.0
"""Seconds; the least for a tenant given by ``domain``: every poll spends the tenant's
Management API rate limit, which every other tool using the tenant shares."""

DestinationKind = Literal[
    "slack", "teams", "discord", "googlechat", "webhook", "alertmanager", "pagerduty"
]
DESTINATION_KINDS: tuple[str, ...] = get_args(DestinationKind)


# --- durations and fractions -------------------------------------------------------------

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


DIRECT = "direct"
"""``proxy: direct``: no proxy for this tenant or destination, whatever the global one."""


def _check_proxy(value: SecretStr) -> SecretStr:
    """``http(s)://[user:password@]host:port`` or ``direct``. Never echoed: it may hold a
    password."""
    text = value.get_secret_value()
    if text == DIRECT:
        return value
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("not a valid URL (bad host or port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be http://host:port or https://host:port (or direct)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be a proxy address without a path, query or fragment")
    if port is None:
        raise ValueError("must name the proxy's port (http://host:port)")
    return value


def _check_ca_file(value: str) -> str:
    """A readable PEM file holding at least one CA certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=value)
    except FileNotFoundError:
        raise ValueError(f"no such file: {value}") from None
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise ValueError(f"{value}: not a PEM file of CA certificates") from None
        raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
    return value


_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
EXEMPT_PATHS = ("/healthz", "/readyz")


def _check_bcrypt_hash(value: SecretStr) -> SecretStr:
    """``$2b$12$`` + 53 characters. Never echoed."""
    if not _BCRYPT_HASH.fullmatch(value.get_secret_value()):
        raise ValueError(
            "not a bcrypt hash ($2b$<cost>$ and 53 characters; make one with "
            "htpasswd -nBC 12 USER, or python -c 'import bcrypt; "
            'print(bcrypt.hashpw(b"PASSWORD", bcrypt.gensalt()).decode())\')'
        )
    return value


def _check_readable_file(value: str) -> str:
    try:
        with open(value, "rb") as file:
            file.read(1)
    except FileNotFoundError:
        raise ValueError(f"no such file: {value}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
    return value


def _check_exempt_path(value: str) -> str:
    if value not in EXEMPT_PATHS:
        raise ValueError(f"only {' and '.join(EXEMPT_PATHS)} may be exempt, got {value!r}")
    return value


def check_not_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


def _check_secret_not_empty(value: SecretStr) -> SecretStr:
    if not value.get_secret_value():
        raise ValueError("must not be empty")
    return value


def split_listen(value: str) -> tuple[str, int]:
    host, colon, port_text = value.rpartition(":")
    if not colon or not _LISTEN_HOST.fullmatch(host) or not port_text.isdigit():
        raise ValueError(f"expected host:port (e.g. 0.0.0.0:9464 or [::1]:9464), got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port must be between 0 and 65535, got {value!r}")
    return host.strip("[]"), port


def _check_listen(value: str) -> str:
    split_listen(value)
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


def _check_retention(seconds: float) -> float:
    if seconds < MIN_RETENTION:
        raise ValueError(f"must be at least 1d, got {span(seconds)}")
    return seconds


def check_interval(seconds: float) -> float:
    if seconds < MIN_INTERVAL:
        raise ValueError(
            f"must be at least {seconds_text(MIN_INTERVAL)}, got {seconds_text(seconds)}"
        )
    return seconds


def seconds_text(value: float) -> str:
    """``500ms`` below a second, else ``2s``."""
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def lowercase(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def none_as(empty: object) -> BeforeValidator:
    """Reads ``null`` (an empty YAML value) as ``empty``."""
    return BeforeValidator(lambda value: empty if value is None else value)


def _check_unique_kids(kids: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for kid in kids:
        if kid in seen:
            raise ValueError(f"duplicate kid {kid!r}")
        seen.add(kid)
    return kids


def _parse_expiry_warnings(value: object) -> tuple[float, ...]:
    """A list of durations before a certificate's end, widest first; ``[]`` warns never."""
    if value is None:
        return DEFAULT_EXPIRY_WARNINGS
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"expected a list of durations (e.g. [30d, 7d]), got {yaml_spelling(value)}"
        )
    if len(value) > MAX_EXPIRY_WARNINGS:
        raise ValueError(f"at most {MAX_EXPIRY_WARNINGS} warnings, got {len(value)}")
    windows: list[float] = []
    for index, item in enumerate(value):
        try:
            window = parse_duration(item)
        except ValueError as error:
            raise ValueError(f"item {index}: {error}") from None
        if window in windows:
            raise ValueError(f"item {index}: duplicate window {yaml_spelling(item)}")
        windows.append(window)
    return tuple(sorted(windows, reverse=True))


def _parse_optional_age(value: object) -> float | None:
    """A duration, or ``off`` (YAML's ``off`` and ``false`` included) for a check that is off."""
    if value is None or value is False or (isinstance(value, str) and value.strip() == "off"):
        return None
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
ExpiryWarnings = Annotated[tuple[float, ...], BeforeValidator(_parse_expiry_warnings)]
OptionalAge = Annotated[float | None, BeforeValidator(_parse_optional_age)]
Fraction = Annotated[float, BeforeValidator(_parse_fraction)]
NonEmptyStr = Annotated[StrictStr, AfterValidator(check_not_empty)]
Secret = Annotated[SecretStr, AfterValidator(_check_secret_not_empty)]
TenantName = Annotated[StrictStr, AfterValidator(_check_tenant_name)]
Domain = Annotated[StrictStr, AfterValidator(_check_domain)]
BaseUrl = Annotated[StrictStr, AfterValidator(_check_base_url)]
BcryptHash = Annotated[SecretStr, AfterValidator(_check_bcrypt_hash)]
ReadableFile = Annotated[
    StrictStr, AfterValidator(check_not_empty), AfterValidator(_check_readable_file)
]
ExemptPath = Annotated[StrictStr, AfterValidator(_check_exempt_path)]
ProxyUrl = Annotated[SecretStr, AfterValidator(_check_proxy)]
CaFile = Annotated[StrictStr, AfterValidator(check_not_empty), AfterValidator(_check_ca_file)]
Kids = Annotated[tuple[NonEmptyStr, ...], none_as(()), AfterValidator(_check_unique_kids)]
Listen = Annotated[StrictStr, AfterValidator(_check_listen)]
StateUrl = Annotated[StrictStr, AfterValidator(_check_state)]
DataDir = Annotated[StrictStr, AfterValidator(check_not_empty)]
Interval = Annotated[float, BeforeValidator(parse_duration), AfterValidator(check_interval)]
LeaseTtl = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_check_lease_ttl)]
RetentionAge = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_check_retention)]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(lowercase)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(lowercase)]
