"""The one place keywatch builds an ``httpx.AsyncClient``, and reads an answer with a limit.

The daemon holds one ``HttpClients``: one client per distinct route (proxy, CA file), built
on first use and shared by every source and notifier on that route, so connection pools,
timeouts, TLS trust and the User-Agent are decided here and nowhere else. Answers are read
with ``read_limited``, which streams and stops at a limit instead of loading them whole.

The clients speak httpx's API over the ``httpx-aiohttp`` transport (aiohttp's connection
pool), with the route's proxy and TLS context handed to it: ``httpx.AsyncClient(proxy=...,
verify=...)`` would not reach a custom transport. ``request_limited`` (every poll's requests)
goes past httpx to the transport's aiohttp session: an httpx ``Request`` and ``Response`` built
over aiohttp's own were half the CPU of a request.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import math
import re
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

import aiohttp
import certifi
import httpx
from aiohttp.http_exceptions import ContentEncodingError
from httpx_aiohttp import AiohttpTransport
from multidict import CIMultiDictProxy
from yarl import URL

from monitor import __version__

CONNECT_TIMEOUT_CAP = 5.0
"""Seconds. Connecting should be quick; a slow connect is a dead host, not a slow answer."""

DEFAULT_USER_AGENT = f"keywatch/{__version__}"

MAX_ANSWER_BYTES = 4 << 20
"""The longest answer read from Auth0 or a published JWKS/certificate (4 MiB; a key with its
certificate is about 4 KiB): a longer one is cut off and fails as ``malformed``."""

TOTAL_TIMEOUT_FACTOR = 2.0
"""A request (connect, send, the whole answer) ends after this many times its timeout at
most; ``timeout`` itself bounds each network operation."""


def build_timeout(timeout: float) -> httpx.Timeout:
    """Read/write/pool time out after ``timeout`` seconds, connect after at most 5 s."""
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    return httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_CAP, timeout))


@dataclass(frozen=True, slots=True)
class Route:
    """How requests leave: through ``proxy`` (None: directly) trusting the public CAs plus
    the PEM certificates in ``ca_file``. The proxy URL may hold credentials: no repr."""

    proxy: str | None = None
    ca_file: str | None = None

    def __repr__(self) -> str:
        return f"Route(proxy={'set' if self.proxy else None}, ca_file={self.ca_file!r})"


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Certificate and host name verification, always: the public CAs (certifi, as httpx
    uses by default) plus ``ca_file``'s. Raises ``OSError``/``ssl.SSLError`` for a bad file."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


Transport = Literal["aiohttp", "httpcore"]

TRANSPORT: Transport = "aiohttp"
"""Decision (issue 12, bench/README.md): httpx-aiohttp, measured side by side against httpx's
own httpcore transport: less CPU per request for keywatch's poll and a bare GET alike."""

MAX_KEEPALIVE_CONNECTIONS = 20
"""Idle connections httpcore keeps per client: twice the daemon's 10 polls in flight (each
poll may have its Management API request and a publication fetch open). aiohttp has no such
cap: it closes a connection idle for ``keepalive_expiry`` (httpx's default, 5 s)."""


def build_http_client(
    *,
    timeout: float = 10.0,
    max_connections: int = 200,
    user_agent: str = DEFAULT_USER_AGENT,
    route: Route = Route(),
    transport: Transport = TRANSPORT,
) -> httpx.AsyncClient:
    """A shared client: explicit timeouts and limits, no redirects, no proxy env variables.

    Redirects are not followed because an Auth0 API never redirects: a 3xx means a wrong
    domain or a captive proxy, and following it would send the bearer token elsewhere.
    ``trust_env=False`` keeps ``HTTP(S)_PROXY``/``SSL_CERT_FILE``/``.netrc`` from changing
    where credentials go behind the configuration's back: a proxy or a private CA is set
    in the configuration (``route``) or not at all. ``transport`` is for the benchmark that
    compares the two.
    """
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=min(max_connections, MAX_KEEPALIVE_CONNECTIONS),
    )
    verify = tls_context(route.ca_file)
    timeouts, headers = build_timeout(timeout), {"User-Agent": user_agent}
    if transport == "httpcore":
        return httpx.AsyncClient(
            timeout=timeouts,
            headers=headers,
            follow_redirects=False,
            trust_env=False,
            limits=limits,
            proxy=route.proxy,
            verify=verify,
        )
    aiohttp = _AiohttpTransport(
        verify=verify,
        trust_env=False,
        limits=limits,
        proxy=_proxy(route.proxy) if route.proxy else None,
    )
    return AiohttpClient(
        timeout=timeouts,
        headers=headers,
        follow_redirects=False,
        trust_env=False,
        transport=aiohttp,
    )


def _proxy(url: str) -> httpx.Proxy:
    """The proxy with its credentials as a ``Proxy-Authorization`` header (aiohttp deprecates
    ``proxy_auth``). aiohttp sends the proxy's headers with a ``CONNECT`` only: a plain-HTTP
    request through the proxy carries them itself (``_AiohttpTransport``, ``_direct``)."""
    proxy = httpx.Proxy(url)  # takes the credentials out of the URL
    if proxy.auth is None:
        return proxy
    return httpx.Proxy(
        proxy.url, headers={"Proxy-Authorization": aiohttp.encode_basic_auth(*proxy.auth)}
    )


