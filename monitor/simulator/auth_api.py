"""The Authentication API routes of the simulated Auth0: the token endpoint and the OpenID
discovery document (the JWKS is in ``publication_api``)."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import parse_qs, unquote

from starlette.requests import Request
from starlette.responses import Response

from monitor.simulator._routing import TenantRoutes, json_response, reason
from monitor.simulator.errors import TokenRejected
from monitor.simulator.faults import render_malformed

TOKEN_LIMIT_DESCRIPTION = "Rate limit exceeded. Please retry after some time."


def _token_error_code(status: int) -> tuple[str, str]:
    codes = {
        400: ("invalid_request", "Bad Request"),
        401: ("invalid_client", "Client authentication failed"),
        403: ("access_denied", "Access denied"),
        429: ("too_many_requests", TOKEN_LIMIT_DESCRIPTION),
        503: ("temporarily_unavailable", "The service is temporarily unavailable"),
    }
    return codes.get(
        status, ("server_error" if status >= 500 else "invalid_request", reason(status))
    )


class AuthenticationRoutes(TenantRoutes):
    """``POST /<tenant>/oauth/token`` and ``/<tenant>/.well-known/openid-configuration``."""

    async def oauth_token(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        delay = tenant.faults.take_delay("token")
        if delay:
            await asyncio.sleep(delay)
        fault = tenant.faults.take_status("token")
        if fault is not None:
            error, description = _token_error_code(fault.status)
            headers = self.fault_headers(tenant, "token", fault)
            body = {"error": error, "error_description": description}
            return json_response(body, fault.status, headers)
        decision = tenant.take_rate("token")
        if not decision.allowed:
            body = {"error": "too_many_requests", "error_description": TOKEN_LIMIT_DESCRIPTION}
            return self.too_many(tenant, decision, body)
        headers = {**decision.headers(), "cache-control": "no-store", "pragma": "no-cache"}
        try:
            params = await _token_params(request)
            token = tenant.issue_token(params, request_base_url=self.request_base(request, tenant))
        except TokenRejected as exc:
            body = {"error": exc.error, "error_description": exc.description}
            return json_response(body, exc.status, headers)
        kind = tenant.faults.take_malformed("token")
        if kind is not None:
            content, media_type = render_malformed(kind, token)
            return Response(content, 200, media_type=media_type, headers=headers)
        return json_response(token, 200, headers)

    async def openid_configuration(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        base = self.request_base(request, tenant)
        return json_response(
            {
                "issuer": f"{base}/",
                "jwks_uri": f"{base}/.well-known/jwks.json",
                "token_endpoint": f"{base}/oauth/token",
                "grant_types_supported": ["client_credentials"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )


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
