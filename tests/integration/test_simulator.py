"""The simulated Auth0 tenant, exercised over real HTTP on 127.0.0.1.

Every response of the ``http`` client is checked against Auth0's OpenAPI documents for the
keys API and the OAuth token API, kept in the repository as ``tests/contract/`` (pruned to the
endpoints the simulator serves); Management API error bodies, which the reference
does not model, are checked against Auth0's documented error shape.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from monitor.errors import MalformedResponse
from monitor.model import parse_signing_keys
from monitor.simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    NOSCOPE_CLIENT_ID,
    NOSCOPE_CLIENT_SECRET,
    READONLY_CLIENT_ID,
    READONLY_CLIENT_SECRET,
    KeyPool,
    RevokeNotAllowed,
    SimulatedTenant,
    Simulator,
    SimulatorServer,
    UnknownSigningKey,
    run_simulator,
)
from tests.support import REPO

FROZEN_NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z; tenants move their own clocks
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KID = re.compile(r"^[A-Za-z0-9]{21}$")
READ_403 = "Insufficient scope, expected any of: read:signing_keys"
ROTATE_403 = "Insufficient scope; expected create:signing_keys and update:signing_keys."
REVOKE_403 = "Insufficient scope; expected any of: update:signing_keys."
INVALID_SIGNATURE = "Invalid signature received for JSON Web Token validation"
EXPIRED = "Expired token received for JSON Web Token validation"


# --- the reference contract ------------------------------------------------------------------


CONTRACT_FIXTURE = REPO / "tests" / "contract" / "auth0_signing_keys.json"
"""Auth0's OpenAPI for the keys and token endpoints, pruned; see tests/contract/refresh.py."""


KEYS_URI = "urn:auth0:keys"
OAUTH_URI = "urn:auth0:oauth"

MANAGEMENT_ERROR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["statusCode", "error", "message"],
    "properties": {
        "statusCode": {"type": "integer"},
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errorCode": {"type": "string"},
        "attributes": {"type": "object", "required": ["error"]},
    },
}
OAUTH_ERROR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["error", "error_description"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}
TOKEN_OK = {
    "type": "object",
    "additionalProperties": False,
    "required": ["access_token", "expires_in", "scope", "token_type"],
    "properties": {
        "access_token": {"type": "string", "pattern": r"^[\w-]+\.[\w-]+\.[\w-]+$"},
        "expires_in": {"type": "integer"},
        "scope": {"type": "string"},
        "token_type": {"const": "Bearer"},
    },
}
JWK_FIELDS = {
    "type": "object",
    "properties": {
        "keys": {
            "type": "array",
            "items": {"required": ["kty", "use", "n", "e", "kid", "x5t", "x5c", "alg"]},
        }
    },
    "required": ["keys"],
}


def _ref(uri: str, *pointer: str) -> dict[str, str]:
    escaped = "/".join(part.replace("~", "~0").replace("/", "~1") for part in pointer)
    return {"$ref": f"{uri}#/{escaped}"}