# aiohttp's errors as httpx's (the classes httpcore raises for the same failure), the most
# specific first. httpx-aiohttp's own table makes any connection error (a refused connection,
# a certificate not trusted, a server hanging up) a ``ConnectTimeout``, which keywatch would
# report as a timeout.
_AIOHTTP_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # as httpcore says it
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.ClientError, httpx.RemoteProtocolError),
)


def _as_httpx(exc: Exception) -> Exception:
    """The httpx error for an aiohttp one (``exc`` or the cause httpx-aiohttp mapped)."""
    original = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    if isinstance(original, aiohttp.ClientPayloadError) and isinstance(
        original.__cause__, ContentEncodingError
    ):  # a body aiohttp could not decompress, as httpx reports one it cannot
        return httpx.DecodingError(str(original.__cause__.message))
    for aiohttp_error, httpx_error in _AIOHTTP_ERRORS:
        if isinstance(original, aiohttp_error):
            return httpx_error(str(original) or type(original).__name__)
    return exc


class _RemappedStream(httpx.AsyncByteStream):
    """An iterator, not a generator: one more generator level would be one more to finalize
    when a body is not read to the end (``read_limited``)."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._chunks = aiter(self._stream)
        return self

    async def __anext__(self) -> bytes:
        assert self._chunks is not None
        try:
            return await anext(self._chunks)
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _as_httpx(exc) from exc

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _as_httpx(exc) from exc


class _AiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport raising the httpx error that matches aiohttp's."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.proxy is not None and request.url.scheme == "http":
            request.headers.update(self.proxy.headers)
        try:
            response = await super().handle_async_request(request)
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            raise _as_httpx(exc) from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _RemappedStream(response.stream)
        return response

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session under the transport (made on first use, in the event loop)."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client


class AiohttpClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` on ``_AiohttpTransport``, whose requests ``request_limited``
    sends to the transport's aiohttp session directly, as the transport would: the same
    connection pool, TLS context, proxy, User-Agent and timeouts, no redirects, errors mapped
    to httpx's (``_AIOHTTP_ERRORS``)."""

    def __init__(self, *, transport: _AiohttpTransport, **options: object) -> None:
        super().__init__(transport=transport, **options)  # type: ignore[arg-type]
        self.aiohttp = transport
        self.direct_headers = {"User-Agent": self.headers["User-Agent"]}
        self.plain_http_headers = self.direct_headers  # with the proxy's, through a proxy
        proxy = transport.proxy
        self.proxy_options: dict[str, object] = {}
        if proxy is not None:
            self.proxy_options = {"proxy": str(proxy.url), "proxy_headers": proxy.headers}
            self.plain_http_headers = {**self.direct_headers, **proxy.headers}


class HttpClients:
    """One client per distinct ``Route``, built on first use, all closed by ``aclose``.

    A reload that introduces a new route gets a new client; a route no longer used keeps its
    (idle) client until shutdown, so a request in flight is never cut off. ``ca_file`` is read
    when its client is built: a changed CA file takes effect after a restart."""

    def __init__(self, *, timeout: float = 10.0, max_connections: int = 200) -> None:
        build_timeout(timeout)  # fail now on a bad value
        self._timeout = timeout
        self._max_connections = max_connections
        self._clients: dict[Route, httpx.AsyncClient] = {}

    def get(self, route: Route = Route()) -> httpx.AsyncClient:
        client = self._clients.get(route)
        if client is None:
            client = build_http_client(
                timeout=self._timeout, max_connections=self._max_connections, route=route
            )
            self._clients[route] = client
        return client

    @property
    def default(self) -> httpx.AsyncClient:
        """Direct, public CAs only."""
        return self.get(Route())

    @property
    def routes(self) -> list[Route]:
        return list(self._clients)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


# --- reading answers with a limit ---------------------------------------------------------


class ResponseTooLarge(Exception):
    """An answer's body is longer than the reader's limit; the rest was not read. The message
    names the endpoint (never the URL, which may hold a secret) and the limit."""

    def __init__(self, endpoint: str, limit: int) -> None:
        self.endpoint = endpoint
        self.limit = limit
        super().__init__(f"{endpoint}: the answer is larger than {size_text(limit)}; not read")


def size_text(size: int) -> str:
    """``64 KiB``, ``4 MiB``, ``100 bytes``."""
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


async def read_limited(
    declared: str, chunks: AsyncIterator[bytes], limit: int, *, endpoint: str
) -> bytes:
    """The (decoded) body of a streamed answer from its ``chunks``, read until ``limit`` bytes
    at most; raises ``ResponseTooLarge`` as soon as it would be longer, without reading the
    rest. A ``Content-Length`` (``declared``) over the limit fails before anything is read."""
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(endpoint, limit)
    kept: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            break  # the caller's block closes the connection: the rest is not read
        kept.append(chunk)
    if total > limit:
        raise ResponseTooLarge(endpoint, limit)
    return b"".join(kept)


