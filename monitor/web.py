"""HTTP endpoints: ``/metrics``, ``/healthz`` (alive, store answers), ``/readyz`` (the store
answers, and every tenant was polled once, or the process stands by: a standby serves the
shared state it loaded at start, so it is ready without polling). Served by uvicorn inside the
daemon's own event loop.

``/metrics`` is written from prepared bytes (``monitor.metrics.render_prepared``) in a worker
thread, in the OpenMetrics format when the ``Accept`` header asks for it, gzipped when
``Accept-Encoding`` allows it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import zlib
from collections.abc import Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitor.errors import ConfigError, StoreError
from monitor.metrics.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    wants_openmetrics,
)

log = logging.getLogger(__name__)


Exposition = Callable[[bool], bytes]
"""Writes the metrics; the argument says whether in the OpenMetrics format."""

GZIP_LEVEL = 1
"""Fast: a 10,000-tenant exposition shrinks ~15 times at level 1; higher levels cost more CPU
for a few percent."""


def _never() -> bool:
    return False


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (``gzip;q=0`` refuses it)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() in ("gzip", "*"):
            quality = params.strip()
            return not quality.startswith("q=") or _positive(quality[2:])
    return False


def _positive(quality: str) -> bool:
    try:
        return float(quality) > 0
    except ValueError:
        return False


def gzipped(body: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip header
    return compressor.compress(body) + compressor.flush()


def metrics_response(exposition: Exposition, request: Request) -> Response:
    """The ``/metrics`` answer in the format and encoding the request asks for; blocking
    (runs in a worker thread: a big fleet's exposition takes milliseconds)."""
    openmetrics = wants_openmetrics(request.headers.get("accept", ""))
    body = exposition(openmetrics)
    headers = {"Vary": "Accept, Accept-Encoding"}
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        body = gzipped(body)
        headers["Content-Encoding"] = "gzip"
    media_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
    return Response(body, media_type=media_type, headers=headers)


def build_app(
    *,
    exposition: Exposition,
    ping_store: Callable[[], None],
    polled_all: Callable[[], bool],
    standing_by: Callable[[], bool] = _never,
    progress: Callable[[], tuple[int, int]] | None = None,
) -> Starlette:
    """``standing_by``: True while another replica leads (this one does not poll);
    ``progress``: (tenants polled once, tenants), told by ``/readyz`` while not ready."""

    async def metrics(request: Request) -> Response:
        return await asyncio.to_thread(metrics_response, exposition, request)

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
            told = "some tenants have not been polled yet"
            if progress is not None:
                polled, tenants = progress()
                told = f"{polled} of {tenants} tenants polled once"
            return PlainTextResponse(f"not ready: {told}\n", status_code=503)
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
