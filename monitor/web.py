"""HTTP endpoints: ``/metrics``, ``/healthz`` (alive, store answers), ``/readyz`` (the store
answers, and every tenant was polled once, or the process stands by: a standby serves the
shared state it loaded at start, so it is ready without polling). Served by uvicorn inside the
daemon's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitor.errors import ConfigError, StoreError
from monitor.metrics import render

log = logging.getLogger(__name__)


def _never() -> bool:
    return False


def build_app(
    *,
    registry: CollectorRegistry,
    ping_store: Callable[[], None],
    polled_all: Callable[[], bool],
    standing_by: Callable[[], bool] = _never,
) -> Starlette:
    """``standing_by``: True while another replica leads (this one does not poll)."""

    async def metrics(_: Request) -> Response:
        body = await asyncio.to_thread(render, registry)  # large outputs take a while
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def store_problem() -> str | None:
        try:
            await asyncio.to_thread(ping_store)
        except StoreError as exc:
            return f"store unavailable: {exc}"
        return None

    async def healthz(_: Request) -> Response:
        problem = await store_problem()
        return PlainTextResponse(problem or "ok\n", status_code=503 if problem else 200)

    async def readyz(_: Request) -> Response:
        problem = await store_problem()
        if problem is not None:
            return PlainTextResponse(problem, status_code=503)
        if standing_by():
            return PlainTextResponse("ready (standby)\n")
        if not polled_all():
            return PlainTextResponse(
                "not ready: some tenants have not been polled yet", status_code=503
            )
        return PlainTextResponse("ready\n")

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ]
    )


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(app: Starlette) -> EmbeddedServer:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return EmbeddedServer(config)


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so a taken port is a clear error, not an exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"listen: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock
