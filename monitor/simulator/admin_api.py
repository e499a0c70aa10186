"""The admin routes of the simulator, for tests and demos: tenants, keys, faults, clock, rate
limits, applications. They have NO authentication: never expose them beyond loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from monitor.simulator._routing import TenantRoutes, json_response
from monitor.simulator.errors import RevokeNotAllowed, UnknownSigningKey
from monitor.simulator.faults import MALFORMED_KINDS


class AdminError(Exception):
    """A bad admin request; becomes 400 (or ``status``) with ``{"error": message}``."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class AdminRoutes(TenantRoutes):
    """``/__admin/...`` and ``/<tenant>/__admin/...``."""

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
                raise AdminError(str(exc)) from None
            return json_response({"name": tenant.name, "url": tenant.base_url}, 201)
        tenants = [{"name": t.name, "url": t.base_url} for t in self.simulator.tenants]
        return json_response({"tenants": tenants})

    async def admin_state(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        return json_response(tenant.describe())

    async def admin_rotate(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        kid = await run_in_threadpool(tenant.rotate)
        return json_response({"kid": kid, "current_kid": tenant.current_kid}, 201)

    async def admin_revoke(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        kid = request.path_params["kid"]
        try:
            tenant.revoke(kid)
        except UnknownSigningKey as exc:
            raise AdminError(str(exc), status=404) from None
        except RevokeNotAllowed as exc:
            raise AdminError(str(exc)) from None
        return json_response({"kid": kid, "revoked": True})

    async def admin_faults(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        if request.method == "DELETE":
            tenant.clear_faults()
        return json_response(tenant.faults.describe())

    async def admin_fault_status(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
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
        tenant = await self.tenant_of(request)
        body = await _admin_body(request)
        delay = _optional_number(body, "delay")
        if delay is None:
            raise AdminError("'delay' (seconds) is required")
        _apply(lambda: tenant.slow_next(_count(body), delay=delay, target=_target(body)))
        return json_response(tenant.faults.describe(), 201)

    async def admin_fault_malformed(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        body = await _admin_body(request)
        kind = _optional_str(body, "kind")
        if kind is None:
            raise AdminError(f"'kind' is required; one of {', '.join(MALFORMED_KINDS)}")
        _apply(lambda: tenant.malform_next(_count(body), kind=kind, target=_target(body)))
        return json_response(tenant.faults.describe(), 201)

    async def admin_token_outage(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        if request.method == "DELETE":
            tenant.end_token_outage()
            return json_response(tenant.faults.describe())
        body = await _admin_body(request)
        status = _int(body, "status", 503)
        _apply(lambda: tenant.token_outage(status=status))
        return json_response(tenant.faults.describe(), 201)

    async def admin_clock(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        body = await _admin_body(request)
        seconds = _optional_number(body, "seconds")
        if seconds is None:
            raise AdminError("'seconds' is required")
        _apply(lambda: tenant.advance_clock(seconds))
        return json_response({"now": tenant.now()})

    async def admin_rate_limits(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        body = await _admin_body(request)
        preset = _optional_str(body, "preset")
        if preset is not None:
            _apply(lambda: tenant.set_rate_limits(preset))
        retry_after = body.get("retry_after")
        if retry_after is not None:
            if not isinstance(retry_after, bool):
                raise AdminError("'retry_after' must be a boolean")
            tenant.retry_after = retry_after
        return json_response({"preset": tenant.rate_limits.name, "retry_after": tenant.retry_after})

    async def admin_jwks(self, request: Request) -> Response:
        """``PUT {"max_age": N}``: the JWKS's Cache-Control max-age (Auth0: 15)."""
        tenant = await self.tenant_of(request)
        body = await _admin_body(request)
        max_age = _int(body, "max_age", tenant.publication.jwks_max_age)
        if max_age < 0:
            raise AdminError("'max_age' must be 0 or more seconds")
        tenant.publication.jwks_max_age = max_age
        return json_response({"max_age": max_age})

    async def admin_custom_signing_keys(self, request: Request) -> Response:
        """``POST``: one more custom signing key on the custom domain; returns its kid."""
        tenant = await self.tenant_of(request)
        kid = await run_in_threadpool(tenant.publication.add_custom_signing_key)
        return json_response({"kid": kid}, 201)

    async def admin_mirrors(self, request: Request) -> Response:
        """``POST {"name": ..., "delay": seconds or null}``: a JWKS mirror."""
        tenant = await self.tenant_of(request)
        body = await _admin_body(request)
        name = _optional_str(body, "name")
        if name is None:
            raise AdminError("'name' is required")
        delay = _optional_number(body, "delay")
        _apply(lambda: tenant.publication.add_mirror(name, delay=delay))
        url = f"{self.request_base(request, tenant)}/__mirrors/{name}/jwks.json"
        return json_response({"name": name, "delay": delay, "url": url}, 201)

    async def admin_clients(self, request: Request) -> Response:
        tenant = await self.tenant_of(request)
        body = await _admin_body(request)
        client_id = _optional_str(body, "client_id")
        secret = _optional_str(body, "client_secret")
        scopes = body.get("scopes", [])
        if not client_id or not secret:
            raise AdminError("'client_id' and 'client_secret' are required")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise AdminError("'scopes' must be a list of strings")
        tenant.add_client(client_id, secret, scopes)
        return json_response({"client_id": client_id, "scopes": scopes}, 201)


async def _admin_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise AdminError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise AdminError("the request body must be a JSON object")
    return data


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise AdminError(f"{name!r} must be a string")
    return value


def _optional_number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AdminError(f"{name!r} must be a number")
    return float(value)


def _int(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdminError(f"{name!r} must be an integer")
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
        raise AdminError(str(exc)) from None