@dataclass
class Contract:
    """Picks the reference schema for a response and validates its body."""

    registry: Registry[Any]
    oauth_doc: dict[str, Any]
    checked: list[str] = field(default_factory=list)

    def validate(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        _, tenant_segment, rest = [*request.url.path.split("/", 2), "", ""][:3]
        if tenant_segment == "__admin" or rest.startswith("__admin"):
            return  # the simulator's own endpoints, not Auth0's
        schema = self.schema_for(request.method, rest, response.status_code)
        body = response.json()
        Draft202012Validator(schema, registry=self.registry).validate(body)
        if rest.startswith("api/v2/") and response.status_code >= 400:
            assert body["statusCode"] == response.status_code
        self.checked.append(f"{request.method} {rest} {response.status_code}")

    def schema_for(self, method: str, rest: str, status: int) -> dict[str, Any]:
        if rest == "oauth/token":
            return self._token_schema(status)
        if rest == ".well-known/jwks.json":
            if status != 200:
                return MANAGEMENT_ERROR
            return {
                "allOf": [
                    _ref(KEYS_URI, "components", "schemas", "GetCustomSigningKeysResponseContent"),
                    JWK_FIELDS,
                ]
            }
        if rest == ".well-known/openid-configuration":
            return {"type": "object", "required": ["issuer", "jwks_uri", "token_endpoint"]}
        if rest.startswith("api/v2/") and status >= 400:
            return MANAGEMENT_ERROR
        signing = "api/v2/keys/signing"
        if (method, status) == ("GET", 200) and rest == signing:
            return _ref(
                KEYS_URI,
                "paths",
                "/keys/signing",
                "get",
                "responses",
                "200",
                "content",
                "application/json",
                "schema",
            )
        if (method, status) == ("POST", 201) and rest == signing + "/rotate":
            return _ref(KEYS_URI, "components", "schemas", "RotateSigningKeysResponseContent")
        if (method, status) == ("GET", 200) and re.fullmatch(signing + "/[^/]+", rest):
            return _ref(KEYS_URI, "components", "schemas", "GetSigningKeysResponseContent")
        if (method, status) == ("PUT", 200) and re.fullmatch(signing + "/[^/]+/revoke", rest):
            return _ref(KEYS_URI, "components", "schemas", "RevokedSigningKeysResponseContent")
        raise AssertionError(f"no reference schema for {method} {rest} -> {status}")

    def _token_schema(self, status: int) -> dict[str, Any]:
        responses = self.oauth_doc["paths"]["/oauth/token"]["post"]["responses"]
        declared = responses.get(str(status))
        assert declared is not None, f"the OAuth reference declares no {status} for /oauth/token"
        if "$ref" in declared:
            name = declared["$ref"].rsplit("/", 1)[1]
            declared = self.oauth_doc["components"]["responses"][name]
            pointer = ("components", "responses", name)
        else:
            pointer = ("paths", "/oauth/token", "post", "responses", str(status))
        local = TOKEN_OK if status == 200 else OAUTH_ERROR
        if "content" not in declared:
            return local
        reference = _ref(OAUTH_URI, *pointer, "content", "application/json", "schema")
        return {"allOf": [reference, local]}


@pytest.fixture(scope="module")
def contract() -> Contract:
    documents = json.loads(CONTRACT_FIXTURE.read_text())
    keys_doc, oauth_doc = documents["keys_api"], documents["oauth_api"]
    registry: Registry[Any] = Registry().with_resources(
        [
            (KEYS_URI, Resource.from_contents(keys_doc, default_specification=DRAFT202012)),
            (OAUTH_URI, Resource.from_contents(oauth_doc, default_specification=DRAFT202012)),
        ]
    )
    return Contract(registry, oauth_doc)


# --- servers and clients ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_pool() -> KeyPool:
    pool = KeyPool(4)
    pool.fill()
    return pool


@pytest.fixture(scope="module")
def server(key_pool: KeyPool) -> Iterator[SimulatorServer]:
    simulator = Simulator(clock=lambda: FROZEN_NOW, key_pool=key_pool)
    with SimulatorServer(simulator) as running:
        yield running


@pytest.fixture
def http(contract: Contract) -> Iterator[httpx.Client]:
    with httpx.Client(event_hooks={"response": [contract.validate]}, timeout=10) as client:
        yield client


@pytest.fixture
def raw_http() -> Iterator[httpx.Client]:
    """No contract checks: for responses that are broken on purpose."""
    with httpx.Client(timeout=10) as client:
        yield client


@dataclass
class Harness:
    tenant: SimulatedTenant
    base: str
    http: httpx.Client

    @property
    def audience(self) -> str:
        return f"{self.base}/api/v2/"

    def token_response(self, **params: str) -> httpx.Response:
        body = {
            "grant_type": "client_credentials",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "audience": self.audience,
            **params,
        }
        return self.http.post(f"{self.base}/oauth/token", json=body)

    def token(self, client_id: str = DEFAULT_CLIENT_ID, secret: str = DEFAULT_CLIENT_SECRET) -> str:
        response = self.token_response(client_id=client_id, client_secret=secret)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def call(self, method: str, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, f"{self.base}{path}", headers=headers)

    def keys(self, token: str) -> list[dict[str, Any]]:
        response = self.call("GET", "/api/v2/keys/signing", token)
        assert response.status_code == 200, response.text
        return list(response.json())

    def by_kid(self, token: str) -> dict[str, dict[str, Any]]:
        return {key["kid"]: key for key in self.keys(token)}


def _harness(server: SimulatorServer, client: httpx.Client, **options: Any) -> Harness:
    tenant = server.simulator.add_tenant(**options)
    return Harness(tenant, server.tenant_url(tenant.name), client)


@pytest.fixture
def t(server: SimulatorServer, http: httpx.Client) -> Harness:
    """A fresh tenant (unlimited rate limits) and a contract-checking client."""
    return _harness(server, http)


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    header, claims, signature = token.split(".")
    return (
        json.loads(_b64url_decode(header)),
        json.loads(_b64url_decode(claims)),
        f"{header}.{claims}".encode(),
        _b64url_decode(signature),
    )


# --- token endpoint --------------------------------------------------------------------------


def test_token_is_an_rs256_jwt_signed_by_the_current_key(t: Harness) -> None:
    response = t.token_response()
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 86400
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "read:signing_keys create:signing_keys update:signing_keys"
    assert response.headers["cache-control"] == "no-store"
    header, claims, signed, signature = _jwt_parts(body["access_token"])
    assert header == {"alg": "RS256", "typ": "JWT", "kid": t.tenant.current_kid}
    assert claims["aud"] == t.audience
    assert claims["iss"] == f"{t.base}/"
    assert claims["scope"] == body["scope"]
    assert claims["exp"] - claims["iat"] == 86400
    assert claims["iat"] == int(FROZEN_NOW)
    current = t.by_kid(body["access_token"])[t.tenant.current_kid]
    public_key = _cert(current["cert"]).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())  # raises if bad


