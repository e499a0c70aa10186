"""``keywatch demo``: the simulated tenant, the daemon against it, an operator script that
rotates the signing key and then revokes the key it rotated out, again and again, and a local
receiver that answers like each notification service and prints what it would have shown.

The destinations come from the demo configuration (``monitor/demo.yaml``, shipped inside the
package so the demo works wherever keywatch is installed), whose URLs point at
``${KEYWATCH_DEMO_RECEIVER}``, set here to the receiver's address. The simulated tenant also
serves a JWKS mirror that follows each change late (``DEMO_MIRROR``), which the demo
configuration watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from monitor.config import Settings, load_config, parse_config
from monitor.daemon import Daemon, build_daemon, ignore_stop_signals, secrets_of
from monitor.logs import configure_logging
from monitor.simulator import SimulatedTenant, SimulatorServer

DEMO_TENANT = "tenant-1"
DEMO_MIRROR = "gateway"
"""A mirror of the demo tenant's JWKS (``mirrors:`` in demo.yaml), like an API gateway's cache
that follows each key change a few seconds late: the demo shows it falling behind and
catching up after every rotation."""
PACKAGED_CONFIG = "demo.yaml"
"""The demo configuration, a resource of the ``monitor`` package."""
MIN_ROTATE_EVERY = 4.0
"""Seconds; twice the demo's poll interval, so every rotation and revocation is seen alone."""
RECEIVER_VARIABLE = "KEYWATCH_DEMO_RECEIVER"
ALERTMANAGER_PATH = "/alertmanager"


def _say(text: str) -> None:
    _print_line(f"demo: {text}")


async def _operator(daemon: Daemon, tenant: SimulatedTenant, *, rotate_every: float) -> None:
    await daemon.wait_ready()
    while True:
        await asyncio.sleep(rotate_every / 2)
        old = tenant.current_kid
        new = await asyncio.to_thread(tenant.rotate)
        _say(f"rotated the signing key in the simulated Auth0 (current was {old}; new next {new})")
        await asyncio.sleep(rotate_every / 2)
        for kid in tenant.previous_kids:
            await asyncio.to_thread(tenant.revoke, kid)
            _say(f"revoked the previous signing key {kid}")


async def _run(daemon: Daemon, tenant: SimulatedTenant, *, rotate_every: float) -> None:
    operator = asyncio.create_task(
        _operator(daemon, tenant, rotate_every=rotate_every), name="demo-operator"
    )
    try:
        await daemon.run()
    finally:
        operator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await operator


# --- the receiver -------------------------------------------------------------------------------

Answer = tuple[int, bytes, str]  # status, body, content type
Reader = Callable[[Any], str]  # the JSON body -> the human text the service would show


def _texts(document: Any) -> Iterator[str]:
    """Every ``text`` value in an Adaptive Card body, in order."""
    for block in document.get("body", []) if isinstance(document, dict) else []:
        if isinstance(block, dict) and isinstance(block.get("text"), str):
            yield block["text"]


def _teams_text(body: Any) -> str:
    card = body["attachments"][0]["content"]
    return next(_texts(card), "(no text)")


def _discord_text(body: Any) -> str:
    return str(body.get("content") or body["embeds"][0]["title"])


def _alertmanager_text(body: Any) -> str:
    now = datetime.now(UTC).isoformat()
    return "; ".join(
        f"{alert['labels']['alertname']} "
        f"{'resolved' if alert.get('endsAt', '9') <= now else 'firing'}: "
        f"{alert.get('annotations', {}).get('summary', '')}"
        for alert in body
    )


def _pagerduty_text(body: Any) -> str:
    return f"{body['event_action']} {body['payload']['severity']}: {body['payload']['summary']}"


def _webhook_text(body: Any) -> str:
    return str(body["data"]["summary"])


_JSON = "application/json"
RECEIVER_ROUTES: Mapping[str, tuple[str, Answer, Reader]] = {
    # Slack escapes &, < and > in its text; the app shows them plain
    "/slack": ("slack", (200, b"ok", "text/plain"), lambda body: html.unescape(body["text"])),
    "/teams": ("teams", (202, b"", "text/plain"), _teams_text),
    "/discord": ("discord", (200, b'{"id": "1", "type": 0}', _JSON), _discord_text),
    "/googlechat": (
        "googlechat",
        (200, b'{"name": "spaces/demo/messages/1"}', _JSON),
        lambda body: str(body["text"]),
    ),
    "/webhook": ("webhook", (204, b"", "text/plain"), _webhook_text),
    f"{ALERTMANAGER_PATH}/api/v2/alerts": ("alertmanager", (200, b"", _JSON), _alertmanager_text),
    "/pagerduty": (
        "pagerduty",
        (202, b'{"status": "success", "message": "Event processed"}', _JSON),
        _pagerduty_text,
    ),
}


