"""The state of simulated Auth0 tenants: signing keys, clients, tokens, rate limits, faults.

``SimulatedTenant`` is the Python face of one tenant (tests drive it directly: rotate, revoke,
inject faults, move its clock); ``Simulator`` is a set of tenants sharing a clock and a key
pool. The HTTP side lives in ``monitor.simulator.app``. All state changes take the tenant's
lock, so tests may call these methods while the server thread serves requests.

Behaviour follows the "Simulator spec" of the Auth0 reference notes; texts marked *invented*
there (the 401 for a missing bearer, the 400 for revoking a non-previous key, the 404
``errorCode``) are invented here too.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa

from monitor.simulator.crypto import (
    KeyMaterial,
    KeyPool,
    KeySource,
    decode_jwt,
    encode_rs256,
    generate_rsa_key,
    make_key_material,
    rs256_signature_valid,
)
from monitor.simulator.faults import FaultPlan
from monitor.simulator.ratelimit import (
    BUCKETS,
    RateDecision,
    RateLimitPreset,
    TokenBucket,
    resolve_preset,
)

Clock = Callable[[], float]

DEFAULT_CLIENT_ID = "keywatch-demo"
DEFAULT_CLIENT_SECRET = "keywatch-demo-secret"
READONLY_CLIENT_ID = "keywatch-readonly"
READONLY_CLIENT_SECRET = "keywatch-readonly-secret"
NOSCOPE_CLIENT_ID = "keywatch-noscope"
NOSCOPE_CLIENT_SECRET = "keywatch-noscope-secret"

READ_SCOPE = "read:signing_keys"
CREATE_SCOPE = "create:signing_keys"
UPDATE_SCOPE = "update:signing_keys"
ALL_SCOPES = (READ_SCOPE, CREATE_SCOPE, UPDATE_SCOPE)

TOKEN_LIFETIME_SECONDS = 86_400
MAX_LISTED_REVOKED_KEYS = 3  # the dashboard's "last three revoked keys"
UNAUTHORIZED_STYLES = ("invalid_client", "access_denied")

_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


class SimulatorError(Exception):
    """Base of the simulator's own errors (they never leave the simulator package's API)."""


class UnknownSigningKey(SimulatorError, LookupError):
    def __init__(self, kid: str) -> None:
        self.kid = kid
        super().__init__(f"no signing key with kid {kid!r}")


class RevokeNotAllowed(SimulatorError, ValueError):
    def __init__(self, kid: str, state: str) -> None:
        self.kid = kid
        self.state = state
        super().__init__(f"signing key {kid!r} is {state}; only previous keys can be revoked")


class TokenRejected(SimulatorError):
    """``POST /oauth/token`` refuses: ``status`` plus the OAuth ``error`` body."""

    def __init__(self, status: int, error: str, description: str) -> None:
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"{status} {error}: {description}")


class Unauthenticated(SimulatorError):
    """A Management API call without a valid token; ``message`` is Auth0's 401 text."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        self.message = message
        self.expired = expired
        super().__init__(message)


MISSING_AUTHENTICATION = "Missing authentication"
INVALID_TOKEN = "Invalid token"
INVALID_SIGNATURE = "Invalid signature received for JSON Web Token validation"
EXPIRED_TOKEN = "Expired token received for JSON Web Token validation"


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    secret: str
    scopes: tuple[str, ...]


