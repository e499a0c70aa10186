"""A small HTTP forward proxy on 127.0.0.1 for tests: absolute-form requests (``GET
http://host/path``) and ``CONNECT`` tunnels (HTTPS), each recorded before it is passed on.
It runs its own event loop in a thread, so sync and async tests can use it alike."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlsplit


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class ForwardProxy:
    """``with ForwardProxy() as proxy:`` ... ``proxy.url``, ``proxy.seen``: one line per
    request, ``"POST http://127.0.0.1:8080/hook"`` or ``"CONNECT 127.0.0.1:8443"``;
    ``proxy.credentials``: each request's ``Proxy-Authorization`` ("" without one)."""

    def __init__(self) -> None:
        self._seen: list[str] = []
        self._credentials: list[str] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    @property
    def seen(self) -> list[str]:
        with self._lock:
            return list(self._seen)

    @property
    def credentials(self) -> list[str]:
        with self._lock:
            return list(self._credentials)

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            head = await client_r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            client_w.close()
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        authorization = next(
            (
                line.partition(":")[2].strip()
                for line in header_lines
                if line.lower().startswith("proxy-authorization:")
            ),
            "",
        )
        with self._lock:
            self._seen.append(f"{method} {target}")
            self._credentials.append(authorization)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream_r, upstream_w = await asyncio.open_connection(host, int(port))
            client_w.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await client_w.drain()
        else:  # one request per connection: the upstream closes after answering
            parts = urlsplit(target)
            upstream_r, upstream_w = await asyncio.open_connection(parts.hostname, parts.port)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            kept = [
                line
                for line in header_lines
                if line and not line.lower().startswith(("proxy-", "connection:"))
            ]
            lines = [f"{method} {path or '/'} {version}", *kept, "Connection: close", "", ""]
            upstream_w.write("\r\n".join(lines).encode("latin-1"))
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))
