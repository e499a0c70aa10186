"""The public routes of what a simulated tenant publishes: the JWKS (canonical and custom
domain), ``/pem``, ``/cer``, and its mirrors; and their admin routes. Every request to them is
counted (``SimulatedTenant.requests_to``), so tests and benchmarks can count fetches."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from monitor.simulator._routing import TenantRoutes, json_response, management_error, reason
from monitor.simulator.faults import HTML_ERROR_PAGE, HTML_MEDIA_TYPE, render_malformed
from monitor.simulator.publication import jwks_cache_control
from monitor.simulator.tenant import SimulatedTenant

EXPOSED_HEADERS = "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
PEM_MEDIA_TYPE = "application/x-pem-file"
CER_MEDIA_TYPE = "application/x-x509-ca-cert"
NOT_A_CERTIFICATE = b"not a certificate"

JwksBuilder = Callable[[SimulatedTenant, bool], dict[str, object]]


class PublicationRoutes(TenantRoutes):
    """``/<tenant>/.well-known/jwks.json``, ``/<tenant>/custom-domain/.well-known/jwks.json``,
    ``/<tenant>/pem``, ``/<tenant>/cer``, ``/<tenant>/__mirrors/<name>/jwks.json``."""

    async def jwks(self, request: Request) -> Response:
        return await self._jwks(
            request, "jwks", lambda t, stale: t.jwks_json(include_revoked=stale)
        )

    async def custom_domain_jwks(self, request: Request) -> Response:
        return await self._jwks(
            request,
            "custom_jwks",
            lambda t, stale: t.publication.custom_domain_jwks_json(include_revoked=stale),
        )

    async def _jwks(self, request: Request, endpoint: str, build: JwksBuilder) -> Response:
        tenant = await self.tenant_of(request)
        tenant.publication.count_request(endpoint)
        failed = await self._fault(tenant, "jwks")
        if failed is not None:
            return failed
        decision = tenant.take_rate("jwks")
        if not decision.allowed:
            return self.too_many(tenant, decision, management_error(429, "Too many requests."))
        headers = {
            **decision.headers(),
            "cache-control": jwks_cache_control(tenant.publication.jwks_max_age),
            "access-control-expose-headers": EXPOSED_HEADERS,
        }
        kind = tenant.faults.take_malformed("jwks")
        payload = build(tenant, kind == "stale")
        if kind is None or kind == "stale":
            return json_response(payload, 200, headers)
        content, media_type = render_malformed(
            kind, payload, current_kid=tenant.current_kid, next_kid=tenant.next_kid
        )
        return Response(content, 200, media_type=media_type, headers=headers)

    async def pem(self, request: Request) -> Response:
        return await self._certificate(request, "pem")

    async def cer(self, request: Request) -> Response:
        return await self._certificate(request, "cer")

    async def _certificate(self, request: Request, endpoint: str) -> Response:
        tenant = await self.tenant_of(request)
        tenant.publication.count_request(endpoint)
        failed = await self._fault(tenant, endpoint)
        if failed is not None:
            return failed
        kind = tenant.faults.take_malformed(endpoint)
        if kind == "html":
            return Response(HTML_ERROR_PAGE, 200, media_type=HTML_MEDIA_TYPE)
        pem, der = tenant.current_certificate(stale=kind == "stale")
        if endpoint == "pem":
            body = NOT_A_CERTIFICATE if kind == "bad_cert" else pem.encode("ascii")
            return Response(body, 200, media_type=PEM_MEDIA_TYPE)
        body = NOT_A_CERTIFICATE if kind == "bad_cert" else der
        return Response(body, 200, media_type=CER_MEDIA_TYPE)

    async def mirror_jwks(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        name = request.path_params["name"]
        tenant.publication.count_request(f"mirror:{name}")
        payload = tenant.publication.mirror_jwks_json(name)
        if payload is None:
            return json_response({"error": f"no mirror {name!r}"}, 404)
        return json_response(payload, 200, {"cache-control": "no-cache"})

    async def _fault(self, tenant: SimulatedTenant, target: str) -> Response | None:
        delay = tenant.faults.take_delay(target)
        if delay:
            await asyncio.sleep(delay)
        fault = tenant.faults.take_status(target)
        if fault is None:
            return None
        body = management_error(fault.status, reason(fault.status))
        return json_response(body, fault.status, self.fault_headers(tenant, "jwks", fault))
