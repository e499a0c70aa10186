"""The configuration's models: ``Settings`` and what it holds, frozen once validated."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from monitor.config.checks import (
    given_fields,
    name_problems,
    raise_found,
    run_by_caller,
    tenant_problems,
)
from monitor.config.destinations import DestinationConfig
from monitor.config.publication import DEFAULT_PUBLICATION_RECHECK, PublicationConfig, Recheck
from monitor.config.values import (
    DEFAULT_CONFIRM_POLLS,
    DEFAULT_DELIVERIES_RETENTION,
    DEFAULT_EVENTS_RETENTION,
    DEFAULT_EXPIRY_WARNINGS,
    DEFAULT_INTERVAL,
    DEFAULT_JITTER,
    DEFAULT_LEASE_TTL,
    DEFAULT_LISTEN,
    DEFAULT_TIMEOUT,
    DEFAULT_UNREACHABLE_AFTER,
    DIRECT,
    MAX_CONFIRM_POLLS,
    MAX_UNREACHABLE_AFTER,
    MIN_AUTH0_INTERVAL,
    BaseUrl,
    BcryptHash,
    CaFile,
    DataDir,
    Domain,
    Duration,
    ExemptPath,
    ExpiryWarnings,
    Fraction,
    Interval,
    Kids,
    LeaseTtl,
    Listen,
    LogFormat,
    LogLevel,
    NonEmptyStr,
    OptionalAge,
    ProxyUrl,
    ReadableFile,
    RetentionAge,
    Secret,
    StateUrl,
    TenantName,
    check_interval,
    none_as,
    seconds_text,
    split_listen,
)
from monitor.redact import redact_url

__all__ = [
    "FIELD_ERROR",
    "ConfirmConfig",
    "Defaults",
    "LeaseConfig",
    "Settings",
    "TenantConfig",
    "WebConfig",
]

FIELD_ERROR = "keywatch"
"""A pydantic error type raised by a model check about one of its fields: ``detail`` is the
message, ``field`` the field's key."""


def _field_error(detail: str, field: str) -> PydanticCustomError:
    return PydanticCustomError(FIELD_ERROR, "{field}: {detail}", {"detail": detail, "field": field})


class ConfirmConfig(BaseModel):
    """How long an alarming answer must persist before keywatch believes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    polls: Annotated[StrictInt, Field(ge=1, le=MAX_CONFIRM_POLLS)] = DEFAULT_CONFIRM_POLLS
    """Consecutive polls that must give the same alarming answer (1: believe it at once)."""


UnreachableAfter = Annotated[StrictInt, Field(ge=1, le=MAX_UNREACHABLE_AFTER)]


class Defaults(BaseModel):
    """Values every tenant inherits unless it sets its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval: Interval = DEFAULT_INTERVAL
    """Seconds between two polls of a tenant."""
    jitter: Fraction = DEFAULT_JITTER
    """Random spread of each interval, as a fraction of it (0..0.5)."""
    timeout: Duration = DEFAULT_TIMEOUT
    """Seconds one HTTP request may take."""
    confirm: Annotated[ConfirmConfig, none_as({})] = Field(default_factory=ConfirmConfig)
    expiry_warnings: ExpiryWarnings = DEFAULT_EXPIRY_WARNINGS
    """How long before a current or next key's certificate ends to warn (key.expiring)."""
    previous_unrevoked_after: OptionalAge = None
    """Warn (key.previous_unrevoked) when a previous key is not revoked this long after the
    rotation; off by default."""
    rotation_overdue_after: OptionalAge = None
    """Warn (tenant.rotation_overdue) when the current key is older than this; off by default."""
    unreachable_after: UnreachableAfter = DEFAULT_UNREACHABLE_AFTER
    """Consecutive failed polls that make a tenant unreachable (tenant.unreachable)."""
    publication_recheck: Recheck = DEFAULT_PUBLICATION_RECHECK
    """How often a settled publication is fetched again (``PublicationConfig``)."""


class MetricsConfig(BaseModel):
    """What ``/metrics`` exports; for the cardinality of big fleets (docs/metrics.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    zero_counters: bool = True
    """Export every tenant's error and event counters at 0 (so ``increase()`` sees their
    first change); false exports a counter once it moved: half the series."""


class LeaseConfig(BaseModel):
    """The leader lease of replicas sharing a PostgreSQL store (unused with SQLite)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl: LeaseTtl = DEFAULT_LEASE_TTL
    """Seconds a lease lasts unless renewed; the leader renews it every ttl/3."""