def test_token_accepts_form_bodies_and_basic_auth(t: Harness) -> None:
    form = t.http.post(
        f"{t.base}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": READONLY_CLIENT_ID,
            "client_secret": READONLY_CLIENT_SECRET,
            "audience": t.audience,
        },
    )
    assert form.status_code == 200
    assert form.json()["scope"] == "read:signing_keys"
    basic = t.http.post(
        f"{t.base}/oauth/token",
        data={"grant_type": "client_credentials", "audience": t.audience},
        auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
    )
    assert basic.status_code == 200


@pytest.mark.parametrize(
    ("params", "status", "error", "description"),
    [
        ({"grant_type": ""}, 400, "invalid_request", "Missing required parameter: grant_type"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", "Unsupported grant type"),
        ({"client_secret": ""}, 400, "invalid_request", "Missing required parameter"),
        ({"client_secret": "wrong"}, 401, "invalid_client", "Client authentication failed"),
        ({"client_id": "nobody"}, 401, "invalid_client", "Client authentication failed"),
        ({"audience": ""}, 403, "access_denied", "No audience parameter was provided"),
        ({"audience": "https://elsewhere/api/v2/"}, 403, "access_denied",
         'Client is not authorized to access "https://elsewhere/api/v2/". You need to create'),
    ],
)  # fmt: skip
def test_token_errors(
    t: Harness, params: dict[str, str], status: int, error: str, description: str
) -> None:
    response = t.token_response(**params)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"].startswith(description)


def test_token_401_can_be_access_denied_style(t: Harness) -> None:
    t.tenant.unauthorized_error = "access_denied"
    response = t.token_response(client_secret="wrong")
    assert response.status_code == 401
    assert response.json() == {"error": "access_denied", "error_description": "Unauthorized"}


def test_token_secret_is_not_echoed(t: Harness) -> None:
    response = t.token_response(client_secret="s3cret-value")
    assert "s3cret-value" not in response.text


# --- reading keys ----------------------------------------------------------------------------


def test_fresh_tenant_lists_a_current_and_a_next_key(t: Harness, server: SimulatorServer) -> None:
    keys = t.keys(t.token())
    assert [(k["current"], k["next"], k["previous"], k["revoked"]) for k in keys] == [
        (True, False, False, False),
        (False, True, False, False),
    ]
    current, upcoming = keys
    assert current["current_since"] == "2027-01-15T08:00:00.000Z"
    assert "current_since" not in upcoming and "current_until" not in current
    assert "revoked_at" not in current
    for key in keys:
        assert KID.match(key["kid"])
        certificate = _cert(key["cert"])
        der = certificate.public_bytes(Encoding.DER)
        sha1 = hashlib.sha1(der).hexdigest().upper()
        assert key["thumbprint"] == sha1
        assert key["fingerprint"] == ":".join(sha1[i : i + 2] for i in range(0, 40, 2))
        assert "\r\n" in key["cert"] and "\n" not in key["cert"].replace("\r\n", "")
        assert key["cert"].startswith("-----BEGIN CERTIFICATE-----\r\n")
        assert key["cert"].endswith("\r\n-----END CERTIFICATE-----")
        assert key["pkcs7"].startswith("-----BEGIN PKCS7-----\r\n")
        (bundled,) = pkcs7.load_pem_pkcs7_certificates(key["pkcs7"].replace("\r\n", "\n").encode())
        assert bundled == certificate
        common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert common_name == server.url.removeprefix("http://")
        validity = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        assert 3650 <= validity.days <= 3653
    assert parse_signing_keys(keys)[0].thumbprint_ok  # keywatch's own parser agrees


def test_get_one_key_and_404(t: Harness) -> None:
    token = t.token()
    kid = t.tenant.next_kid
    one = t.call("GET", f"/api/v2/keys/signing/{kid}", token)
    assert one.status_code == 200
    assert one.json() == t.by_kid(token)[kid]
    missing = t.call("GET", "/api/v2/keys/signing/doesNotExist123456789", token)
    assert missing.status_code == 404
    assert missing.json() == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "Signing key not found.",
        "errorCode": "inexistent_signing_key",
    }


