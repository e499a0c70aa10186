"""The Starlette app that serves every tenant of a ``Simulator`` over HTTP.

Auth0 routes, under each tenant's base ``/<tenant>``:

    POST /oauth/token                         client credentials (JSON, form or Basic auth)
    GET  /api/v2/keys/signing                 list            (read:signing_keys)
    GET  /api/v2/keys/signing/{kid}           get one         (read:signing_keys)
    POST /api/v2/keys/signing/rotate          rotate, 201     (create: + update:signing_keys)
    PUT  /api/v2/keys/signing/{kid}/revoke    revoke          (update:signing_keys)
    GET  /.well-known/jwks.json               public keys (Cache-Control max-age 15)
    GET  /.well-known/openid-configuration    discovery (issuer, jwks_uri, token_endpoint)
    GET  /pem  ·  GET /cer                    the current key's certificate, PEM and DER
    GET  /custom-domain/.well-known/jwks.json the custom domain's JWKS (custom keys first)
    GET  /__mirrors/{name}/jwks.json          a mirror of the JWKS (a user's gateway)

Admin routes for tests and demos (NO authentication: never expose them beyond loopback):

    GET    /__admin/health  ·  GET|POST /__admin/tenants
    GET    /<tenant>/__admin/state
    POST   /<tenant>/__admin/rotate  ·  POST /<tenant>/__admin/keys/{kid}/revoke
    GET|DELETE /<tenant>/__admin/faults
    POST   /<tenant>/__admin/faults/status|slow|malformed
    POST|DELETE /<tenant>/__admin/faults/token-outage
    POST   /<tenant>/__admin/clock/advance  ·  PUT /<tenant>/__admin/rate-limits
    POST   /<tenant>/__admin/clients
    PUT    /<tenant>/__admin/jwks  ·  POST /<tenant>/__admin/custom-signing-keys
    POST   /<tenant>/__admin/mirrors

The handlers live in ``management_api``, ``auth_api``, ``publication_api`` and ``admin_api``;
what they share in ``_routing``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from monitor.simulator._routing import json_response, management_error, reason
from monitor.simulator.admin_api import AdminError, AdminRoutes
from monitor.simulator.auth_api import AuthenticationRoutes
from monitor.simulator.management_api import ManagementRoutes
from monitor.simulator.publication_api import PublicationRoutes
from monitor.simulator.tenant import Simulator


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return json_response(management_error(status, reason(status)), status)


async def _admin_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, AdminError) else 400
    return json_response({"error": str(exc)}, status)


def build_app(simulator: Simulator) -> Starlette:
    management = ManagementRoutes(simulator)
    auth = AuthenticationRoutes(simulator)
    admin_api = AdminRoutes(simulator)
    published = PublicationRoutes(simulator)
    t = "/{tenant}"
    signing = t + "/api/v2/keys/signing"
    admin = t + "/__admin"
    any_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/__admin/health", admin_api.admin_health, methods=["GET"]),
        Route("/__admin/tenants", admin_api.admin_tenants, methods=["GET", "POST"]),
        Route(t + "/oauth/token", auth.oauth_token, methods=["POST"]),
        Route(t + "/.well-known/jwks.json", published.jwks, methods=["GET"]),
        Route(
            t + "/custom-domain/.well-known/jwks.json",
            published.custom_domain_jwks,
            methods=["GET"],
        ),
        Route(t + "/pem", published.pem, methods=["GET"]),
        Route(t + "/cer", published.cer, methods=["GET"]),
        Route(t + "/__mirrors/{name}/jwks.json", published.mirror_jwks, methods=["GET"]),
        Route(t + "/.well-known/openid-configuration", auth.openid_configuration, methods=["GET"]),
        Route(signing, management.list_keys, methods=["GET"]),
        Route(signing + "/rotate", management.rotate, methods=["POST"]),
        Route(signing + "/{kid}", management.get_key, methods=["GET"]),
        Route(signing + "/{kid}/revoke", management.revoke, methods=["PUT"]),
        Route(t + "/api/v2/{rest:path}", management.api_not_found, methods=any_method),
        Route(admin + "/state", admin_api.admin_state, methods=["GET"]),
        Route(admin + "/rotate", admin_api.admin_rotate, methods=["POST"]),
        Route(admin + "/keys/{kid}/revoke", admin_api.admin_revoke, methods=["POST"]),
        Route(admin + "/faults", admin_api.admin_faults, methods=["GET", "DELETE"]),
        Route(admin + "/faults/status", admin_api.admin_fault_status, methods=["POST"]),
        Route(admin + "/faults/slow", admin_api.admin_fault_slow, methods=["POST"]),
        Route(admin + "/faults/malformed", admin_api.admin_fault_malformed, methods=["POST"]),
        Route(
            admin + "/faults/token-outage", admin_api.admin_token_outage, methods=["POST", "DELETE"]
        ),
        Route(admin + "/clock/advance", admin_api.admin_clock, methods=["POST"]),
        Route(admin + "/rate-limits", admin_api.admin_rate_limits, methods=["PUT"]),
        Route(admin + "/clients", admin_api.admin_clients, methods=["POST"]),
        Route(admin + "/jwks", admin_api.admin_jwks, methods=["PUT"]),
        Route(
            admin + "/custom-signing-keys", admin_api.admin_custom_signing_keys, methods=["POST"]
        ),
        Route(admin + "/mirrors", admin_api.admin_mirrors, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_exception, AdminError: _admin_error},
    )
