"""HTTP endpoints: ``/metrics``, ``/healthz`` (alive, store answers), ``/readyz`` (the store
answers, and every tenant was polled once, or the process stands by: a standby serves the
shared state it loaded at start, so it is ready without polling). Served by uvicorn on a thread
and event loop of its own (``EmbeddedServer.serve_in_thread``), over TLS and behind basic auth
when ``web`` says so.

``/metrics`` is written from prepared bytes (``monitor.metrics.prepared_chunks``) in a worker
thread, in the OpenMetrics format when the ``Accept`` header asks for it, gzipped when
``Accept-Encoding`` allows it (from compressed pieces kept between scrapes)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import os
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping

import bcrypt
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from monitor.config import WebConfig
from monitor.errors import ConfigError, StoreError
from monitor.metrics.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    wants_openmetrics,
)

log = logging.getLogger(__name__)

STORE_PING_TIMEOUT = 5.0
"""Seconds ``/healthz`` and ``/readyz`` wait for the store before answering 503."""


Exposition = Callable[[bool, bool], Iterable[bytes]]
"""Writes the metrics, in chunks; the arguments say whether in the OpenMetrics format and
whether gzipped (then the chunks make one gzip stream)."""


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


def metrics_response(exposition: Exposition, request: Request) -> Response:
    """The ``/metrics`` answer in the format and encoding the request asks for; blocking
    (runs in a worker thread: a big fleet's exposition takes milliseconds)."""
    openmetrics = wants_openmetrics(request.headers.get("accept", ""))
    headers = {"Vary": "Accept, Accept-Encoding"}
    media_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        body = b"".join(exposition(openmetrics, True))
        return Response(body, media_type=media_type, headers=headers)
    # a family at a time, each joined in a worker thread: no copy of the whole exposition
    chunks = exposition(openmetrics, False)
    return StreamingResponse(chunks, media_type=media_type, headers=headers)


def build_app(
    *,
    exposition: Exposition,
    ping_store: Callable[[], None],
    polled_all: Callable[[], bool],
    standing_by: Callable[[], bool] = _never,
    store_timeout: float = STORE_PING_TIMEOUT,
    progress: Callable[[], tuple[int, int]] | None = None,
) -> Starlette:
    """``standing_by``: True while another replica leads (this one does not poll);
    ``store_timeout``: seconds the probes wait for ``ping_store``; ``progress``: (tenants
    polled once, tenants), told by ``/readyz`` while not ready."""

    async def metrics(request: Request) -> Response:
        return await asyncio.to_thread(metrics_response, exposition, request)

    async def store_problem() -> str | None:
        try:
            async with asyncio.timeout(store_timeout):
                await asyncio.to_thread(ping_store)
        except StoreError as exc:
            return f"store unavailable: {exc}"
        except TimeoutError:
            return f"store unavailable: no answer within {store_timeout:g}s"
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


MAX_PASSWORD_BYTES = 72
"""bcrypt's limit; a longer password cannot match (bcrypt 5 refuses to check it)."""
VERIFIED_CACHE_SIZE = 64
CONCURRENT_CHECKS = 2
"""bcrypt checks at a time (each takes tens to hundreds of ms of CPU, in a worker thread):
a flood of wrong passwords cannot take more than this many threads."""


class BasicAuth:
    """ASGI middleware: every path except ``exempt`` needs ``Authorization: Basic`` with a
    user of ``users`` (name -> bcrypt hash); otherwise 401 with ``WWW-Authenticate``.

    The check costs one bcrypt verification whatever is wrong: an unknown user is verified
    against a dummy hash of the same cost, so the answer's timing does not tell which user
    names exist. Credentials that passed are remembered (as a SHA-256 of user and password,
    like the exporter-toolkit's cache) so that a scrape every 15 s costs no bcrypt."""

    def __init__(self, app: ASGIApp, *, users: Mapping[str, str], exempt: tuple[str, ...]):
        self._app = app
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._exempt = frozenset(exempt)
        cost = min((int(h.split("$")[2]) for h in users.values()), default=12)
        self._dummy = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds=cost))
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._checks = asyncio.Semaphore(CONCURRENT_CHECKS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._exempt:
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if await self._allowed(headers.get(b"authorization", b"")):
            await self._app(scope, receive, send)
            return
        refusal = PlainTextResponse(
            "unauthorized\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="keywatch", charset="UTF-8"'},
        )
        await refusal(scope, receive, send)

    async def _allowed(self, header: bytes) -> bool:
        scheme, _, encoded = header.partition(b" ")
        try:
            user, colon, password = base64.b64decode(encoded, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        if scheme.lower() != b"basic" or not colon:
            return False
        remembered = hashlib.sha256(user + b"\0" + password).digest()
        if remembered in self._verified:
            self._verified.move_to_end(remembered)
            return True
        hashed = self._users.get(user.decode("utf-8", "replace"))
        async with self._checks:
            ok = await asyncio.to_thread(self._check, password, hashed)
        if ok:
            self._verified[remembered] = None
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return ok

    def _check(self, password: bytes, hashed: bytes | None) -> bool:
        matches = bcrypt.checkpw(password[:MAX_PASSWORD_BYTES], hashed or self._dummy)
        return matches and hashed is not None and len(password) <= MAX_PASSWORD_BYTES


def protect(app: ASGIApp, web: WebConfig) -> ASGIApp:
    """``app`` behind basic auth when ``web`` names users, else as it is."""
    if not web.basic_auth_users:
        return app
    users = {name: hashed.get_secret_value() for name, hashed in web.basic_auth_users.items()}
    return BasicAuth(app, users=users, exempt=web.auth_exempt)


TLS_RELOAD_EVERY = 30.0
"""Seconds between looks at the certificate and key files (and at every SIGHUP)."""


class CertificateReloader:
    """Serves renewed TLS files without a restart (cert-manager and certbot replace them in
    place): when either file changed, both are loaded into the listener's context, so new
    connections get the new certificate and open ones keep theirs. A pair that does not load
    (half written, a key that does not match) is logged once and the previous pair kept."""

    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
        self._context = context
        self._files = (cert_file, key_file)
        self._loaded = self._signature()
        self._refused: tuple[tuple[int, int, int], ...] | None = None

    def check(self) -> bool:
        """Load the files if they changed since the last load; whether they were loaded."""
        signature = self._signature()
        if signature == self._loaded or signature == self._refused:
            return False
        cert_file, key_file = self._files
        try:
            # tried on a scratch context first: a failed load leaves a context half changed
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
            self._context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            self._refused = signature
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            log.error(
                "web: renewed TLS files not loaded, still serving the previous certificate: %s",
                reason,
            )
            return False
        self._loaded, self._refused = signature, None
        log.info("web: TLS certificate reloaded from %s", cert_file)
        return True

    async def run(self, every: float = TLS_RELOAD_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            self.check()

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        """(inode, size, mtime) of each file: a file replaced by a rename changes its inode."""
        found = []
        for path in self._files:
            try:
                stat = os.stat(path)
            except OSError:
                found.append((0, 0, 0))
            else:
                found.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
        return tuple(found)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns SIGTERM/SIGINT/SIGHUP.

    The daemon runs it on a thread of its own, in an event loop of its own
    (``serve_in_thread``): a request then waits for nothing the daemon's loop does. A fleet's
    start-up keeps that loop busy (each turn runs many polls' callbacks), and an answer that
    takes several turns of it missed 100 ms (issue 12)."""

    certificates: CertificateReloader | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until ``should_exit``, looking at the TLS files on a timer meanwhile."""
        self._loop = asyncio.get_running_loop()
        if self.certificates is None:
            await super().serve(sockets)
            return
        reloading = asyncio.create_task(self.certificates.run(), name="tls-reload")
        try:
            await super().serve(sockets)
        finally:
            reloading.cancel()
            await asyncio.gather(reloading, return_exceptions=True)

    async def serve_in_thread(self, sockets: list[socket.socket]) -> None:
        """``serve`` on a thread of its own (its own event loop), until ``should_exit``;
        returns, or raises what it raised, once it has stopped. Cancelled: asks it to stop."""
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            failure: BaseException | None = None
            try:
                asyncio.run(self.serve(sockets))
            except BaseException as exc:  # told to the awaiting task
                failure = exc
            with contextlib.suppress(RuntimeError):  # the daemon's loop is closed already
                loop.call_soon_threadsafe(_settle, stopped, failure)

        threading.Thread(target=run, name="web", daemon=True).start()
        try:
            await asyncio.shield(stopped)
        except asyncio.CancelledError:
            self.should_exit = True
            raise

    async def reload_certificates(self) -> None:
        """Look at the TLS files now (SIGHUP), on the server's loop, where its handshakes use
        them; returns once looked at. The caller's loop goes on meanwhile."""
        certificates, loop = self.certificates, self._loop
        if certificates is None:
            return
        if loop is None or not loop.is_running():
            certificates.check()
            return

        async def check() -> None:
            certificates.check()

        looked = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(check(), loop))
        try:
            await asyncio.wait_for(looked, CERTIFICATE_CHECK_TIMEOUT)
        except TimeoutError:  # stopping, or stuck: the timer looks again
            log.warning("web: the TLS files were not looked at (the web server did not answer)")


CERTIFICATE_CHECK_TIMEOUT = 10.0
"""Seconds a SIGHUP waits for the web thread to look at the TLS files."""


def _settle(future: asyncio.Future[None], failure: BaseException | None) -> None:
    if future.done():
        return
    if failure is None:
        future.set_result(None)
    else:
        future.set_exception(failure)


def build_server(app: ASGIApp, web: WebConfig | None = None) -> EmbeddedServer:
    """uvicorn serving ``app``; HTTPS only when ``web`` has a certificate and key (read here,
    and again by ``server.certificates`` when they are renewed)."""
    web = web or WebConfig()
    config = uvicorn.Config(
        protect(app, web),
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=web.tls_cert_file,
        ssl_keyfile=web.tls_key_file,
    )
    config.load()  # builds the TLS context now: a bad file is an error before serving
    server = EmbeddedServer(config)
    if config.ssl is not None and web.tls_cert_file and web.tls_key_file:
        server.certificates = CertificateReloader(config.ssl, web.tls_cert_file, web.tls_key_file)
    return server


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