def test_every_api_response_carries_rate_limit_headers(t: Harness) -> None:
    token = t.token()
    for response in (
        t.call("GET", "/api/v2/keys/signing", token),
        t.call("GET", "/api/v2/keys/signing", None),
        t.call("GET", "/api/v2/keys/signing/nope", token),
        t.call("GET", "/api/v2/no/such/endpoint", token),
    ):
        assert int(response.headers["x-ratelimit-limit"]) == 1_000_000
        assert int(response.headers["x-ratelimit-remaining"]) > 999_000
        assert int(response.headers["x-ratelimit-reset"]) >= int(FROZEN_NOW)


# --- rotate and revoke -----------------------------------------------------------------------


def test_rotate_moves_current_to_previous_and_next_to_current(t: Harness) -> None:
    token = t.token()
    old_current, old_next = t.tenant.current_kid, t.tenant.next_kid
    t.tenant.advance_clock(3600)
    response = t.call("POST", "/api/v2/keys/signing/rotate", token)
    assert response.status_code == 201
    new_next = response.json()["kid"]
    keys = t.by_kid(token)  # the token was signed by the old current key, now previous: valid
    assert keys[new_next]["cert"] == response.json()["cert"]
    assert new_next not in (old_current, old_next)
    assert keys[old_current]["previous"] and not keys[old_current]["current"]
    assert keys[old_current]["current_until"] == "2027-01-15T09:00:00.000Z"
    assert keys[old_next]["current"] and not keys[old_next]["next"]
    assert keys[old_next]["current_since"] == "2027-01-15T09:00:00.000Z"
    assert keys[new_next]["next"] and not keys[new_next]["current"]
    assert (t.tenant.current_kid, t.tenant.next_kid) == (old_next, new_next)
    t.call("POST", "/api/v2/keys/signing/rotate", token)
    assert t.tenant.previous_kids == [old_current, old_next]  # Auth0 allows several


def test_revoke_only_previous_keys(t: Harness) -> None:
    token = t.token()
    for kid in (t.tenant.current_kid, t.tenant.next_kid):
        refused = t.call("PUT", f"/api/v2/keys/signing/{kid}/revoke", token)
        assert refused.status_code == 400
        assert refused.json() == {
            "statusCode": 400,
            "error": "Bad Request",
            "message": "Only previous keys can be revoked",
        }
    unknown = t.call("PUT", "/api/v2/keys/signing/unknownKid12345678901/revoke", token)
    assert unknown.status_code == 404
    assert unknown.json()["message"] == "Signing key not found."
    previous = t.tenant.current_kid
    t.tenant.rotate()
    t.tenant.advance_clock(60)
    token = t.token()  # signed by the new current key, so it survives the revocation
    revoked = t.call("PUT", f"/api/v2/keys/signing/{previous}/revoke", token)
    assert revoked.status_code == 200
    key = t.by_kid(token)[previous]
    assert revoked.json() == {"kid": previous, "cert": key["cert"]}
    assert key["revoked"] and not key["previous"]
    assert key["revoked_at"] == "2027-01-15T08:01:00.000Z"
    assert ISO_MILLIS.match(key["current_until"])
    again = t.call("PUT", f"/api/v2/keys/signing/{previous}/revoke", token)
    assert again.status_code == 400


def test_only_the_last_three_revoked_keys_stay_listed(t: Harness) -> None:
    revoked = []
    for minute in range(4):
        t.tenant.advance_clock(60 * minute)
        previous = t.tenant.current_kid
        t.tenant.rotate()
        t.tenant.revoke(previous)
        revoked.append(previous)
    assert t.tenant.revoked_kids == revoked[1:]
    listed = t.by_kid(t.token())
    assert revoked[0] not in listed
    assert [kid for kid, key in listed.items() if key["revoked"]] == revoked[1:]


def test_python_api_revoke_errors(t: Harness) -> None:
    with pytest.raises(RevokeNotAllowed, match="only previous keys"):
        t.tenant.revoke(t.tenant.current_kid)
    with pytest.raises(UnknownSigningKey):
        t.tenant.revoke("missing")


# --- JWKS ------------------------------------------------------------------------------------


def test_jwks_publishes_non_revoked_keys_with_proper_fields(t: Harness) -> None:
    first = t.tenant.current_kid
    t.tenant.rotate()
    second = t.tenant.current_kid
    t.tenant.rotate()
    t.tenant.revoke(first)
    response = t.http.get(f"{t.base}/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == (
        "public, max-age=15, stale-while-revalidate=15, stale-if-error=86400"
    )
    assert response.headers["x-ratelimit-limit"]
    jwks = response.json()["keys"]
    published = [jwk["kid"] for jwk in jwks]
    assert published == [t.tenant.current_kid, t.tenant.next_kid, second]
    listed = t.by_kid(t.token())
    for jwk in jwks:
        assert (jwk["kty"], jwk["use"], jwk["alg"], jwk["e"]) == ("RSA", "sig", "RS256", "AQAB")
        der = base64.b64decode(jwk["x5c"][0])
        assert _cert(listed[jwk["kid"]]["cert"]).public_bytes(Encoding.DER) == der
        assert _b64url_decode(jwk["x5t"]) == hashlib.sha1(der).digest()
        public_key = x509.load_der_x509_certificate(der).public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        assert int.from_bytes(_b64url_decode(jwk["n"]), "big") == public_key.public_numbers().n