def iso_millis(epoch: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ``, the date format of the Management API."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(eq=False, slots=True)
class SigningKey:
    """One key of a tenant: its material plus the lifecycle flags and dates."""

    material: KeyMaterial
    current: bool = False
    next: bool = False
    previous: bool = False
    revoked: bool = False
    current_since: float | None = None
    current_until: float | None = None
    revoked_at: float | None = None

    @property
    def kid(self) -> str:
        return self.material.kid

    @property
    def state(self) -> str:
        for name in ("revoked", "current", "next", "previous"):
            if getattr(self, name):
                return name
        return "unknown"

    def to_json(self) -> dict[str, object]:
        """The ``SigningKeys`` object: explicit booleans, dates only when set."""
        body: dict[str, object] = {
            "kid": self.kid,
            "cert": self.material.cert_pem,
            "pkcs7": self.material.pkcs7_pem,
            "current": self.current,
            "next": self.next,
            "previous": self.previous,
        }
        for name in ("current_since", "current_until"):
            value = getattr(self, name)
            if value is not None:
                body[name] = iso_millis(value)
        body["fingerprint"] = self.material.fingerprint
        body["thumbprint"] = self.material.thumbprint
        body["revoked"] = self.revoked
        if self.revoked_at is not None:
            body["revoked_at"] = iso_millis(self.revoked_at)
        return body


def _default_clients() -> dict[str, Client]:
    clients = (
        Client(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, ALL_SCOPES),
        Client(READONLY_CLIENT_ID, READONLY_CLIENT_SECRET, (READ_SCOPE,)),
        Client(NOSCOPE_CLIENT_ID, NOSCOPE_CLIENT_SECRET, ()),
    )
    return {client.client_id: client for client in clients}


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
        self._key_source = key_source or generate_rsa_key
        self._lock = threading.RLock()
        self._keys: list[SigningKey] = []
        self._clients = _default_clients()
        self._base_url = base_url.rstrip("/") if base_url else None
        self.retry_after = retry_after
        self.unauthorized_error = unauthorized_error
        self.faults = FaultPlan()
        self.set_rate_limits(preset)

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
        return bool(self._keys)

    def ensure_keys(self) -> None:
        """Create the initial current and next keys now if they do not exist yet."""
        with self._lock:
            self._ensure_keys_locked()

    def _ensure_keys_locked(self) -> None:
        if self._keys:
            return
        now = self.now()
        self._keys = [
            SigningKey(self._new_material(now), current=True, current_since=now),
            SigningKey(self._new_material(now), next=True),
        ]

    def _new_material(self, now: float) -> KeyMaterial:
        return make_key_material(self._key_source(), common_name=self.domain, issued_at=now)

    def _keys_in(self, state: str) -> list[SigningKey]:
        with self._lock:
            self._ensure_keys_locked()
            return [key for key in self._keys if key.state == state]

    @property
    def current_kid(self) -> str:
        return self._keys_in("current")[0].kid

    @property
    def next_kid(self) -> str:
        return self._keys_in("next")[0].kid

    @property
    def previous_kids(self) -> list[str]:
        """Oldest first."""
        return [key.kid for key in self._keys_in("previous")]

    @property
    def revoked_kids(self) -> list[str]:
        """The listed revoked keys (at most the last three), oldest first."""
        return [key.kid for key in self._keys_in("revoked")]

    def keys_json(self) -> list[dict[str, object]]:
        """The body of ``GET /api/v2/keys/signing``."""
        with self._lock:
            self._ensure_keys_locked()
            return [key.to_json() for key in self._keys]

    def key_json(self, kid: str) -> dict[str, object]:
        """The body of ``GET /api/v2/keys/signing/{kid}``; raises ``UnknownSigningKey``."""
        with self._lock:
            return self._find(kid).to_json()

    def jwks_json(self, *, include_revoked: bool = False) -> dict[str, object]:
        """``/.well-known/jwks.json``: current, next, then previous keys (newest first)."""
        with self._lock:
            self._ensure_keys_locked()
            order = {"current": 0, "next": 1, "previous": 2, "revoked": 3}
            keys = [key for key in self._keys if include_revoked or not key.revoked]
            ranked = sorted(
                enumerate(keys), key=lambda pair: (order.get(pair[1].state, 4), -pair[0])
            )
            return {"keys": [key.material.jwk() for _, key in ranked]}

    def _find(self, kid: str) -> SigningKey:
        self._ensure_keys_locked()
        for key in self._keys:
            if key.kid == kid:
                return key
        raise UnknownSigningKey(kid)

    def rotate(self) -> str:
        """Current -> previous, next -> current, a new next key; returns the new next kid."""
        with self._lock:
            self._ensure_keys_locked()
            now = self.now()
            material = self._new_material(now)  # before any change: if it fails, nothing moved
            for key in self._keys:
                if key.current:
                    key.current, key.previous, key.current_until = False, True, now
            for key in self._keys:
                if key.next:
                    key.next, key.current, key.current_since = False, True, now
            self._keys.append(SigningKey(material, next=True))
            return material.kid

    def revoke(self, kid: str) -> None:
        """Revoke a previous key; ``UnknownSigningKey`` or ``RevokeNotAllowed`` otherwise."""
        with self._lock:
            key = self._find(kid)
            if not key.previous or key.revoked:
                raise RevokeNotAllowed(kid, key.state)
            key.previous, key.revoked, key.revoked_at = False, True, self.now()
            self._forget_old_revoked_keys()

    def _forget_old_revoked_keys(self) -> None:
        revoked = [key for key in self._keys if key.revoked]
        revoked.sort(key=lambda key: key.revoked_at or 0.0)
        for key in revoked[:-MAX_LISTED_REVOKED_KEYS]:
            self._keys.remove(key)

    # --- clients and tokens ----------------------------------------------------------------

    def add_client(self, client_id: str, secret: str, scopes: Iterable[str] = ALL_SCOPES) -> None:
        with self._lock:
            self._clients[client_id] = Client(client_id, secret, tuple(scopes))

    def accepted_audiences(self, request_base_url: str | None = None) -> set[str]:
        bases = {base for base in (self._base_url, request_base_url) if base}
        return {f"{base.rstrip('/')}/api/v2/" for base in bases}

    def issue_token(
        self, params: Mapping[str, str], *, request_base_url: str | None = None
    ) -> dict[str, object]:
        """A client-credentials exchange; returns the 200 body or raises ``TokenRejected``."""
        grant_type = params.get("grant_type")
        if not grant_type:
            raise TokenRejected(400, "invalid_request", "Missing required parameter: grant_type")
        if grant_type != "client_credentials":
            raise TokenRejected(
                400, "unsupported_grant_type", "Unsupported grant type: " + grant_type
            )
        for name in ("client_id", "client_secret"):
            if not params.get(name):
                raise TokenRejected(400, "invalid_request", f"Missing required parameter: {name}")
        client = self._authenticate_client(params["client_id"], params["client_secret"])
        audience = params.get("audience")
        if not audience:
            raise TokenRejected(
                403,
                "access_denied",
                "No audience parameter was provided, and no default audience has been configured",
            )
        if audience not in self.accepted_audiences(request_base_url):
            raise TokenRejected(
                403,
                "access_denied",
                f'Client is not authorized to access "{audience}". You need to create a '
                '"client-grant" associated to this API. See: '
                "https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants",
            )
        return self._mint_token(client, audience, issuer_base=request_base_url)

    def _authenticate_client(self, client_id: str, secret: str) -> Client:
        with self._lock:
            client = self._clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret, secret):
            if self.unauthorized_error == "access_denied":
                raise TokenRejected(401, "access_denied", "Unauthorized")
            raise TokenRejected(401, "invalid_client", "Client authentication failed")
        return client

    def _mint_token(
        self, client: Client, audience: str, *, issuer_base: str | None
    ) -> dict[str, object]:
        with self._lock:
            self._ensure_keys_locked()
            signer = self._keys_in("current")[0].material
            issued_at = int(self.now())
        base = issuer_base or self._base_url or f"https://{self.domain}"
        scope = " ".join(client.scopes)
        claims = {
            "iss": f"{base.rstrip('/')}/",
            "sub": f"{client.client_id}@clients",
            "aud": audience,
            "iat": issued_at,
            "exp": issued_at + TOKEN_LIFETIME_SECONDS,
            "scope": scope,
            "gty": "client-credentials",
            "azp": client.client_id,
        }
        token = encode_rs256(claims, kid=signer.kid, private_key=signer.private_key)
        return {
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECONDS,
            "scope": scope,
            "token_type": "Bearer",
        }

    def authenticate(
        self, authorization: str | None, *, request_base_url: str | None = None
    ) -> frozenset[str]:
        """Check a Management API ``Authorization`` header; returns the token's scopes."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(MISSING_AUTHENTICATION)
        try:
            jwt = decode_jwt(token.strip())
        except ValueError:
            raise Unauthenticated(INVALID_TOKEN) from None
        kid = jwt.header.get("kid")
        if jwt.header.get("alg") != "RS256" or not isinstance(kid, str):
            raise Unauthenticated(INVALID_SIGNATURE)
        public_key = self._verification_key(kid)
        if public_key is None or not rs256_signature_valid(jwt, public_key):
            raise Unauthenticated(INVALID_SIGNATURE)
        expires = jwt.claims.get("exp")
        if not isinstance(expires, int | float) or expires <= self.now():
            raise Unauthenticated(EXPIRED_TOKEN, expired=True)
        audience = jwt.claims.get("aud")
        if audience not in self.accepted_audiences(request_base_url):
            raise Unauthenticated(f"Bad audience: {audience}")
        scope = jwt.claims.get("scope")
        return frozenset(scope.split()) if isinstance(scope, str) else frozenset()

    def _verification_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The public key of a non-revoked key of this tenant, else None."""
        with self._lock:
            try:
                key = self._find(kid)
            except UnknownSigningKey:
                return None
            return None if key.revoked else key.material.private_key.public_key()

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
