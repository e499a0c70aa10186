"""What every route of the simulated Auth0 shares: JSON answers, Auth0's error bodies, the
tenant a request is for, and the headers of rate limits and injected faults."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from http import HTTPStatus

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from monitor.simulator.faults import JSON_MEDIA_TYPE, StatusFault
from monitor.simulator.ratelimit import RateDecision
from monitor.simulator.tenant import SimulatedTenant, Simulator


def json_response(
    payload: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":"))
    return Response(body, status_code=status, media_type=JSON_MEDIA_TYPE, headers=headers)


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def management_error(
    status: int, message: str, *, error_code: str | None = None, attributes: bool = False
) -> dict[str, object]:
    """Auth0's Management API error body."""
    body: dict[str, object] = {"statusCode": status, "error": reason(status), "message": message}
    if error_code:
        body["errorCode"] = error_code
    if attributes:
        body["attributes"] = {"error": message}
    return body


def retry_after_header(seconds: float) -> str:
    return str(max(0, math.ceil(seconds)))


def tighter(first: RateDecision, second: RateDecision) -> RateDecision:
    """The decision whose headers a client should pace by: the one with fewer requests left."""
    return second if second.remaining < first.remaining else first


class TenantRoutes:
    """The base of the route handlers: bound to one ``Simulator``, finding a request's tenant."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    async def tenant_of(self, request: Request) -> SimulatedTenant:
        tenant = self.simulator.get(request.path_params["tenant"])
        if tenant is None:
            raise HTTPException(404)
        if not tenant.keys_ready:
            await run_in_threadpool(tenant.ensure_keys)
        return tenant

    @staticmethod
    def request_base(request: Request, tenant: SimulatedTenant) -> str:
        return f"{str(request.base_url).rstrip('/')}/{tenant.name}"

    def too_many(self, tenant: SimulatedTenant, decision: RateDecision, body: object) -> Response:
        headers = decision.headers()
        if tenant.retry_after:
            headers["retry-after"] = decision.retry_after()
        return json_response(body, 429, headers)

    @staticmethod
    def fault_headers(tenant: SimulatedTenant, bucket: str, fault: StatusFault) -> dict[str, str]:
        headers = tenant.peek_rate(bucket).headers()
        if fault.status == 429:
            headers["x-ratelimit-remaining"] = "0"
            wait = fault.retry_after if fault.retry_after is not None else 1.0
            headers["x-ratelimit-reset"] = str(math.ceil(tenant.now() + wait))
        if fault.retry_after is not None:
            headers["retry-after"] = retry_after_header(fault.retry_after)
        return headers