# --- authentication and scopes ---------------------------------------------------------------


def test_token_signed_by_a_revoked_key_is_rejected(t: Harness) -> None:
    old_token = t.token()
    signer = t.tenant.current_kid
    t.tenant.rotate()
    assert t.call("GET", "/api/v2/keys/signing", old_token).status_code == 200
    t.tenant.revoke(signer)
    rejected = t.call("GET", "/api/v2/keys/signing", old_token)
    assert rejected.status_code == 401
    assert rejected.json() == {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": INVALID_SIGNATURE,
    }
    assert t.call("GET", "/api/v2/keys/signing", t.token()).status_code == 200


def test_unauthenticated_requests(t: Harness, server: SimulatorServer, http: httpx.Client) -> None:
    header, _, signature = t.token().split(".")
    forged_claims = base64.urlsafe_b64encode(b'{"scope":"read:signing_keys","exp":9999999999}')
    forged = f"{header}.{forged_claims.decode().rstrip('=')}.{signature}"
    other = _harness(server, http)
    cases = {
        None: "Missing authentication",
        "not-a-jwt": "Invalid token",
        forged: INVALID_SIGNATURE,
        other.token(): INVALID_SIGNATURE,  # another tenant's key
    }
    for bearer, message in cases.items():
        response = t.call("GET", "/api/v2/keys/signing", bearer)
        assert (response.status_code, response.json()["message"]) == (401, message), bearer


def test_expired_token(t: Harness) -> None:
    token = t.token()
    t.tenant.advance_clock(86_400)
    response = t.call("GET", "/api/v2/keys/signing", token)
    assert response.status_code == 401
    assert response.json() == {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": EXPIRED,
        "attributes": {"error": EXPIRED},
    }


def test_scopes(t: Harness) -> None:
    readonly = t.token(READONLY_CLIENT_ID, READONLY_CLIENT_SECRET)
    noscope = t.token(NOSCOPE_CLIENT_ID, NOSCOPE_CLIENT_SECRET)
    assert t.call("GET", "/api/v2/keys/signing", readonly).status_code == 200
    expectations = [
        (noscope, "GET", "/api/v2/keys/signing", READ_403),
        (noscope, "GET", f"/api/v2/keys/signing/{t.tenant.current_kid}", READ_403),
        (readonly, "POST", "/api/v2/keys/signing/rotate", ROTATE_403),
        (readonly, "PUT", f"/api/v2/keys/signing/{t.tenant.current_kid}/revoke", REVOKE_403),
    ]
    for token, method, path, message in expectations:
        response = t.call(method, path, token)
        assert response.status_code == 403
        assert response.json() == {
            "statusCode": 403,
            "error": "Forbidden",
            "message": message,
            "errorCode": "insufficient_scope",
        }
    partial = t.tenant.name + "-rotator"
    t.tenant.add_client(partial, "secret", ["create:signing_keys"])
    response = t.call("POST", "/api/v2/keys/signing/rotate", t.token(partial, "secret"))
    assert response.status_code == 403  # rotate needs create AND update


# --- rate limits -----------------------------------------------------------------------------


def test_free_preset_global_bucket(server: SimulatorServer, http: httpx.Client) -> None:
    h = _harness(server, http, preset="free")
    token = h.token()
    first = h.call("GET", "/api/v2/keys/signing", token)
    second = h.call("GET", "/api/v2/keys/signing", token)
    limited = h.call("GET", "/api/v2/keys/signing", token)
    assert [first.status_code, second.status_code, limited.status_code] == [200, 200, 429]
    assert [r.headers["x-ratelimit-remaining"] for r in (first, second, limited)] == ["1", "0", "0"]
    assert first.headers["x-ratelimit-limit"] == "2"
    assert limited.json() == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": "Global limit has been reached",
        "errorCode": "too_many_requests",
    }
    assert int(limited.headers["x-ratelimit-reset"]) == math.ceil(FROZEN_NOW + 0.5)
    assert "retry-after" not in limited.headers
    h.tenant.advance_clock(0.5)  # 2 per second: one request back
    assert h.call("GET", "/api/v2/keys/signing", token).status_code == 200
    h.tenant.retry_after = True
    again = h.call("GET", "/api/v2/keys/signing", token)
    assert (again.status_code, again.headers["retry-after"]) == (429, "1")


