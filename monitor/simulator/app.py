"""The Starlette app that serves every tenant of a ``Simulator`` over HTTP.

Auth0 routes, under each tenant's base ``/<tenant>``:

    POST /oauth/token                         client credentials (JSON, form or Basic auth)
    GET  /api/v2/keys/signing                 list            (read:signing_keys)
    GET  /api/v2/keys/signing/{kid}           get one         (read:signing_keys)
    POST /api/v2/keys/signing/rotate          rotate, 201     (create: + update:signing_keys)
    PUT  /api/v2/keys/signing/{kid}/revoke    revoke          (update:signing_keys)
    GET  /.well-known/jwks.json               public keys
    GET  /.well-known/openid-configuration    discovery (issuer, jwks_uri, token_endpoint)

Admin routes for tests and demos (NO authentication: never expose them beyond loopback):

    GET    /__admin/health  ·  GET|POST /__admin/tenants
    GET    /<tenant>/__admin/state
    POST   /<tenant>/__admin/rotate  ·  POST /<tenant>/__admin/keys/{kid}/revoke
    GET|DELETE /<tenant>/__admin/faults
    POST   /<tenant>/__admin/faults/status|slow|malformed
    POST|DELETE /<tenant>/__admin/faults/token-outage
    POST   /<tenant>/__admin/clock/advance  ·  PUT /<tenant>/__admin/rate-limits
    POST   /<tenant>/__admin/clients

A Management API request goes through: injected delay, injected status, the global bucket,
authentication, scope, the endpoint bucket (rotate), the operation, an injected malformation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from monitor.simulator.faults import JSON_MEDIA_TYPE, MALFORMED_KINDS, StatusFault, render_malformed
from monitor.simulator.ratelimit import RateDecision
from monitor.simulator.tenant import (
    CREATE_SCOPE,
    READ_SCOPE,
    UPDATE_SCOPE,
    RevokeNotAllowed,
    SimulatedTenant,
    Simulator,
    TokenRejected,
    Unauthenticated,
    UnknownSigningKey,
)

JWKS_CACHE_CONTROL = "public, max-age=15, stale-while-revalidate=15, stale-if-error=86400"
EXPOSED_HEADERS = "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
GLOBAL_LIMIT_MESSAGE = "Global limit has been reached"
ENDPOINT_LIMIT_MESSAGE = (
    "Too many requests. Check the X-RateLimit-Limit, X-RateLimit-Remaining and "
    "X-RateLimit-Reset headers."
)
TOKEN_LIMIT_DESCRIPTION = "Rate limit exceeded. Please retry after some time."
SIGNING_KEY_NOT_FOUND = "Signing key not found."
ONLY_PREVIOUS_REVOCABLE = "Only previous keys can be revoked"  # invented: Auth0 documents none


def json_response(
    payload: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status_code=status, media_type=JSON_MEDIA_TYPE, headers=headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def management_error(
    status: int, message: str, *, error_code: str | None = None, attributes: bool = False
) -> dict[str, object]:
    """Auth0's Management API error body."""
    body: dict[str, object] = {"statusCode": status, "error": _reason(status), "message": message}
    if error_code:
        body["errorCode"] = error_code
    if attributes:
        body["attributes"] = {"error": message}
    return body


def _token_error_code(status: int) -> tuple[str, str]:
    codes = {
        400: ("invalid_request", "Bad Request"),
        401: ("invalid_client", "Client authentication failed"),
        403: ("access_denied", "Access denied"),
        429: ("too_many_requests", TOKEN_LIMIT_DESCRIPTION),
        503: ("temporarily_unavailable", "The service is temporarily unavailable"),
    }
    return codes.get(
        status, ("server_error" if status >= 500 else "invalid_request", _reason(status))
    )


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, error_code: str | None = None) -> None:
        self.status = status
        self.message = message
        self.error_code = error_code
        super().__init__(message)


