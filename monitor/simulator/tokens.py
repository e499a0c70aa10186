"""A simulated tenant's applications and access tokens: the client credentials exchange of
``POST /oauth/token`` and the bearer check of every Management API call.

Tokens are RS256 JWTs signed by the tenant's current key, so a rotation leaves tokens issued
before it valid until their key is revoked, as on Auth0.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from monitor.simulator.crypto import decode_jwt, encode_rs256, rs256_signature_valid
from monitor.simulator.errors import TokenRejected, Unauthenticated
from monitor.simulator.keys import KeyRing

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
UNAUTHORIZED_STYLES = ("invalid_client", "access_denied")

MISSING_AUTHENTICATION = "Missing authentication"
INVALID_TOKEN = "Invalid token"
INVALID_SIGNATURE = "Invalid signature received for JSON Web Token validation"
EXPIRED_TOKEN = "Expired token received for JSON Web Token validation"


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    secret: str
    scopes: tuple[str, ...]


def _default_clients() -> dict[str, Client]:
    clients = (
        Client(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, ALL_SCOPES),
        Client(READONLY_CLIENT_ID, READONLY_CLIENT_SECRET, (READ_SCOPE,)),
        Client(NOSCOPE_CLIENT_ID, NOSCOPE_CLIENT_SECRET, ()),
    )
    return {client.client_id: client for client in clients}


class TokenIssuer:
    """Issues tokens to the tenant's machine-to-machine applications and checks them.

    Which audiences and issuer a request may use depends on the URL it came in on; the tenant
    works those out and passes them in.
    """

    def __init__(self, *, lock: threading.RLock, now: Callable[[], float], keys: KeyRing) -> None:
        self._lock = lock
        self._now = now
        self._keys = keys
        self._clients = _default_clients()

    def add_client(self, client_id: str, secret: str, scopes: Iterable[str] = ALL_SCOPES) -> None:
        with self._lock:
            self._clients[client_id] = Client(client_id, secret, tuple(scopes))

    def issue(
        self,
        params: Mapping[str, str],
        *,
        audiences: set[str],
        issuer_base: str,
        unauthorized_error: str,
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
        client = self._authenticate_client(
            params["client_id"], params["client_secret"], unauthorized_error
        )
        audience = params.get("audience")
        if not audience:
            raise TokenRejected(
                403,
                "access_denied",
                "No audience parameter was provided, and no default audience has been configured",
            )
        if audience not in audiences:
            raise TokenRejected(
                403,
                "access_denied",
                f'Client is not authorized to access "{audience}". You need to create a '
                '"client-grant" associated to this API. See: '
                "https://auth0.com/docs/api/v2#!/Client_Grants/post_client_grants",
            )
        return self._mint(client, audience, issuer_base=issuer_base)

    def _authenticate_client(self, client_id: str, secret: str, unauthorized_error: str) -> Client:
        with self._lock:
            client = self._clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret, secret):
            if unauthorized_error == "access_denied":
                raise TokenRejected(401, "access_denied", "Unauthorized")
            raise TokenRejected(401, "invalid_client", "Client authentication failed")
        return client

    def _mint(self, client: Client, audience: str, *, issuer_base: str) -> dict[str, object]:
        with self._lock:
            signer = self._keys.signer()
            issued_at = int(self._now())
        scope = " ".join(client.scopes)
        claims = {
            "iss": f"{issuer_base.rstrip('/')}/",
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

    def authenticate(self, authorization: str | None, *, audiences: set[str]) -> frozenset[str]:
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
        public_key = self._keys.verification_key(kid)
        if public_key is None or not rs256_signature_valid(jwt, public_key):
            raise Unauthenticated(INVALID_SIGNATURE)
        expires = jwt.claims.get("exp")
        if not isinstance(expires, int | float) or expires <= self._now():
            raise Unauthenticated(EXPIRED_TOKEN, expired=True)
        audience = jwt.claims.get("aud")
        if audience not in audiences:
            raise Unauthenticated(f"Bad audience: {audience}")
        scope = jwt.claims.get("scope")
        return frozenset(scope.split()) if isinstance(scope, str) else frozenset()
