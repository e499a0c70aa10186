"""Simulated Auth0 tenants: ``SimulatedTenant`` and ``Simulator``, a set of them.

``SimulatedTenant`` is the Python face of one tenant (tests drive it directly: rotate, revoke,
inject faults, move its clock); its keys live in a ``KeyRing`` (``keys``), its applications and
tokens in a ``TokenIssuer`` (``tokens``), its faults in a ``FaultPlan`` (``faults``).
``Simulator`` is a set of tenants sharing a clock and a key pool. The HTTP side lives in
``monitor.simulator.app``. All state changes take the tenant's lock, so tests may call these
methods while the server thread serves requests.

Behaviour follows the "Simulator spec" of the Auth0 reference notes; texts marked *invented*
there (the 401 for a missing bearer, the 400 for revoking a non-previous key, the 404
``errorCode``) are invented here too.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit

from monitor.simulator.crypto import KeyPool, KeySource, generate_rsa_key
from monitor.simulator.errors import (
    RevokeNotAllowed,
    SimulatorError,
    TokenRejected,
    Unauthenticated,
    UnknownSigningKey,
)
from monitor.simulator.faults import FaultPlan
from monitor.simulator.keys import KeyRing, iso_millis
from monitor.simulator.publication import Publication
from monitor.simulator.ratelimit import (
    BUCKETS,
    RateDecision,
    RateLimitPreset,
    TokenBucket,
    resolve_preset,
)
from monitor.simulator.tokens import (
    ALL_SCOPES,
    CREATE_SCOPE,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    NOSCOPE_CLIENT_ID,
    NOSCOPE_CLIENT_SECRET,
    READ_SCOPE,
    READONLY_CLIENT_ID,
    READONLY_CLIENT_SECRET,
    UNAUTHORIZED_STYLES,
    UPDATE_SCOPE,
    TokenIssuer,
)

__all__ = [
    "ALL_SCOPES",
    "CREATE_SCOPE",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "NOSCOPE_CLIENT_ID",
    "NOSCOPE_CLIENT_SECRET",
    "READONLY_CLIENT_ID",
    "READONLY_CLIENT_SECRET",
    "READ_SCOPE",
    "UPDATE_SCOPE",
    "RevokeNotAllowed",
    "SimulatedTenant",
    "Simulator",
    "SimulatorError",
    "TokenRejected",
    "Unauthenticated",
    "UnknownSigningKey",
    "check_tenant_name",
    "iso_millis",
]

Clock = Callable[[], float]

_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_tenant_name(name: str) -> str:
    if not isinstance(name, str) or not _TENANT_NAME.fullmatch(name):
        raise ValueError(
            f"tenant name {name!r} must be 1-63 characters of [A-Za-z0-9._-] "
            "starting with a letter or digit"
        )
    return name


class SimulatedTenant:
    """One Auth0 tenant. Keys are created on first use, so the certificates' CN can be the
    host the server is bound to (``127.0.0.1:PORT``) when the server starts first."""

    rate_limits: RateLimitPreset
    _buckets: dict[str, TokenBucket]

    def __init__(
        self,
        name: str,
        *,
        clock: Clock = time.time,
        key_source: KeySource | None = None,
        preset: str | RateLimitPreset = "unlimited",
        retry_after: bool = False,
        unauthorized_error: str = "invalid_client",
        base_url: str | None = None,
    ) -> None:
        self.name = check_tenant_name(name)
        self._clock = clock
        self._clock_offset = 0.0
        self._lock = threading.RLock()
        self._key_source = key_source or generate_rsa_key
        self.keys = KeyRing(
            lock=self._lock,
            now=self.now,
            key_source=self._key_source,
            common_name=lambda: self.domain,
        )
        self.tokens = TokenIssuer(lock=self._lock, now=self.now, keys=self.keys)
        self._base_url = base_url.rstrip("/") if base_url else None
        self.retry_after = retry_after
        self.unauthorized_error = unauthorized_error
        self.faults = FaultPlan()
        self.set_rate_limits(preset)
        self.publication = Publication(
            jwks=lambda stale: self.jwks_json(include_revoked=stale),
            changed_at=lambda: self.keys.changed_at,
            now=self.now,
            key_source=self._key_source,
            common_name=lambda: self.domain,
        )

    # --- time ------------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move this tenant's clock forward (token expiry, dates, bucket refills)."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward; got {seconds} seconds")
        with self._lock:
            self._clock_offset += seconds

    # --- identity --------------------------------------------------------------------------

    @property
    def base_url(self) -> str | None:
        """``http://127.0.0.1:PORT/<name>`` once a server is bound, else None."""
        return self._base_url

    @base_url.setter
    def base_url(self, value: str | None) -> None:
        self._base_url = value.rstrip("/") if value else None

    @property
    def domain(self) -> str:
        """The host the certificates name: the bound server's host, else a ``.test`` name."""
        if self._base_url:
            return urlsplit(self._base_url).netloc
        return f"{self.name}.simulator.test"

    @property
    def unauthorized_error(self) -> str:
        return self._unauthorized_error

    @unauthorized_error.setter
    def unauthorized_error(self, value: str) -> None:
        if value not in UNAUTHORIZED_STYLES:
            raise ValueError(f"unauthorized_error must be one of {', '.join(UNAUTHORIZED_STYLES)}")
        self._unauthorized_error = value

    # --- keys ------------------------------------------------------------------------------

    @property
    def keys_ready(self) -> bool:
        return self.keys.ready

    def ensure_keys(self) -> None:
        """Create the initial current and next keys now if they do not exist yet."""
        self.keys.ensure()

    @property
    def current_kid(self) -> str:
        return self.keys.kids_in("current")[0]

    @property
    def next_kid(self) -> str:
        return self.keys.kids_in("next")[0]

    @property
    def previous_kids(self) -> list[str]:
        """Oldest first."""
        return self.keys.kids_in("previous")

    @property
    def revoked_kids(self) -> list[str]:
        """The listed revoked keys (at most the last three), oldest first."""
        return self.keys.kids_in("revoked")

    def keys_json(self) -> list[dict[str, object]]:
        """The body of ``GET /api/v2/keys/signing``."""
        return self.keys.keys_json()

    def key_json(self, kid: str) -> dict[str, object]:
        """The body of ``GET /api/v2/keys/signing/{kid}``; raises ``UnknownSigningKey``."""
        return self.keys.key_json(kid)

    def jwks_json(self, *, include_revoked: bool = False) -> dict[str, object]:
        """``/.well-known/jwks.json``: current, next, then previous keys (newest first)."""
        return self.keys.jwks_json(include_revoked=include_revoked)

    def rotate(self) -> str:
        """Current -> previous, next -> current, a new next key; returns the new next kid."""
        return self.keys.rotate()

    # --- what the tenant publishes besides the Management API --------------------------------

    def current_certificate(self, *, stale: bool = False) -> tuple[str, bytes]:
        """(PEM, DER) of the current key's certificate (``/pem``, ``/cer``); ``stale``: of a
        previous key (or, before any rotation, the next key), as a pinned old copy would be."""
        with self._lock:
            older = self.keys.material_in("previous") or self.keys.material_in("next")
            material = older[-1] if stale else self.keys.signer()
            return material.cert_pem, material.der

    def revoke(self, kid: str) -> None:
        """Revoke a previous key; ``UnknownSigningKey`` or ``RevokeNotAllowed`` otherwise."""
        self.keys.revoke(kid)

    # --- clients and tokens ----------------------------------------------------------------

    def add_client(self, client_id: str, secret: str, scopes: Iterable[str] = ALL_SCOPES) -> None:
        self.tokens.add_client(client_id, secret, scopes)

    def accepted_audiences(self, request_base_url: str | None = None) -> set[str]:
        bases = {base for base in (self._base_url, request_base_url) if base}
        return {f"{base.rstrip('/')}/api/v2/" for base in bases}

    def issue_token(
        self, params: Mapping[str, str], *, request_base_url: str | None = None
    ) -> dict[str, object]:
        """A client-credentials exchange; returns the 200 body or raises ``TokenRejected``."""
        return self.tokens.issue(
            params,
            audiences=self.accepted_audiences(request_base_url),
            issuer_base=request_base_url or self._base_url or f"https://{self.domain}",
            unauthorized_error=self.unauthorized_error,
        )

    def authenticate(
        self, authorization: str | None, *, request_base_url: str | None = None
    ) -> frozenset[str]:
        """Check a Management API ``Authorization`` header; returns the token's scopes."""
        return self.tokens.authenticate(
            authorization, audiences=self.accepted_audiences(request_base_url)
        )

    # --- rate limits -----------------------------------------------------------------------

    def set_rate_limits(self, preset: str | RateLimitPreset) -> None:
        """Switch preset (``free``, ``enterprise``, ``unlimited`` or a custom one); every
        bucket starts full."""
        resolved = resolve_preset(preset)
        with self._lock:
            now = self.now()
            self.rate_limits = resolved
            self._buckets = {name: TokenBucket(resolved.spec(name), now=now) for name in BUCKETS}

    def take_rate(self, bucket: str) -> RateDecision:
        with self._lock:
            return self._buckets[bucket].take(self.now())

    def peek_rate(self, bucket: str) -> RateDecision:
        with self._lock:
            return self._buckets[bucket].peek(self.now())

    # --- faults ----------------------------------------------------------------------------

    def fail_next(
        self,
        count: int | None = 1,
        *,
        status: int = 503,
        retry_after: float | None = None,
        target: str = "api",
    ) -> None:
        """The next ``count`` responses of ``target`` get ``status`` (``None``: until cleared)."""
        self.faults.add_status(target, count, status, retry_after)

    def slow_next(self, count: int | None = 1, *, delay: float, target: str = "api") -> None:
        """The next ``count`` responses of ``target`` wait ``delay`` real seconds first."""
        self.faults.add_delay(target, count, delay)

    def malform_next(self, count: int | None = 1, *, kind: str, target: str = "api") -> None:
        """The next ``count`` successful reads of ``target`` come back malformed (see faults)."""
        self.faults.add_malformed(target, count, kind)

    def token_outage(self, *, status: int = 503) -> None:
        """``POST /oauth/token`` answers ``status`` until ``end_token_outage``."""
        self.faults.add_status("token", None, status)

    def end_token_outage(self) -> None:
        self.faults.clear("token", status_only=True)

    def clear_faults(self) -> None:
        self.faults.clear()

    def describe(self) -> dict[str, object]:
        """The admin view: kids by state, clock, preset, pending faults."""
        return {
            "name": self.name,
            "url": self._base_url,
            "now": iso_millis(self.now()),
            "current_kid": self.current_kid,
            "next_kid": self.next_kid,
            "previous_kids": self.previous_kids,
            "revoked_kids": self.revoked_kids,
            "rate_limits": self.rate_limits.name,
            "retry_after": self.retry_after,
            "faults": self.faults.describe(),
            "publication": self.publication.describe(),
        }


