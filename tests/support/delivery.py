"""A loopback HTTP receiver that scripts its answers and records every request, a clock that
runs faster than real time, and small helpers for the notification tests."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from monitor.clock import Clock

DEADLINE_SECONDS = 20.0


@dataclass(frozen=True)
class Answer:
    """What the receiver answers one request with, after holding it ``delay`` seconds."""

    status: int = 204
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    times_out: bool = False  # the delay is longer than the client waits


def timeout(seconds: float) -> Answer:
    """Hold the request ``seconds`` (more than the client's timeout), then answer 200."""
    return Answer(200, b"ok", delay=seconds, times_out=True)


@dataclass(eq=False)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    answer: Answer
    at: float  # Receiver.clock() when the request arrived
    answered_at: float | None = None  # when the answer was written (None: never)
    query: str = ""  # what followed "?" in the request's target

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str | None:
        """The webhook-id header, else the event id a renderer put in the body."""
        if "webhook-id" in self.headers:
            return self.headers["webhook-id"]
        text = self.body.decode("utf-8", "replace")
        marker = "event id `"
        if marker in text:
            return text.split(marker, 1)[1].split("`", 1)[0]
        return None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.answer.status < 300 and not self.answer.times_out


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up (a killed daemon) is part of the tests


class Receiver:
    """``ThreadingHTTPServer`` on 127.0.0.1:0 (HTTPS with ``tls``). Each path answers its
    scripted answers in order, then its default (``defaults``, else ``default``)."""

    def __init__(
        self,
        *,
        default: Answer = Answer(),
        defaults: dict[str, Answer] | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.default = default
        self.scheme = "https" if tls is not None else "http"
        self.defaults = dict(defaults or {})
        self.clock = clock
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts[path].extend(answers)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer_for(self, path: str) -> Answer:
        with self._lock:
            script = self._scripts.get(path)
            if script:
                return script.popleft()
        return self.defaults.get(path, self.default)

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the client died mid-body (a killed daemon): no request arrived
                path, _, query = self.path.partition("?")
                answer = receiver._answer_for(path)
                headers = {name.lower(): value for name, value in self.headers.items()}
                received = Received(path, headers, body, answer, receiver.clock(), query=query)
                receiver._record(received)
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up (a scripted timeout, a killed daemon)
                received.answered_at = receiver.clock()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class ScaledClock:
    """Time that moves only when a sleep on it ends, to the moment that sleep was due; a sleep
    lasts ``1 / scale`` of its length in real time. Backoff, Retry-After and rate limits keep
    their order and ratios while tests stay fast, and the work between sleeps (requests,
    commits) takes no time, however busy the machine: scaling the real clock instead turned
    10 ms of a loaded machine into a second of protocol time (a flaky attempt count)."""

    resolution = 1e-6  # whole microseconds, as in the datetimes the outbox stores

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._micros = 0
        self._start_wall = datetime.now(UTC)

    def monotonic(self) -> float:
        return self._micros * self.resolution

    def now(self) -> datetime:
        return self._start_wall + timedelta(microseconds=self._micros)

    async def sleep(self, seconds: float) -> None:
        length = max(seconds, 0.0)
        due = self._micros + round(length / self.resolution)
        await asyncio.sleep(length / self.scale)
        self._micros = max(self._micros, due)

    @property
    def clock(self) -> Clock:
        return Clock(now=self.now, monotonic=self.monotonic, sleep=self.sleep)


async def eventually(check: Callable[[], bool], *, what: str) -> None:
    """Poll ``check`` until it holds or the deadline passes: the one way tests wait."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def first_successes(received: Iterable[Received]) -> list[str | None]:
    """Event ids in the order they were first answered with a success."""
    seen: list[str | None] = []
    for request in received:
        if request.succeeded and request.event_id not in seen:
            seen.append(request.event_id)
    return seen


def ids(received: Iterable[Received]) -> Iterator[str | None]:
    return (request.event_id for request in received)