def test_rotate_bucket_is_five_per_day(server: SimulatorServer, http: httpx.Client) -> None:
    h = _harness(server, http, preset="enterprise")
    token = h.token()
    statuses = [h.call("POST", "/api/v2/keys/signing/rotate", token).status_code for _ in range(6)]
    assert statuses == [201] * 5 + [429]
    limited = h.call("POST", "/api/v2/keys/signing/rotate", token)
    assert limited.headers["x-ratelimit-limit"] == "5"
    assert int(limited.headers["x-ratelimit-reset"]) == math.ceil(FROZEN_NOW + 86_400 / 5)
    assert h.call("GET", "/api/v2/keys/signing", token).status_code == 200  # other bucket
    h.tenant.advance_clock(86_400 / 5 + 1)
    assert h.call("POST", "/api/v2/keys/signing/rotate", token).status_code == 201


def test_token_bucket(server: SimulatorServer, http: httpx.Client) -> None:
    h = _harness(server, http, preset="free")
    statuses = [h.token_response().status_code for _ in range(31)]
    assert statuses == [200] * 30 + [429]
    limited = h.token_response()
    assert limited.json() == {
        "error": "too_many_requests",
        "error_description": "Rate limit exceeded. Please retry after some time.",
    }


# --- fault injection -------------------------------------------------------------------------


def test_status_faults_then_recovery(t: Harness) -> None:
    token = t.token()
    t.tenant.fail_next(2, status=503)
    t.tenant.fail_next(1, status=429, retry_after=7)
    responses = [t.call("GET", "/api/v2/keys/signing", token) for _ in range(4)]
    assert [r.status_code for r in responses] == [503, 503, 429, 200]
    assert responses[0].json() == {
        "statusCode": 503,
        "error": "Service Unavailable",
        "message": "Service Unavailable",
    }
    assert responses[2].headers["retry-after"] == "7"
    assert responses[2].headers["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in responses[0].headers


def test_slow_fault_delays_the_response(t: Harness) -> None:
    token = t.token()
    t.tenant.slow_next(1, delay=0.2)
    started = time.monotonic()
    assert t.call("GET", "/api/v2/keys/signing", token).status_code == 200
    assert time.monotonic() - started >= 0.2
    t.tenant.slow_next(1, delay=0.5)
    with pytest.raises(httpx.ReadTimeout):
        t.http.get(f"{t.base}/api/v2/keys/signing", timeout=0.1)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("wrong_type", "expected a JSON array"),
        ("flag_string", "expected a boolean"),
        ("missing_field", "thumbprint: missing"),
        ("bad_cert", "not a PEM X.509 certificate"),
    ],
)
def test_malformed_list_bodies_are_rejected_by_keywatchs_parser(
    t: Harness, raw_http: httpx.Client, kind: str, problem: str
) -> None:
    token = t.token()
    t.tenant.malform_next(1, kind=kind)
    t.http = raw_http
    assert t.call("GET", "/api/v2/keys/signing").status_code == 401  # errors do not use it up
    body = t.call("GET", "/api/v2/keys/signing", token).json()
    with pytest.raises(MalformedResponse, match=problem):
        parse_signing_keys(body)
    parse_signing_keys(t.call("GET", "/api/v2/keys/signing", token).json())  # back to normal


def test_malformed_html_truncated_and_suspicious_bodies(t: Harness, raw_http: httpx.Client) -> None:
    token = t.token()
    t.http = raw_http
    t.tenant.malform_next(1, kind="html")
    html = t.call("GET", "/api/v2/keys/signing", token)
    assert (html.status_code, html.headers["content-type"]) == (200, "text/html; charset=utf-8")
    t.tenant.malform_next(1, kind="truncated")
    with pytest.raises(json.JSONDecodeError):
        t.call("GET", "/api/v2/keys/signing", token).json()
    t.tenant.malform_next(1, kind="empty")
    assert t.call("GET", "/api/v2/keys/signing", token).json() == []
    t.tenant.malform_next(1, kind="no_current")
    assert not any(key["current"] for key in t.call("GET", "/api/v2/keys/signing", token).json())
    t.tenant.malform_next(1, kind="bad_thumbprint")
    (first, *_) = parse_signing_keys(t.call("GET", "/api/v2/keys/signing", token).json())
    assert not first.thumbprint_ok


def test_jwks_faults(t: Harness, raw_http: httpx.Client) -> None:
    previous = t.tenant.current_kid
    t.tenant.rotate()
    t.tenant.revoke(previous)
    jwks_url = f"{t.base}/.well-known/jwks.json"
    t.tenant.malform_next(1, kind="stale", target="jwks")
    assert previous in [key["kid"] for key in raw_http.get(jwks_url).json()["keys"]]
    t.tenant.malform_next(1, kind="no_current", target="jwks")
    published = [key["kid"] for key in raw_http.get(jwks_url).json()["keys"]]
    assert t.tenant.current_kid not in published and t.tenant.next_kid in published
    t.tenant.fail_next(1, status=502, target="jwks")
    assert raw_http.get(jwks_url).status_code == 502
    assert previous not in [key["kid"] for key in raw_http.get(jwks_url).json()["keys"]]