class RetentionConfig(BaseModel):
    """How long the store keeps events and delivered deliveries (pending and dead deliveries,
    and the events they belong to, are kept until they are delivered)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    events: RetentionAge = DEFAULT_EVENTS_RETENTION
    deliveries: RetentionAge = DEFAULT_DELIVERIES_RETENTION


class WebConfig(BaseModel):
    """The listener of ``/metrics``, ``/healthz`` and ``/readyz``: TLS and basic auth, in the
    Prometheus exporter-toolkit's terms. Changes take effect after a restart."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    tls_cert_file: ReadableFile | None = None
    """PEM certificate (chain) served; with ``tls_key_file``, the listener speaks HTTPS only."""
    tls_key_file: ReadableFile | None = None
    basic_auth_users: Annotated[dict[TenantName, BcryptHash], none_as({})] = Field(
        default_factory=dict
    )
    """User name -> bcrypt hash; any user makes every path need basic auth."""
    auth_exempt: Annotated[tuple[ExemptPath, ...], none_as(())] = ()
    """Paths served without auth (probes): ``/healthz``, ``/readyz``."""

    @model_validator(mode="after")
    def _check_tls_pair(self) -> WebConfig:
        cert, key = self.tls_cert_file, self.tls_key_file
        if key is not None and cert is None:
            raise _field_error("missing: tls_key_file is set", "tls_cert_file")
        if cert is not None and key is None:
            raise _field_error("missing: tls_cert_file is set", "tls_key_file")
        if cert is not None and key is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
            except (OSError, ValueError):
                detail = "is not a PEM certificate whose private key is in tls_key_file"
                raise _field_error(detail, "tls_cert_file") from None
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


class TenantConfig(PublicationConfig):
    """One Auth0 tenant to watch; ``interval``, ``timeout``, ``jitter`` and ``confirm`` are
    always resolved. Its publication checks are in ``PublicationConfig``."""

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
    confirm: Annotated[ConfirmConfig, none_as({})] = Field(default_factory=ConfirmConfig)
    expiry_warnings: ExpiryWarnings = DEFAULT_EXPIRY_WARNINGS
    previous_unrevoked_after: OptionalAge = None
    rotation_overdue_after: OptionalAge = None
    unreachable_after: UnreachableAfter = DEFAULT_UNREACHABLE_AFTER
    proxy: ProxyUrl | None = None
    """This tenant's proxy (``direct``: none), instead of the global ``proxy``."""
    ca_file: CaFile | None = None
    """This tenant's private CA certificates, instead of the global ``ca_file``."""

    @model_validator(mode="after")
    def _check_shape_and_interval(self, info: ValidationInfo) -> TenantConfig:
        shape = tenant_problems(given_fields(self))
        if shape:
            if not run_by_caller(info):
                raise_found(shape)
            return self  # reported by the caller; the interval floor depends on the shape
        if self.domain is None:
            try:
                check_interval(self.interval)
            except ValueError as error:
                raise _field_error(str(error), "interval") from None
        elif self.interval < MIN_AUTH0_INTERVAL:
            detail = (
                f"must be at least {seconds_text(MIN_AUTH0_INTERVAL)} for an Auth0 domain (each "
                "poll spends the tenant's Management API rate limit, shared with every other "
                f"tool using the tenant), got {seconds_text(self.interval)}"
            )
            raise _field_error(detail, "interval")
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


class Settings(BaseModel):
    """The whole configuration, validated once."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    listen: Listen = DEFAULT_LISTEN
    web: Annotated[WebConfig, none_as({})] = Field(default_factory=WebConfig)
    data_dir: DataDir
    state: StateUrl
    lease: Annotated[LeaseConfig, none_as({})] = Field(default_factory=LeaseConfig)
    metrics: Annotated[MetricsConfig, none_as({})] = Field(default_factory=MetricsConfig)
    retention: Annotated[RetentionConfig, none_as({})] = Field(default_factory=RetentionConfig)
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    defaults: Annotated[Defaults, none_as({})] = Field(default_factory=Defaults)
    tenants: tuple[TenantConfig, ...]
    destinations: Annotated[tuple[DestinationConfig, ...], none_as(())] = ()
    proxy: ProxyUrl | None = None
    """The HTTP(S) proxy of every request to Auth0 and to destinations (None: direct)."""
    ca_file: CaFile | None = None
    """PEM CA certificates trusted besides the public ones, for every outgoing request."""

    @field_validator("tenants", mode="before")
    @classmethod
    def _inherit_defaults(cls, tenants: Any, info: ValidationInfo) -> Any:
        """Fill each tenant's unset (or null) values from ``defaults``."""
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

    @model_validator(mode="after")
    def _check_names(self, info: ValidationInfo) -> Settings:
        if not run_by_caller(info):
            tenants = [{"name": tenant.name} for tenant in self.tenants]
            destinations = [{"name": d.name, "tenants": d.tenants} for d in self.destinations]
            raise_found(name_problems(tenants, destinations))
        return self

    def route_of(self, item: TenantConfig | DestinationConfig) -> tuple[str | None, str | None]:
        """(proxy URL or None for direct, CA file or None) of a tenant's or a destination's
        requests: its own ``proxy``/``ca_file``, else the global ones."""
        proxy = item.proxy if item.proxy is not None else self.proxy
        proxy_url = proxy.get_secret_value() if proxy is not None else None
        ca_file = item.ca_file if item.ca_file is not None else self.ca_file
        return (None if proxy_url == DIRECT else proxy_url), ca_file

    @property
    def listen_host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return split_listen(self.listen)[1]

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