def describe_post(path: str, body: bytes) -> tuple[Answer, str]:
    """The answer the service at ``path`` gives and the line the demo prints for the POST."""
    route = RECEIVER_ROUTES.get(path)
    if route is None:
        return (404, b"not found", "text/plain"), f"{path}: no such service in the demo"
    kind, answer, read = route
    try:
        text = read(json.loads(body))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        text = f"(unexpected body: {type(exc).__name__})"
    return answer, f"{kind:<12} {' '.join(text.split())}"


class DemoReceiver:
    """A loopback HTTP server, in a thread, standing in for every notification service."""

    def __init__(self, *, port: int = 0, say: Callable[[str], None] = print) -> None:
        self._say = say
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> DemoReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        say = self._say

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                (status, answer, content_type), line = describe_post(
                    self.path.split("?", 1)[0], body
                )
                say(f"receiver: {line}")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def packaged_config_text() -> str:
    return resources.files("monitor").joinpath(PACKAGED_CONFIG).read_text(encoding="utf-8")


def demo_settings(config_path: str | None, env: Mapping[str, str]) -> Settings:
    """The packaged demo configuration, or the file at ``config_path``."""
    if config_path is None:
        return parse_config(packaged_config_text(), source=PACKAGED_CONFIG, env=env)
    return load_config(config_path, env=env)


def run_demo(
    config_path: str | None,
    *,
    listen_port: int,
    state_dir: str,
    rotate_every: float,
    environ: Mapping[str, str],
) -> int:
    with SimulatorServer(tenants=1) as server, _receiver(environ) as receiver_url:
        env = {
            **environ,
            "KEYWATCH_SIM_PORT": str(server.port),
            "KEYWATCH_LISTEN_PORT": str(listen_port),
            "KEYWATCH_DEMO_STATE": f"{state_dir}/state.db",
            RECEIVER_VARIABLE: receiver_url,
        }
        settings = demo_settings(config_path, env)
        redactor = configure_logging(
            log_format=settings.log_format, level=settings.log_level, secrets=secrets_of(settings)
        )
        _say(f"simulated Auth0 tenant at {server.tenant_url(DEMO_TENANT)}")
        _say(f"notifications go to the local receiver at {receiver_url}:")
        kinds = ", ".join(f"{d.name} ({d.kind})" for d in settings.destinations)
        _say(f"  {kinds or 'no destinations configured'}")
        _say(f"metrics at http://127.0.0.1:{listen_port}/metrics   (Ctrl-C stops everything)")
        _say(f"a rotation every {rotate_every:g}s, the revocation of the old key halfway between")
        tenant = server.simulator.tenant(DEMO_TENANT)
        mirror_delay = rotate_every * 0.4  # long enough for two polls to see it behind
        tenant.publication.add_mirror(DEMO_MIRROR, delay=mirror_delay)
        _say(
            f"a JWKS mirror ({DEMO_MIRROR}, like an API gateway's cache) follows each key change "
            f"{mirror_delay:g}s late: watch mirror.stale, then mirror.synced with its lag"
        )
        daemon = build_daemon(settings, redactor=redactor)
        try:
            asyncio.run(_run(daemon, tenant, rotate_every=rotate_every))
        finally:
            ignore_stop_signals()  # the simulator, the receiver and the caller clean up
    _say("stopped")
    return 0


@contextlib.contextmanager
def _receiver(environ: Mapping[str, str]) -> Iterator[str]:
    """The demo receiver's URL: ours on a free port, unless ``KEYWATCH_DEMO_RECEIVER`` names
    another one."""
    given = environ.get(RECEIVER_VARIABLE)
    if given:
        yield given.rstrip("/")
        return
    with DemoReceiver(say=_print_line) as receiver:
        yield receiver.url


_OUTPUT_LOCK = threading.Lock()


def _print_line(line: str) -> None:
    """One whole line at a time: the receiver's threads print concurrently."""
    with _OUTPUT_LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