def test_token_outage(t: Harness) -> None:
    t.tenant.token_outage()
    for _ in range(3):
        response = t.token_response()
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
    t.tenant.end_token_outage()
    assert t.token_response().status_code == 200


def test_fault_arguments_are_validated(t: Harness) -> None:
    with pytest.raises(ValueError, match="unknown malformed kind 'weird'"):
        t.tenant.malform_next(1, kind="weird")
    with pytest.raises(ValueError, match="does not apply to the token endpoint"):
        t.tenant.malform_next(1, kind="bad_cert", target="token")
    with pytest.raises(ValueError, match="HTTP error status"):
        t.tenant.fail_next(1, status=200)
    with pytest.raises(ValueError, match="positive integer"):
        t.tenant.fail_next(0)


# --- admin endpoints -------------------------------------------------------------------------


def test_admin_endpoints(t: Harness, server: SimulatorServer, raw_http: httpx.Client) -> None:
    admin = f"{t.base}/__admin"
    before = t.tenant.current_kid
    rotated = raw_http.post(f"{admin}/rotate")
    assert rotated.status_code == 201
    assert rotated.json()["kid"] == t.tenant.next_kid
    assert raw_http.post(f"{admin}/keys/{before}/revoke").status_code == 200
    assert t.tenant.revoked_kids == [before]
    assert raw_http.post(f"{admin}/keys/{t.tenant.current_kid}/revoke").status_code == 400
    assert raw_http.post(f"{admin}/keys/unknown/revoke").status_code == 404
    state = raw_http.get(f"{admin}/state").json()
    assert (state["current_kid"], state["revoked_kids"]) == (t.tenant.current_kid, [before])

    assert (
        raw_http.post(f"{admin}/faults/status", json={"count": 1, "status": 500}).status_code == 201
    )
    assert raw_http.post(f"{admin}/faults/malformed", json={"kind": "empty"}).status_code == 201
    assert (
        raw_http.post(f"{admin}/faults/slow", json={"delay": 0, "target": "jwks"}).status_code
        == 201
    )
    assert raw_http.post(f"{admin}/faults/token-outage", json={"status": 500}).status_code == 201
    faults = raw_http.get(f"{admin}/faults").json()
    assert faults["api"]["status"] == [{"status": 500, "retry_after": None, "remaining": 1}]
    assert faults["token"]["status"] == [{"status": 500, "retry_after": None, "remaining": None}]
    assert t.token_response().status_code == 500
    assert raw_http.delete(f"{admin}/faults/token-outage").status_code == 200
    token = t.token()
    assert t.call("GET", "/api/v2/keys/signing", token).status_code == 500
    assert raw_http.delete(f"{admin}/faults").status_code == 200
    assert t.keys(token)  # the pending malformed fault was cleared too

    bad = raw_http.post(f"{admin}/faults/malformed", json={"kind": "weird"})
    assert bad.status_code == 400 and "unknown malformed kind" in bad.json()["error"]
    assert raw_http.post(f"{admin}/faults/status", content=b"[").status_code == 400

    assert raw_http.post(f"{admin}/clock/advance", json={"seconds": 86_400}).status_code == 200
    assert t.call("GET", "/api/v2/keys/signing", token).json()["message"] == EXPIRED
    limits = raw_http.put(f"{admin}/rate-limits", json={"preset": "free", "retry_after": True})
    assert limits.json() == {"preset": "free", "retry_after": True}
    assert t.tenant.rate_limits.name == "free"

    created = raw_http.post(f"{server.url}/__admin/tenants", json={"name": f"{t.tenant.name}-b"})
    assert created.status_code == 201
    assert created.json()["url"] == server.tenant_url(f"{t.tenant.name}-b")
    names = [
        item["name"] for item in raw_http.get(f"{server.url}/__admin/tenants").json()["tenants"]
    ]
    assert f"{t.tenant.name}-b" in names
    assert (
        raw_http.post(f"{server.url}/__admin/tenants", json={"name": t.tenant.name}).status_code
        == 400
    )


# --- tenants and the server ------------------------------------------------------------------


def test_tenants_are_isolated(server: SimulatorServer, http: httpx.Client) -> None:
    first, second = _harness(server, http), _harness(server, http)
    second_kids = (second.tenant.current_kid, second.tenant.next_kid)
    first.tenant.rotate()
    first.tenant.fail_next(5, status=503)
    assert (second.tenant.current_kid, second.tenant.next_kid) == second_kids
    assert second.call("GET", "/api/v2/keys/signing", second.token()).status_code == 200
    wrong_audience = second.token_response(audience=first.audience)
    assert wrong_audience.status_code == 403


