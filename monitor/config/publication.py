"""A tenant's publication checks (``jwks``, ``jwks_urls``, ``jwks_allow_extra_kids``,
``cert_endpoints``, ``mirrors``, ``publication_recheck``): a model of their own that
``TenantConfig`` extends."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StrictBool, StrictStr

from monitor.config.problems import yaml_spelling
from monitor.config.values import Kids, none_as, parse_duration

CertEndpoint = Literal["pem", "cer"]


def _check_fetch_url(value: str) -> str:
    """``http(s)://host[:port][/path]``, without credentials. Never echoed."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not contain a fragment")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _check_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"lists the same URL twice: {repeated[0]}")
    return values


def _check_unique_endpoints(values: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise ValueError("lists the same endpoint twice")
    return values


EVERY_POLL = "every_poll"
DEFAULT_PUBLICATION_RECHECK = 300.0
"""Seconds: a settled publication is fetched again every 5 minutes (every 5th poll at 60 s),
and on every poll while a change propagates (``monitor.publishing``)."""


def _parse_recheck(value: object) -> float:
    """A duration, or ``every_poll`` (0)."""
    if value is None:
        return DEFAULT_PUBLICATION_RECHECK
    if isinstance(value, str) and value.strip() == EVERY_POLL:
        return 0.0
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(
            f"expected a positive duration (e.g. 5m) or {EVERY_POLL}, got {yaml_spelling(value)}"
        ) from None


Recheck = Annotated[float, BeforeValidator(_parse_recheck)]
FetchUrl = Annotated[StrictStr, AfterValidator(_check_fetch_url)]
FetchUrls = Annotated[tuple[FetchUrl, ...], none_as(()), AfterValidator(_check_unique)]
CertEndpoints = Annotated[
    tuple[CertEndpoint, ...], none_as(()), AfterValidator(_check_unique_endpoints)
]


class PublicationConfig(BaseModel):
    """What keywatch checks of what a tenant publishes, besides its Management API."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    jwks: StrictBool = True
    """Fetch ``{base}/.well-known/jwks.json`` on each poll (as its Cache-Control allows) and
    compare it with the Management API."""
    jwks_urls: FetchUrls = ()
    """More JWKS URLs of the tenant (custom domains), checked the same way."""
    jwks_allow_extra_kids: Kids = ()
    """Published kids the Management API does not know that are expected (custom signing keys,
    prepended by Auth0 on custom domains)."""
    cert_endpoints: CertEndpoints = ()
    """``pem`` and/or ``cer``: compare ``{base}/pem`` / ``{base}/cer`` with the current key's
    certificate."""
    mirrors: FetchUrls = ()
    """URLs of services serving a copy of the tenant's JWKS (gateways, edge caches): each must
    serve the current and next keys and no revoked key."""
    publication_recheck: Recheck = DEFAULT_PUBLICATION_RECHECK
    """How often a settled publication is fetched again (seconds; 0: every poll). While a
    change propagates (the keys changed less than this long ago, or a target disagreed at its
    last fetch), every poll fetches."""
