"""The Management API routes of the simulated Auth0: list, get, rotate and revoke signing keys.

A request goes through: injected delay, injected status, the global bucket, authentication,
scope, the endpoint bucket (rotate), the operation, an injected malformation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from monitor.simulator._routing import (
    TenantRoutes,
    json_response,
    management_error,
    reason,
    tighter,
)
from monitor.simulator.errors import RevokeNotAllowed, Unauthenticated, UnknownSigningKey
from monitor.simulator.faults import StatusFault, render_malformed
from monitor.simulator.tenant import SimulatedTenant
from monitor.simulator.tokens import CREATE_SCOPE, READ_SCOPE, UPDATE_SCOPE

GLOBAL_LIMIT_MESSAGE = "Global limit has been reached"
ENDPOINT_LIMIT_MESSAGE = (
    "Too many requests. Check the X-RateLimit-Limit, X-RateLimit-Remaining and "
    "X-RateLimit-Reset headers."
)
SIGNING_KEY_NOT_FOUND = "Signing key not found."
ONLY_PREVIOUS_REVOCABLE = "Only previous keys can be revoked"  # invented: Auth0 documents none


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, error_code: str | None = None) -> None:
        self.status = status
        self.message = message
        self.error_code = error_code
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


class ManagementRoutes(TenantRoutes):
    """``/<tenant>/api/v2/...``: the signing-key endpoints, and Auth0's 404 for the rest."""

    async def _management(
        self, request: Request, operation: Operation, handler: OperationHandler
    ) -> Response:
        tenant = await self.tenant_of(request)
        delay = tenant.faults.take_delay("api")
        if delay:
            await asyncio.sleep(delay)
        fault = tenant.faults.take_status("api")
        if fault is not None:
            return self._management_fault(tenant, fault)
        decision = tenant.take_rate("management")
        if not decision.allowed:
            body = management_error(429, GLOBAL_LIMIT_MESSAGE, error_code="too_many_requests")
            return self.too_many(tenant, decision, body)
        base = self.request_base(request, tenant)
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
                return self.too_many(tenant, endpoint, body)
            decision = tighter(decision, endpoint)
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
        tenant.requests["list_keys"] += 1
        return 200, tenant.keys_json()

    @staticmethod
    async def _get(tenant: SimulatedTenant, request: Request) -> OperationResult:
        tenant.requests["get_key"] += 1
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
        tenant = await self.tenant_of(request)
        headers = tenant.peek_rate("management").headers()
        return json_response(management_error(404, "Not Found"), 404, headers)

    def _management_fault(self, tenant: SimulatedTenant, fault: StatusFault) -> Response:
        if fault.status == 429:
            body = management_error(429, GLOBAL_LIMIT_MESSAGE, error_code="too_many_requests")
        else:
            body = management_error(fault.status, reason(fault.status))
        return json_response(body, fault.status, self.fault_headers(tenant, "management", fault))
