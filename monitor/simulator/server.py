"""Serving a ``Simulator`` over HTTP: ``SimulatorServer`` runs uvicorn in a background thread
(tests, demo, benchmarks); ``run_simulator`` blocks until SIGINT/SIGTERM (``keywatch simulate``).
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TextIO

import uvicorn

from monitor.simulator.app import build_app
from monitor.simulator.ratelimit import resolve_preset
from monitor.simulator.tenant import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    NOSCOPE_CLIENT_ID,
    NOSCOPE_CLIENT_SECRET,
    READONLY_CLIENT_ID,
    READONLY_CLIENT_SECRET,
    Simulator,
)

POLL_INTERVAL_SECONDS = 0.005
CLI_KEY_POOL_SIZE = 32  # above CLI_FRESH_KEYS_MAX tenants, keys come from a pool
CLI_FRESH_KEYS_MAX = 4


def _url_host(host: str) -> str:
    """The host to put in URLs and to connect to for a listen address."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError naming the value."""
    host, separator, port_text = listen.rpartition(":")
    if not separator or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT with a port 0-65535")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


class SimulatorServer:
    """uvicorn serving ``simulator`` on ``host:port`` (port 0: any free port) in a thread.

    Without a ``simulator``, a default one with ``tenants`` tenants (1 if not given) is made.
    ``start()`` returns once the port answers HTTP; ``stop()`` shuts down and joins the thread.
    Use it as a context manager.
    """

    def __init__(
        self,
        simulator: Simulator | None = None,
        *,
        tenants: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        if simulator is not None and tenants is not None:
            raise ValueError("pass either a simulator or a number of tenants, not both")
        self.simulator = simulator if simulator is not None else Simulator(tenants=tenants or 1)
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._url: str | None = None
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._url is None:
            raise RuntimeError("the simulator server is not started")
        return self._url

    def tenant_url(self, name: str) -> str:
        """``{url}/<name>``, the tenant's base URL (its "domain"); KeyError for unknown names."""
        tenant = self.simulator.tenant(name)
        return f"{self.url}/{tenant.name}"

    def start(self) -> SimulatorServer:
        if self._thread is not None:
            raise RuntimeError("the simulator server is already started")
        self._socket = self._bind()
        self.port = self._socket.getsockname()[1]
        self._url = f"http://{_url_host(self.host)}:{self.port}"
        self.simulator.bind(self._url)
        config = uvicorn.Config(
            build_app(self.simulator),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"keywatch-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _bind(self) -> socket.socket:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _wait_until_serving(self) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + self.startup_timeout
        while not (self._server.started and self._accepts_connections()):
            if not self._thread.is_alive():
                raise RuntimeError(f"the simulator server on port {self.port} exited at startup")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the simulator server did not start within {self.startup_timeout:g}s"
                )
            time.sleep(POLL_INTERVAL_SECONDS)

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((_url_host(self.host).strip("[]"), self.port), 1.0):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop serving and join the thread; safe to call twice."""
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=10)
            if thread.is_alive():
                server.force_exit = True
                thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _print_banner(server: SimulatorServer, out: TextIO) -> None:
    tenants = server.simulator.tenants
    print(
        f"keywatch simulator: {len(tenants)} tenant(s) on {server.url} "
        f"(rate limits: {server.simulator.preset.name})",
        file=out,
    )
    for tenant in tenants:
        print(f"  {tenant.name}  {server.tenant_url(tenant.name)}", file=out)
    print(
        f"client credentials (read, create and update signing_keys):\n"
        f"  client_id     {DEFAULT_CLIENT_ID}\n"
        f"  client_secret {DEFAULT_CLIENT_SECRET}\n"
        f"read-only client: {READONLY_CLIENT_ID} / {READONLY_CLIENT_SECRET}; "
        f"no-scope client: {NOSCOPE_CLIENT_ID} / {NOSCOPE_CLIENT_SECRET}\n"
        f"audience: <tenant URL>/api/v2/\n"
        f"admin endpoints (no authentication, for demos): <tenant URL>/__admin/state\n"
        f"Stop with Ctrl-C.",
        file=out,
        flush=True,
    )


def run_simulator(listen: str, tenants: int, *, preset: str = "unlimited") -> int:
    """Serve ``tenants`` simulated tenants on ``listen`` until SIGINT/SIGTERM; 0 on a clean
    stop, 2 for bad arguments or an address that cannot be bound (as ``run`` and ``demo``)."""
    try:
        host, port = parse_listen(listen)
        resolve_preset(preset)
        if tenants < 1:
            raise ValueError(f"--tenants {tenants}: expected at least 1")
    except ValueError as exc:
        print(f"keywatch simulate: {exc}", file=sys.stderr)
        return 2
    pool_size = CLI_KEY_POOL_SIZE if tenants > CLI_FRESH_KEYS_MAX else 0
    simulator = Simulator(tenants=tenants, preset=preset, key_pool_size=pool_size)
    server = SimulatorServer(simulator, host=host, port=port)
    stop_requested = threading.Event()
    restore = _install_stop_handlers(stop_requested)
    try:
        try:
            server.start()
        except OSError as exc:
            print(f"keywatch simulate: cannot listen on {listen}: {exc.strerror}", file=sys.stderr)
            return 2
        simulator.ensure_keys()
        _print_banner(server, sys.stdout)
        while not stop_requested.wait(0.5):
            pass
    finally:
        server.stop()
        restore()
    return 0


def _install_stop_handlers(stop_requested: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set ``stop_requested``; returns a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
