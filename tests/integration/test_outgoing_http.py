"""Outgoing HTTP: the configured proxy (global, per tenant, per destination), private CAs,
proxy environment variables ignored, and answers read with a limit.

Everything is real and on loopback: the simulator, a forward proxy (tests/support/proxy.py), a
receiver serving HTTPS with a certificate from a CA made for the test (tests/support/tls.py).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from monitor.config import parse_config, parse_destination
from monitor.daemon import build_daemon
from monitor.errors import MalformedResponse, SourceConnectError, SourceTimeout
from monitor.httpclient import (
    HttpClients,
    Route,
    build_http_client,
    build_timeout,
    request_limited,
)
from monitor.model import MAX_KEYS_PER_TENANT, parse_signing_keys
from monitor.notify import build_notifier
from monitor.notify.base import Outcome
from monitor.simulator import SimulatorServer
from monitor.sources._retry import RetryPolicy
from monitor.sources.auth0 import Auth0Client, Credentials
from monitor.sources.publication import PublicationReader, publication_targets
from tests.support.daemon import daemon_config, hook_destination, running
from tests.support.delivery import Receiver, eventually
from tests.support.notify import rotation
from tests.support.proxy import ForwardProxy
from tests.support.tls import Pki


def webhook(url: str, **options: object) -> object:
    return parse_destination({"name": "hook", "kind": "webhook", "url": url, **options})


async def test_tenant_and_destination_requests_go_through_the_configured_proxy_not_the_env(
    server: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ForwardProxy() as proxy, ForwardProxy() as env_proxy, Receiver() as receiver:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, env_proxy.url)
        text = daemon_config(server, tmp_path, interval="200ms") + (
            f"proxy: '{proxy.url}'\n" + "destinations:\n" + hook_destination(receiver)
        )
        async with running(parse_config(text)) as daemon:
            server.simulator.tenant("tenant-1").rotate()
            await eventually(lambda: len(receiver.received("/hook")) >= 1, what="a delivery")
            assert daemon.clients.routes == [Route(), Route(proxy=proxy.url)]
        tenant_url = server.tenant_url("tenant-1")
        seen = proxy.seen
        assert f"POST {tenant_url}/oauth/token" in seen
        assert f"GET {tenant_url}/api/v2/keys/signing" in seen
        assert f"POST {receiver.url('/hook')}" in seen
        assert env_proxy.seen == []


async def test_a_destination_may_go_direct_while_tenants_use_the_global_proxy(
    server: SimulatorServer, tmp_path: Path
) -> None:
    with ForwardProxy() as proxy, Receiver() as receiver:
        text = daemon_config(server, tmp_path, interval="200ms") + (
            f"proxy: '{proxy.url}'\n"
            + "destinations:\n"
            + hook_destination(receiver, "proxy: direct")
        )
        async with running(parse_config(text)):
            server.simulator.tenant("tenant-1").rotate()
            await eventually(lambda: len(receiver.received("/hook")) >= 1, what="a delivery")
        assert any("/api/v2/keys/signing" in line for line in proxy.seen)
        assert not any("/hook" in line for line in proxy.seen)


async def test_a_reload_that_sets_a_global_proxy_moves_the_tenants_onto_it(
    server: SimulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with ForwardProxy() as proxy:
        config = tmp_path / "keywatch.yaml"
        text = daemon_config(server, tmp_path)
        config.write_text(text)
        daemon = build_daemon(parse_config(text), config_path=config)
        await daemon.start()
        try:
            await asyncio.wait_for(daemon.wait_ready(), 15)
            assert proxy.seen == []
            config.write_text(text + f"proxy: '{proxy.url}'\nweb: {{auth_exempt: [/healthz]}}\n")
            assert await daemon.reload()
            await eventually(
                lambda: any("/api/v2/keys/signing" in line for line in proxy.seen),
                what="a poll through the proxy",
            )
        finally:
            await daemon.shutdown()
    assert (
        "listen, web, state, lease and metrics changes take effect after a restart" in caplog.text
    )


async def test_a_private_ca_is_trusted_with_ca_file_and_refused_without(pki: Pki) -> None:
    with Receiver(tls=pki.server_context()) as receiver:
        url = receiver.url("/hook")
        assert url.startswith("https://127.0.0.1:")
        trusted = build_notifier(webhook(url, ca_file=str(pki.ca_file)))  # type: ignore[arg-type]
        untrusted = build_notifier(webhook(url))  # type: ignore[arg-type]
        async with build_http_client(route=Route(ca_file=str(pki.ca_file))) as http:
            verdict = await trusted.deliver(http, rotation(), now=rotation().detected_at)
        assert verdict.outcome is Outcome.DELIVERED
        async with build_http_client() as http:
            refused = await untrusted.deliver(http, rotation(), now=rotation().detected_at)
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.post(url, content=b"{}")
        assert refused.outcome is Outcome.RETRY
        assert len(receiver.received("/hook")) == 1


async def test_https_through_the_proxy_is_a_connect_tunnel_verified_against_the_ca(
    pki: Pki,
) -> None:
    with ForwardProxy() as proxy, Receiver(tls=pki.server_context()) as receiver:
        clients = HttpClients(timeout=5.0)
        try:
            http = clients.get(Route(proxy=proxy.url, ca_file=str(pki.ca_file)))
            response = await http.post(receiver.url("/hook"), content=b"{}")
        finally:
            await clients.aclose()
        assert response.status_code == 204
        assert proxy.seen == [f"CONNECT 127.0.0.1:{receiver.port}"]


async def test_proxy_credentials_go_in_a_proxy_authorization_header(pki: Pki) -> None:
    """With a poll's request (straight to aiohttp) and a delivery's (through httpx), over
    plain HTTP and in the ``CONNECT`` of an HTTPS tunnel."""
    with (
        ForwardProxy() as proxy,
        Receiver() as plain,
        Receiver(tls=pki.server_context()) as tls,
    ):
        route = Route(
            proxy=proxy.url.replace("http://", "http://keywatch:s%3Acret@"),
            ca_file=str(pki.ca_file),
        )
        statuses = []
        for url in (plain.url("/api"), tls.url("/api")):
            async with build_http_client(route=route) as http:  # a new connection each
                answer = await request_limited(
                    http,
                    "POST",
                    url,
                    limit=1000,
                    endpoint="POST /api",
                    timeouts=build_timeout(5.0),
                    json={},
                )
            async with build_http_client(route=route) as http:
                response = await http.post(url, content=b"{}")
            statuses += [answer.status_code, response.status_code]
    assert statuses == [204] * 4
    assert proxy.seen == [f"POST {plain.url('/api')}"] * 2 + [f"CONNECT 127.0.0.1:{tls.port}"] * 2
    expected = "Basic " + base64.b64encode(b"keywatch:s:cret").decode()
    assert proxy.credentials == [expected] * 4


async def test_the_daemon_delivers_to_a_private_ca_destination_configured_globally(
    server: SimulatorServer, tmp_path: Path, pki: Pki
) -> None:
    with Receiver(tls=pki.server_context()) as receiver:
        text = daemon_config(server, tmp_path, interval="200ms") + (
            f"ca_file: '{pki.ca_file}'\n" + "destinations:\n" + hook_destination(receiver)
        )
        async with running(parse_config(text)) as daemon:
            server.simulator.tenant("tenant-1").rotate()
            await eventually(
                lambda: any(r.succeeded for r in receiver.received("/hook")), what="a delivery"
            )
            await eventually(
                lambda: daemon.store.delivery_counts() == {("hook", "delivered"): 2},
                what="both events marked delivered",
            )


# --- answers read with a limit ---------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hangs up mid-answer: that is what these tests do


class EndlessAnswer:
    """HTTP on 127.0.0.1 answering every request 200 with a chunked body of ``size`` bytes
    (no Content-Length: only reading can tell how long it is), or one byte every ``drip``
    seconds; counts the bytes it managed to send."""

    def __init__(self, size: int, *, drip: float = 0.0) -> None:
        self.size, self.drip, self.sent = size, drip, 0
        answer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b" " * (1 if answer.drip else 1 << 16)
                try:
                    while answer.sent < answer.size:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        answer.sent += len(chunk)
                        time.sleep(answer.drip)
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client hung up: that is the point

            do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> EndlessAnswer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


async def collect_abandoned_streams() -> None:
    """httpx's stream generators of a body not read to the end sit in a reference cycle; the
    garbage collection that finds them schedules their ``aclose`` as tasks, which the task
    guard would report: collect and let those tasks run now."""
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)


def static_client(http: httpx.AsyncClient, base: str, *, timeout: float = 5.0) -> Auth0Client:
    return Auth0Client(
        http,
        tenant="big",
        api_base=base,
        audience=f"{base}/api/v2/",
        credentials=Credentials(client_id=None, client_secret=None, token="t" * 20),
        timeout=timeout,
        policy=RetryPolicy(max_attempts=1),
    )


async def test_a_50_mb_answer_from_auth0_is_cut_off_with_an_error_naming_endpoint_and_limit() -> (
    None
):
    with EndlessAnswer(50 << 20) as big:
        async with build_http_client() as http:
            with pytest.raises(MalformedResponse) as raised:
                await static_client(http, big.url).list_signing_keys()
    await collect_abandoned_streams()
    assert str(raised.value) == (
        "tenant big: GET /api/v2/keys/signing: the answer is larger than 4 MiB; not read"
    )
    assert big.url not in str(raised.value)
    assert big.sent < 16 << 20  # stopped early, not read to the end


async def test_a_50_mb_jwks_is_cut_off_as_malformed_and_logged_with_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with EndlessAnswer(50 << 20) as big:
        targets = publication_targets(big.url, jwks=True)
        async with build_http_client() as http:
            reader = PublicationReader(http, tenant="big", targets=targets, timeout=5.0)
            [reading] = await reader.read(changed=True)
    await collect_abandoned_streams()
    assert reading.error == "malformed"
    assert (
        f"GET {big.url}/.well-known/jwks.json: the answer is larger than 4 MiB; not read"
        in caplog.text
    )
    assert big.sent < 16 << 20


async def test_an_answer_dripping_slower_than_the_timeout_allows_in_total_times_out() -> None:
    with EndlessAnswer(10_000, drip=0.05) as slow:
        async with build_http_client() as http:
            # every drip comes within the 0.5 s read timeout: only the total deadline ends it
            with pytest.raises(SourceTimeout, match="GET /api/v2/keys/signing timed out"):
                await static_client(http, slow.url, timeout=0.5).list_signing_keys()


async def test_a_50_mb_answer_from_a_destination_is_not_loaded() -> None:
    with EndlessAnswer(50 << 20) as big:
        notifier = build_notifier(webhook(f"{big.url}/hook"))  # type: ignore[arg-type]
        async with build_http_client() as http:
            verdict = await notifier.deliver(http, rotation(), now=rotation().detected_at)
    await collect_abandoned_streams()
    assert verdict.outcome is Outcome.DELIVERED
    assert big.sent < 16 << 20


def test_more_keys_than_a_tenant_may_have_is_refused_naming_the_limit() -> None:
    with pytest.raises(MalformedResponse, match=r"keys/signing: 501 keys, more than the 500"):
        parse_signing_keys([{}] * (MAX_KEYS_PER_TENANT + 1))


class CutShort:
    """HTTP on 127.0.0.1 that starts a chunked 200 answer, then closes the connection."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b'10\r\n[{"kid": "a"')
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> CutShort:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def test_a_refused_connection_is_a_connect_error_not_a_timeout() -> None:
    url = closed_port_url()
    async with build_http_client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url)
        with pytest.raises(SourceConnectError, match="GET /api/v2/keys/signing failed"):
            await static_client(http, url).list_signing_keys()


async def test_an_answer_cut_short_is_a_read_error_not_a_timeout() -> None:
    with CutShort() as cut:
        async with build_http_client() as http:
            with pytest.raises(httpx.TransportError) as raised:
                await http.get(cut.url)
            assert not isinstance(raised.value, httpx.TimeoutException)
            with pytest.raises(SourceConnectError):
                await static_client(http, cut.url).list_signing_keys()