class Answer(Protocol):
    """A complete answer, as ``request_limited`` returns it (an ``httpx.Response`` is one)."""

    @property
    def status_code(self) -> int: ...

    @property
    def reason_phrase(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...


async def request_limited(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    limit: int,
    endpoint: str,
    timeouts: httpx.Timeout,
    headers: Mapping[str, str] | None = None,
    json: object = None,
) -> Answer:
    """``http.request`` that streams the body with ``read_limited`` and gives up after
    ``TOTAL_TIMEOUT_FACTOR`` times the longest of ``timeouts`` in total (httpx's own are per
    network operation, so a server that drips a byte at a time would never time out).
    Returns the complete answer, its ``content`` the body, already decoded. Raises
    ``ResponseTooLarge`` or an ``httpx.HTTPError`` (``httpx.TimeoutException`` past the
    total). An ``AiohttpClient``'s request goes to aiohttp directly; any other client's
    (``httpx.MockTransport`` in tests, httpcore in the benchmark) through httpx."""
    parts = (timeouts.connect, timeouts.read, timeouts.write, timeouts.pool)
    total = TOTAL_TIMEOUT_FACTOR * max(part or 0.0 for part in parts)
    try:
        async with asyncio.timeout(total or None):
            if isinstance(http, AiohttpClient):
                return await _direct(
                    http, method, url, limit, endpoint, timeouts, headers=headers, json=json
                )
            async with http.stream(
                method, url, headers=headers, json=json, timeout=timeouts
            ) as streamed:
                declared = streamed.headers.get("content-length", "")
                body = await read_limited(
                    declared, streamed.aiter_bytes(), limit, endpoint=endpoint
                )
    except TimeoutError:
        raise httpx.ReadTimeout(f"no complete answer within {total:g}s") from None
    return httpx.Response(
        streamed.status_code,
        headers=_without_encoding(streamed.headers),
        content=body,
        request=streamed.request,
        extensions=streamed.extensions,
    )


async def _direct(
    http: AiohttpClient,
    method: str,
    url: str,
    limit: int,
    endpoint: str,
    timeouts: httpx.Timeout,
    *,
    headers: Mapping[str, str] | None,
    json: object,
) -> Answer:
    """``request_limited``'s request on ``http``'s aiohttp session; the timeouts mapped as
    httpx-aiohttp maps them, the body decoded by aiohttp (gzip, deflate)."""
    own = http.plain_http_headers if url.startswith("http:") else http.direct_headers
    sent = {**own, **headers} if headers else own
    data = None
    if json is not None:  # as httpx encodes it
        data = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        sent = {**sent, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(
        sock_connect=timeouts.connect, sock_read=timeouts.read, connect=timeouts.pool
    )
    try:
        async with http.aiohttp.session().request(
            method,
            _encoded(url),
            headers=sent,
            data=data.encode() if data is not None else None,
            allow_redirects=False,
            timeout=timeout,
            **http.proxy_options,  # type: ignore[arg-type]
        ) as response:
            declared = response.headers.get("Content-Length", "")
            body = await read_limited(
                declared, response.content.iter_any(), limit, endpoint=endpoint
            )
    except aiohttp.ClientError as exc:
        raise _as_httpx(exc) from exc
    reason = response.reason or httpx.codes.get_reason_phrase(response.status)
    return _Answer(response.status, reason, _Headers(response.headers), body)


_PLAIN_URL = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:/?#\[\]@]|%[0-9A-Fa-f]{2})*")
"""A URL httpx sends as it is written: RFC 3986's characters, valid percent-escapes only."""


def _encoded(url: str) -> URL:
    """The URL as httpx would send it (aiohttp's own quoting would decode some escapes, such
    as ``%3D`` in a path)."""
    return URL(url if _PLAIN_URL.fullmatch(url) else str(httpx.URL(url)), encoded=True)


@dataclass(frozen=True, slots=True)
class _Answer:
    status_code: int
    reason_phrase: str
    headers: Mapping[str, str]
    content: bytes


class _Headers(Mapping[str, str]):
    """aiohttp's headers read as httpx reads them: case-insensitive, a repeated header's
    values joined by commas."""

    __slots__ = ("_multi",)

    def __init__(self, multi: CIMultiDictProxy[str]) -> None:
        self._multi = multi

    def __getitem__(self, name: str) -> str:
        values = self._multi.getall(name)  # KeyError when absent
        return values[0] if len(values) == 1 else ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter({name.lower(): None for name in self._multi})

    def __len__(self) -> int:
        return len({name.lower() for name in self._multi})


_DROPPED = frozenset({b"content-encoding", b"content-length"})


def _without_encoding(headers: httpx.Headers) -> list[tuple[bytes, bytes]]:
    # ``raw``: httpx decodes every header (and works out their encoding) at each ``items()``
    return [(name, value) for name, value in headers.raw if name.lower() not in _DROPPED]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: delay-seconds or an HTTP-date. None if absent or
    unreadable; never negative."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