class _AdminError(Exception):
    """A bad admin request; becomes 400 (or ``status``) with ``{"error": message}``."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Operation:
    scopes: frozenset[str]
    scope_message: str
    endpoint_bucket: str | None = None
    read: bool = False  # malformed faults replace successful reads only


READ = Operation(
    frozenset({READ_SCOPE}), "Insufficient scope, expected any of: read:signing_keys", read=True
)
ROTATE = Operation(
    frozenset({CREATE_SCOPE, UPDATE_SCOPE}),
    "Insufficient scope; expected create:signing_keys and update:signing_keys.",
    endpoint_bucket="rotate",
)
REVOKE = Operation(
    frozenset({UPDATE_SCOPE}), "Insufficient scope; expected any of: update:signing_keys."
)

OperationResult = tuple[int, Any]
OperationHandler = Callable[[SimulatedTenant, Request], Awaitable[OperationResult]]


def _retry_after_header(seconds: float) -> str:
    return str(max(0, math.ceil(seconds)))


def _tighter(first: RateDecision, second: RateDecision) -> RateDecision:
    """The decision whose headers a client should pace by: the one with fewer requests left."""
    return second if second.remaining < first.remaining else first


class SimulatorApp:
    """Request handlers bound to one ``Simulator``."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    # --- plumbing --------------------------------------------------------------------------

    async def _tenant(self, request: Request) -> SimulatedTenant:
        tenant = self.simulator.get(request.path_params["tenant"])
        if tenant is None:
            raise HTTPException(404)
        if not tenant.keys_ready:
            await run_in_threadpool(tenant.ensure_keys)
        return tenant

    @staticmethod
    def _request_base(request: Request, tenant: SimulatedTenant) -> str:
        return f"{str(request.base_url).rstrip('/')}/{tenant.name}"

    def _too_many(self, tenant: SimulatedTenant, decision: RateDecision, body: object) -> Response:
        headers = decision.headers()
        if tenant.retry_after:
            headers["retry-after"] = decision.retry_after()
        return json_response(body, 429, headers)

    @staticmethod
    def _fault_headers(tenant: SimulatedTenant, bucket: str, fault: StatusFault) -> dict[str, str]:
        headers = tenant.peek_rate(bucket).headers()
        if fault.status == 429:
            headers["x-ratelimit-remaining"] = "0"
            wait = fault.retry_after if fault.retry_after is not None else 1.0
            headers["x-ratelimit-reset"] = str(math.ceil(tenant.now() + wait))
        if fault.retry_after is not None:
            headers["retry-after"] = _retry_after_header(fault.retry_after)
        return headers

    def _management_fault(self, tenant: SimulatedTenant, fault: StatusFault) -> Response:
        if fault.status == 429:
            body = management_error(429, GLOBAL_LIMIT_MESSAGE, error_code="too_many_requests")
        else:
            body = management_error(fault.status, _reason(fault.status))
        return json_response(body, fault.status, self._fault_headers(tenant, "management", fault))

    # --- Management API --------------------------------------------------------------------

    async def _management(
        self, request: Request, operation: Operation, handler: OperationHandler
    ) -> Response:
        tenant = await self._tenant(request)
        delay = tenant.faults.take_delay("api")
        if delay:
            await asyncio.sleep(delay)
        fault = tenant.faults.take_status("api")
        if fault is not None:
            return self._management_fault(tenant, fault)
        decision = tenant.take_rate("management")
        if not decision.allowed:
            body = management_error(429, GLOBAL_LIMIT_MESSAGE, error_code="too_many_requests")
            return self._too_many(tenant, decision, body)
        base = self._request_base(request, tenant)
        try:
            scopes = tenant.authenticate(
                request.headers.get("authorization"), request_base_url=base
            )
        except Unauthenticated as exc:
            body = management_error(401, exc.message, attributes=exc.expired)
            return json_response(body, 401, decision.headers())
        if not operation.scopes <= scopes:
            body = management_error(403, operation.scope_message, error_code="insufficient_scope")
            return json_response(body, 403, decision.headers())
        if operation.endpoint_bucket:
            endpoint = tenant.take_rate(operation.endpoint_bucket)
            if not endpoint.allowed:
                body = management_error(429, ENDPOINT_LIMIT_MESSAGE, error_code="too_many_requests")
                return self._too_many(tenant, endpoint, body)
            decision = _tighter(decision, endpoint)
        try:
            status, payload = await handler(tenant, request)
        except _ApiError as exc:
            body = management_error(exc.status, exc.message, error_code=exc.error_code)
            return json_response(body, exc.status, decision.headers())
        if operation.read and status == 200:
            kind = tenant.faults.take_malformed("api")
            if kind is not None:
                content, media_type = render_malformed(kind, payload)
                return Response(content, 200, media_type=media_type, headers=decision.headers())
        return json_response(payload, status, decision.headers())

    @staticmethod
    async def _list(tenant: SimulatedTenant, request: Request) -> OperationResult:
        return 200, tenant.keys_json()

    @staticmethod
    async def _get(tenant: SimulatedTenant, request: Request) -> OperationResult:
        try:
            return 200, tenant.key_json(request.path_params["kid"])
        except UnknownSigningKey:
            raise _ApiError(
                404, SIGNING_KEY_NOT_FOUND, error_code="inexistent_signing_key"
            ) from None

    @staticmethod
    async def _rotate(tenant: SimulatedTenant, request: Request) -> OperationResult:
        kid = await run_in_threadpool(tenant.rotate)  # may generate an RSA key
        return 201, {"kid": kid, "cert": tenant.key_json(kid)["cert"]}

    @staticmethod
    async def _revoke(tenant: SimulatedTenant, request: Request) -> OperationResult:
        kid = request.path_params["kid"]
        try:
            cert = tenant.key_json(kid)["cert"]
            tenant.revoke(kid)
        except UnknownSigningKey:
            raise _ApiError(
                404, SIGNING_KEY_NOT_FOUND, error_code="inexistent_signing_key"
            ) from None
        except RevokeNotAllowed:
            raise _ApiError(400, ONLY_PREVIOUS_REVOCABLE) from None
        return 200, {"kid": kid, "cert": cert}

    async def list_keys(self, request: Request) -> Response:
        return await self._management(request, READ, self._list)

    async def get_key(self, request: Request) -> Response:
        return await self._management(request, READ, self._get)

    async def rotate(self, request: Request) -> Response:
        return await self._management(request, ROTATE, self._rotate)

    async def revoke(self, request: Request) -> Response:
        return await self._management(request, REVOKE, self._revoke)

    async def api_not_found(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        headers = tenant.peek_rate("management").headers()
        return json_response(management_error(404, "Not Found"), 404, headers)

    # --- Authentication API ----------------------------------------------------------------

    async def oauth_token(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        delay = tenant.faults.take_delay("token")
        if delay:
            await asyncio.sleep(delay)
        fault = tenant.faults.take_status("token")
        if fault is not None:
            error, description = _token_error_code(fault.status)
            headers = self._fault_headers(tenant, "token", fault)
            body = {"error": error, "error_description": description}
            return json_response(body, fault.status, headers)
        decision = tenant.take_rate("token")
        if not decision.allowed:
            body = {"error": "too_many_requests", "error_description": TOKEN_LIMIT_DESCRIPTION}
            return self._too_many(tenant, decision, body)
        headers = {**decision.headers(), "cache-control": "no-store", "pragma": "no-cache"}
        try:
            params = await _token_params(request)
            token = tenant.issue_token(params, request_base_url=self._request_base(request, tenant))
        except TokenRejected as exc:
            body = {"error": exc.error, "error_description": exc.description}
            return json_response(body, exc.status, headers)
        kind = tenant.faults.take_malformed("token")
        if kind is not None:
            content, media_type = render_malformed(kind, token)
            return Response(content, 200, media_type=media_type, headers=headers)
        return json_response(token, 200, headers)

    async def jwks(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        delay = tenant.faults.take_delay("jwks")
        if delay:
            await asyncio.sleep(delay)
        fault = tenant.faults.take_status("jwks")
        if fault is not None:
            body = management_error(fault.status, _reason(fault.status))
            return json_response(body, fault.status, self._fault_headers(tenant, "jwks", fault))
        decision = tenant.take_rate("jwks")
        if not decision.allowed:
            return self._too_many(tenant, decision, management_error(429, "Too many requests."))
        headers = {
            **decision.headers(),
            "cache-control": JWKS_CACHE_CONTROL,
            "access-control-expose-headers": EXPOSED_HEADERS,
        }
        kind = tenant.faults.take_malformed("jwks")
        payload = tenant.jwks_json(include_revoked=kind == "stale")
        if kind is None or kind == "stale":
            return json_response(payload, 200, headers)
        content, media_type = render_malformed(kind, payload, current_kid=tenant.current_kid)
        return Response(content, 200, media_type=media_type, headers=headers)

    async def openid_configuration(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        base = self._request_base(request, tenant)
        return json_response(
            {
                "issuer": f"{base}/",
                "jwks_uri": f"{base}/.well-known/jwks.json",
                "token_endpoint": f"{base}/oauth/token",
                "grant_types_supported": ["client_credentials"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    # --- admin -----------------------------------------------------------------------------

    async def admin_health(self, request: Request) -> Response:
        return json_response({"status": "ok", "tenants": len(self.simulator.tenants)})

    async def admin_tenants(self, request: Request) -> Response:
        if request.method == "POST":
            body = await _admin_body(request)
            name = _optional_str(body, "name")
            preset = _optional_str(body, "preset")
            try:
                tenant = self.simulator.add_tenant(name, preset=preset)
            except ValueError as exc:
                raise _AdminError(str(exc)) from None
            return json_response({"name": tenant.name, "url": tenant.base_url}, 201)
        tenants = [{"name": t.name, "url": t.base_url} for t in self.simulator.tenants]
        return json_response({"tenants": tenants})

    async def admin_state(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        return json_response(tenant.describe())

    async def admin_rotate(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        kid = await run_in_threadpool(tenant.rotate)
        return json_response({"kid": kid, "current_kid": tenant.current_kid}, 201)

    async def admin_revoke(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        kid = request.path_params["kid"]
        try:
            tenant.revoke(kid)
        except UnknownSigningKey as exc:
            raise _AdminError(str(exc), status=404) from None
        except RevokeNotAllowed as exc:
            raise _AdminError(str(exc)) from None
        return json_response({"kid": kid, "revoked": True})

    async def admin_faults(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        if request.method == "DELETE":
            tenant.clear_faults()
        return json_response(tenant.faults.describe())

    async def admin_fault_status(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        body = await _admin_body(request)
        status = _int(body, "status", 503)
        retry_after = _optional_number(body, "retry_after")
        _apply(
            lambda: tenant.fail_next(
                _count(body), status=status, retry_after=retry_after, target=_target(body)
            )
        )
        return json_response(tenant.faults.describe(), 201)

    async def admin_fault_slow(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        body = await _admin_body(request)
        delay = _optional_number(body, "delay")
        if delay is None:
            raise _AdminError("'delay' (seconds) is required")
        _apply(lambda: tenant.slow_next(_count(body), delay=delay, target=_target(body)))
        return json_response(tenant.faults.describe(), 201)

    async def admin_fault_malformed(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        body = await _admin_body(request)
        kind = _optional_str(body, "kind")
        if kind is None:
            raise _AdminError(f"'kind' is required; one of {', '.join(MALFORMED_KINDS)}")
        _apply(lambda: tenant.malform_next(_count(body), kind=kind, target=_target(body)))
        return json_response(tenant.faults.describe(), 201)

    async def admin_token_outage(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        if request.method == "DELETE":
            tenant.end_token_outage()
            return json_response(tenant.faults.describe())
        body = await _admin_body(request)
        status = _int(body, "status", 503)
        _apply(lambda: tenant.token_outage(status=status))
        return json_response(tenant.faults.describe(), 201)

    async def admin_clock(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        body = await _admin_body(request)
        seconds = _optional_number(body, "seconds")
        if seconds is None:
            raise _AdminError("'seconds' is required")
        _apply(lambda: tenant.advance_clock(seconds))
        return json_response({"now": tenant.now()})

    async def admin_rate_limits(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        body = await _admin_body(request)
        preset = _optional_str(body, "preset")
        if preset is not None:
            _apply(lambda: tenant.set_rate_limits(preset))
        retry_after = body.get("retry_after")
        if retry_after is not None:
            if not isinstance(retry_after, bool):
                raise _AdminError("'retry_after' must be a boolean")
            tenant.retry_after = retry_after
        return json_response({"preset": tenant.rate_limits.name, "retry_after": tenant.retry_after})

    async def admin_clients(self, request: Request) -> Response:
        tenant = await self._tenant(request)
        body = await _admin_body(request)
        client_id = _optional_str(body, "client_id")
        secret = _optional_str(body, "client_secret")
        scopes = body.get("scopes", [])
        if not client_id or not secret:
            raise _AdminError("'client_id' and 'client_secret' are required")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise _AdminError("'scopes' must be a list of strings")
        tenant.add_client(client_id, secret, scopes)
        return json_response({"client_id": client_id, "scopes": scopes}, 201)


# --- request parsing ------------------------------------------------------------------------


async def _token_params(request: Request) -> dict[str, str]:
    """The token request's parameters from a JSON or form body, plus HTTP Basic credentials."""
    raw = await request.body()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    params: dict[str, str]
    if media_type == "application/json":
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise TokenRejected(
                400, "invalid_request", "The request body is not valid JSON"
            ) from None
        if not isinstance(data, dict):
            raise TokenRejected(400, "invalid_request", "The request body must be a JSON object")
        params = {key: value for key, value in data.items() if isinstance(value, str)}
    else:
        text = raw.decode("utf-8", errors="replace")
        params = {key: values[0] for key, values in parse_qs(text).items()}
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            raise TokenRejected(401, "invalid_client", "Client authentication failed") from None
        params.setdefault("client_id", unquote(client_id))
        params.setdefault("client_secret", unquote(secret))
    return params


async def _admin_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise _AdminError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _AdminError("the request body must be a JSON object")
    return data


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _AdminError(f"{name!r} must be a string")
    return value


def _optional_number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _AdminError(f"{name!r} must be a number")
    return float(value)


def _int(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _AdminError(f"{name!r} must be an integer")
    return value


def _count(body: Mapping[str, Any]) -> int | None:
    """``count`` defaults to 1; JSON ``null`` means until cleared."""
    if "count" in body and body["count"] is None:
        return None
    return _int(body, "count", 1)


def _target(body: Mapping[str, Any]) -> str:
    return _optional_str(body, "target") or "api"


def _apply(action: Callable[[], None]) -> None:
    try:
        action()
    except ValueError as exc:
        raise _AdminError(str(exc)) from None


# --- the app --------------------------------------------------------------------------------


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return json_response(management_error(status, _reason(status)), status)


async def _admin_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, _AdminError) else 400
    return json_response({"error": str(exc)}, status)


def build_app(simulator: Simulator) -> Starlette:
    app = SimulatorApp(simulator)
    t = "/{tenant}"
    signing = t + "/api/v2/keys/signing"
    admin = t + "/__admin"
    any_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/__admin/health", app.admin_health, methods=["GET"]),
        Route("/__admin/tenants", app.admin_tenants, methods=["GET", "POST"]),
        Route(t + "/oauth/token", app.oauth_token, methods=["POST"]),
        Route(t + "/.well-known/jwks.json", app.jwks, methods=["GET"]),
        Route(t + "/.well-known/openid-configuration", app.openid_configuration, methods=["GET"]),
        Route(signing, app.list_keys, methods=["GET"]),
        Route(signing + "/rotate", app.rotate, methods=["POST"]),
        Route(signing + "/{kid}", app.get_key, methods=["GET"]),
        Route(signing + "/{kid}/revoke", app.revoke, methods=["PUT"]),
        Route(t + "/api/v2/{rest:path}", app.api_not_found, methods=any_method),
        Route(admin + "/state", app.admin_state, methods=["GET"]),
        Route(admin + "/rotate", app.admin_rotate, methods=["POST"]),
        Route(admin + "/keys/{kid}/revoke", app.admin_revoke, methods=["POST"]),
        Route(admin + "/faults", app.admin_faults, methods=["GET", "DELETE"]),
        Route(admin + "/faults/status", app.admin_fault_status, methods=["POST"]),
        Route(admin + "/faults/slow", app.admin_fault_slow, methods=["POST"]),
        Route(admin + "/faults/malformed", app.admin_fault_malformed, methods=["POST"]),
        Route(admin + "/faults/token-outage", app.admin_token_outage, methods=["POST", "DELETE"]),
        Route(admin + "/clock/advance", app.admin_clock, methods=["POST"]),
        Route(admin + "/rate-limits", app.admin_rate_limits, methods=["PUT"]),
        Route(admin + "/clients", app.admin_clients, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_exception, _AdminError: _admin_error},
    )