def test_unknown_tenant_is_404(server: SimulatorServer, http: httpx.Client) -> None:
    response = http.get(f"{server.url}/no-such-tenant/.well-known/jwks.json")
    assert response.status_code == 404


def test_tenant_names(key_pool: KeyPool) -> None:
    simulator = Simulator(tenants=2, key_pool=key_pool)
    assert [tenant.name for tenant in simulator.tenants] == ["tenant-1", "tenant-2"]
    assert simulator.add_tenant("acme-prod").name == "acme-prod"
    assert simulator.add_tenant().name == "tenant-4"
    with pytest.raises(ValueError, match="already exists"):
        simulator.add_tenant("acme-prod")
    with pytest.raises(ValueError, match="must be 1-63 characters"):
        simulator.add_tenant("__admin")


def test_pool_keys_still_get_unique_certificates() -> None:
    simulator = Simulator(key_pool_size=1)
    tenant = simulator.add_tenant()
    tenant.rotate()
    keys = tenant.keys_json()
    assert len({key["thumbprint"] for key in keys}) == 3
    public_keys = [_cert(str(key["cert"])).public_key() for key in keys]
    moduli = {key.public_numbers().n for key in public_keys if isinstance(key, rsa.RSAPublicKey)}
    assert len(moduli) == 1  # one pooled RSA key behind three certificates


def test_server_lifecycle(key_pool: KeyPool) -> None:
    server = SimulatorServer(Simulator(tenants=1, key_pool=key_pool))
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    with server:
        assert httpx.get(f"{server.url}/__admin/health").json()["status"] == "ok"  # no retry
        assert server.tenant_url("tenant-1") == f"{server.url}/tenant-1"
        with pytest.raises(KeyError):
            server.tenant_url("tenant-9")
        thread = server._thread
    assert thread is not None and not thread.is_alive()
    server.stop()  # idempotent


def test_run_simulator_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_simulator("nonsense", 1) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err
    assert run_simulator("127.0.0.1:0", 1, preset="gold") == 2
    assert "unknown rate-limit preset 'gold'" in capsys.readouterr().err


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    output = b""
    deadline = time.monotonic() + timeout
    while marker not in output:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise AssertionError(f"no {marker!r} in simulator output: {output!r}")
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            output += os.read(process.stdout.fileno(), 4096)
    return output


def test_run_simulator_serves_until_sigterm() -> None:
    code = (
        "from monitor.simulator import run_simulator\n"
        "raise SystemExit(run_simulator('127.0.0.1:0', 2))"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        output = _read_until(process, b"Stop with Ctrl-C", timeout=30).decode()
        assert DEFAULT_CLIENT_ID in output and DEFAULT_CLIENT_SECRET in output
        match = re.search(r"http://127\.0\.0\.1:\d+/tenant-2", output)
        assert match is not None
        assert httpx.get(f"{match.group(0)}/.well-known/jwks.json").status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_contract_hook_rejects_a_broken_body(t: Harness) -> None:
    """Guards the hook itself: a body the reference forbids fails the request."""
    token = t.token()
    t.tenant.malform_next(1, kind="missing_field")
    with pytest.raises(ValidationError, match="'thumbprint' is a required property"):
        t.call("GET", "/api/v2/keys/signing", token)


def test_audience_follows_the_host_the_client_used(t: Harness) -> None:
    """Behind another name (docker, localhost) the audience is that name; tokens minted for one
    host are refused at another with Auth0's "Bad audience"."""
    port = t.base.split(":")[2].split("/")[0]
    other_base = f"http://localhost:{port}/{t.tenant.name}"
    minted = t.http.post(
        f"{t.base}/oauth/token",
        headers={"Host": f"localhost:{port}"},
        json={
            "grant_type": "client_credentials",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "audience": f"{other_base}/api/v2/",
        },
    )
    assert minted.status_code == 200
    token = minted.json()["access_token"]
    assert _jwt_parts(token)[1]["iss"] == f"{other_base}/"
    via_other_host = t.http.get(
        f"{t.base}/api/v2/keys/signing",
        headers={"Host": f"localhost:{port}", "Authorization": f"Bearer {token}"},
    )
    assert via_other_host.status_code == 200
    refused = t.call("GET", "/api/v2/keys/signing", token)
    assert refused.status_code == 401
    assert refused.json()["message"] == f"Bad audience: {other_base}/api/v2/"


def test_admin_state_counts_the_requests_served_by_endpoint(t: Harness) -> None:
    token = t.token()
    t.keys(token)
    t.keys(token)
    kid = t.keys(token)[0]["kid"]
    assert t.call("GET", f"/api/v2/keys/signing/{kid}", token).status_code == 200
    state = t.http.get(f"{t.base}/__admin/state").json()
    assert state["requests"] == {"token": 1, "list_keys": 3, "get_key": 1}