class Simulator:
    """Many tenants in one process, each served under ``{url}/<name>``."""

    def __init__(
        self,
        *,
        tenants: int = 0,
        preset: str | RateLimitPreset = "unlimited",
        clock: Clock = time.time,
        key_pool_size: int = 0,
        key_pool: KeyPool | None = None,
        retry_after: bool = False,
    ) -> None:
        """``key_pool_size`` > 0 (or a shared ``key_pool``) reuses pregenerated RSA keys;
        0 generates a fresh RSA key for every signing key."""
        if key_pool is None and key_pool_size:
            key_pool = KeyPool(key_pool_size)
        self.key_pool = key_pool
        self.clock = clock
        self.preset = resolve_preset(preset)
        self.retry_after = retry_after
        self._base_url: str | None = None
        self._tenants: dict[str, SimulatedTenant] = {}
        self._lock = threading.Lock()
        for _ in range(tenants):
            self.add_tenant()

    @property
    def base_url(self) -> str | None:
        return self._base_url

    def bind(self, base_url: str) -> None:
        """Called by the server once its port is known: tenants live under ``base_url``."""
        with self._lock:
            self._base_url = base_url.rstrip("/")
            for tenant in self._tenants.values():
                tenant.base_url = f"{self._base_url}/{tenant.name}"

    def add_tenant(
        self, name: str | None = None, *, preset: str | RateLimitPreset | None = None
    ) -> SimulatedTenant:
        """A new tenant, named ``tenant-N`` by default; ValueError if the name is taken."""
        with self._lock:
            if name is None:
                name = self._free_default_name()
            if name in self._tenants:
                raise ValueError(f"tenant {name!r} already exists")
            tenant = SimulatedTenant(
                name,
                clock=self.clock,
                key_source=self.key_pool.take if self.key_pool else None,
                preset=preset or self.preset,
                retry_after=self.retry_after,
                base_url=f"{self._base_url}/{name}" if self._base_url else None,
            )
            self._tenants[name] = tenant
            return tenant

    def _free_default_name(self) -> str:
        number = len(self._tenants) + 1
        while f"tenant-{number}" in self._tenants:
            number += 1
        return f"tenant-{number}"

    def tenant(self, name: str) -> SimulatedTenant:
        """The tenant called ``name``; KeyError if there is none."""
        with self._lock:
            return self._tenants[name]

    def get(self, name: str) -> SimulatedTenant | None:
        with self._lock:
            return self._tenants.get(name)

    @property
    def tenants(self) -> list[SimulatedTenant]:
        with self._lock:
            return list(self._tenants.values())

    def ensure_keys(self) -> None:
        """Create every tenant's initial keys now (benchmarks: pay the cost up front)."""
        for tenant in self.tenants:
            tenant.ensure_keys()
