"""How fast notifications arrive and what sending them costs, over loopback.

Two measurements:

1. Detection-to-delivery latency. ``keywatch run`` as a subprocess polls the simulated Auth0
   (in this process) every second (no jitter) and sends ``key.rotated`` events to a webhook
   receiver (in this process). The tenant's key is rotated at random moments, one rotation at
   a time; for each rotation two latencies are recorded: from the rotation to the POST (what
   a user sees: it includes waiting for the next poll, up to one interval) and from the
   event's ``detected_at`` to the POST (keywatch's own pipeline: commit, wake, render, send).
   Target: p99 of rotation -> POST <= 1.3 s.
2. Draining a backlog. A store holding 10,000 pending deliveries to one webhook destination
   is drained by the dispatcher in a worker process, against a receiver in another process;
   a second worker POSTs the same bodies (rendered by the same notifier) with a bare
   ``httpx`` client built the same way, one at a time. Each worker measures its own CPU time
   (all threads) over the work only, and reports it per delivery after the first ``WARM_UP``
   (the first connection, lazy imports and the dispatcher's start, shown apart as the whole
   run's figure); with two CPUs or more the workers run on one CPU and the receiver on
   another. Each round runs the two back to back (the order alternates); the ratio is the
   median of the rounds' ratios. Target: ratio <= 1.5.

    python bench/notify.py                           # the full run (about 3 minutes)
    python bench/notify.py --quick                   # a smoke run (not representative)
    python bench/notify.py --only drain --state-dir /dev/shm   # the drain without fsync cost

Exits 0 when the benchmark ran (whether or not a target was met), 1 when something broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from figures import Report, load, machine, verdict

from monitor.config import DestinationConfig, parse_destination
from monitor.httpclient import build_http_client
from monitor.logs import configure_logging
from monitor.metrics import Telemetry
from monitor.model import Event, EventType, Snapshot, make_event
from monitor.notify import build_notifier
from monitor.notify.dispatcher import Dispatcher
from monitor.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator, SimulatorServer
from monitor.store.sqlite import SQLiteStore

LATENCY_TARGET_P99 = 1.3
CPU_RATIO_TARGET = 1.5
POLL_INTERVAL = "1s"
DESTINATION = "bench"
BENCH_TENANT = "tenant-1"
POST_DEADLINE = 15.0
DAEMON_READY_DEADLINE = 60.0
WORKER_DEADLINE = 600.0
EVENTS_PER_POLL = 500
RECEIVER_LINE = re.compile(r"listening on (\d+)")
WARM_UP = 200
DEVNULL = open(os.devnull, "w")  # open for the life of the process


class BenchError(Exception):
    """Something broke: the benchmark could not measure what it set out to."""


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- a webhook receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    arrived: float  # time.time()
    body: dict[str, Any]


class Receiver:
    """Answers 204 to every POST, in a thread of this process, and keeps what it got."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.arrived = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, predicate: Any, *, deadline: float) -> Post:
        with self.arrived:
            while True:
                for post in self.posts:
                    if predicate(post.body):
                        return post
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError("no POST arrived for a rotation in time")
                self.arrived.wait(remaining)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.arrived:
                    receiver.posts.append(Post(arrived, json.loads(body)))
                    receiver.arrived.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def serve_forever_in_this_process() -> int:
    """The drain's receiver (``--role receiver``): answers 204, prints its port."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


# --- 1. latency ----------------------------------------------------------------------------------


def daemon_config(server: SimulatorServer, receiver: Receiver, state_dir: Path) -> str:
    return (
        'listen: "127.0.0.1:0"\n'
        f'state: "sqlite:///{state_dir}/state.db"\n'
        f"defaults: {{interval: {POLL_INTERVAL}, jitter: 0, timeout: 5s}}\n"
        "tenants:\n"
        f"  - name: {BENCH_TENANT}\n"
        f"    base_url: {server.tenant_url(BENCH_TENANT)}\n"
        f"    client_id: {DEFAULT_CLIENT_ID}\n"
        f"    client_secret: {DEFAULT_CLIENT_SECRET}\n"
        "destinations:\n"
        f"  - {{name: {DESTINATION}, kind: webhook, url: '{receiver.url}',"
        " events: [key.rotated]}\n"
    )


@contextmanager
def running_daemon(config: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_baseline(process: subprocess.Popen[str]) -> None:
    """Until the daemon logged its first poll of the tenant (its baseline)."""
    assert process.stdout is not None
    ready = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "baseline:" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(DAEMON_READY_DEADLINE):
        raise BenchError("the daemon did not poll the tenant:\n" + "".join(lines[-20:]))


@dataclass(frozen=True)
class Latencies:
    end_to_end: list[float]  # rotation -> POST
    pipeline: list[float]  # detected_at -> POST


def measure_latency(rotations: int, rng: random.Random) -> Latencies:
    end_to_end: list[float] = []
    pipeline: list[float] = []
    receiver = Receiver()
    try:
        with (
            SimulatorServer(Simulator(tenants=1, key_pool_size=4)) as server,
            tempfile.TemporaryDirectory(prefix="keywatch-bench-") as state_dir,
        ):
            config = Path(state_dir) / "keywatch.yaml"
            config.write_text(daemon_config(server, receiver, Path(state_dir)))
            tenant = server.simulator.tenant(BENCH_TENANT)
            with running_daemon(config) as process:
                wait_for_baseline(process)
                for number in range(rotations):
                    time.sleep(rng.uniform(0.1, 1.1))  # a random moment between two polls
                    new_current = tenant.next_kid
                    rotated_at = time.time()
                    tenant.rotate()
                    post = receiver.wait_for(
                        lambda body, kid=new_current: body["data"]["new_kid"] == kid,
                        deadline=time.monotonic() + POST_DEADLINE,
                    )
                    detected = datetime.fromisoformat(post.body["data"]["detected_at"])
                    end_to_end.append(post.arrived - rotated_at)
                    pipeline.append(post.arrived - detected.timestamp())
                    print(f"  rotation {number + 1}/{rotations}: {end_to_end[-1]:.3f} s", end="\r")
        print()
    finally:
        receiver.close()
    return Latencies(end_to_end, pipeline)


# --- 2. draining a backlog -----------------------------------------------------------------------


def bench_destination(url: str) -> DestinationConfig:
    return parse_destination(
        {"name": DESTINATION, "kind": "webhook", "url": url, "rate_limit": 1_000_000}
    )


def backlog_events(count: int) -> list[Event]:
    start = datetime.now(UTC) - timedelta(hours=1)
    return [
        make_event(
            "bench",
            EventType.KEY_REVOKED,
            start + timedelta(milliseconds=number),
            [f"bench-kid-{number:06d}", "previous", "revoked"],
            kid=f"bench-kid-{number:06d}",
            details={"old_state": "previous", "new_state": "revoked"},
        )
        for number in range(count)
    ]


def write_backlog(path: Path, events: list[Event]) -> None:
    store = SQLiteStore(path)
    try:
        store.migrate()
        for first in range(0, len(events), EVENTS_PER_POLL):
            batch = events[first : first + EVENTS_PER_POLL]
            snapshot = Snapshot(tenant="bench", taken_at=batch[0].detected_at, keys={})
            store.save_poll(snapshot, batch, [(event.id, DESTINATION) for event in batch])
    finally:
        store.close()


def write_bodies(path: Path, events: list[Event]) -> None:
    """The requests the dispatcher sends, rendered by the same notifier, for the bare run."""
    notifier = build_notifier(bench_destination("http://127.0.0.1:1/hook"))
    now = datetime.now(UTC)
    with path.open("w") as out:
        for event in events:
            request = notifier.render(event, now=now)
            out.write(json.dumps({"body": request.body.decode(), "headers": dict(request.headers)}))
            out.write("\n")


def pending(store: SQLiteStore) -> int:
    stats = store.outbox_stats().get(DESTINATION)
    return stats.pending if stats is not None else 0


class CountedTelemetry(Telemetry):
    """Counts the attempts' outcomes as the dispatcher records them: the CPU clock is read
    after the warm-up and at the last one, and the waiting ends then (no polling)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total, self.outcomes = total, 0
        self.warm_cpu = math.nan
        self.done = asyncio.Event()

    def record_notification(
        self, destination: str, outcome: str, *, latency: float | None = None
    ) -> None:
        super().record_notification(destination, outcome, latency=latency)
        if outcome in ("delivered", "dead"):
            self.outcomes += 1
            if self.outcomes == warm_up(self.total):
                self.warm_cpu = time.process_time()
            if self.outcomes == self.total:
                self.done.set()


def warm_up(total: int) -> int:
    """Deliveries left out of the per-delivery figure, on both sides: the first requests (the
    connection, lazy imports) and the dispatcher's start."""
    return min(WARM_UP, total // 10)


def figures(
    cpu: float, warm_cpu: float, end_cpu: float, wall: float, count: int
) -> dict[str, float]:
    steady = count - warm_up(count)
    return {
        "cpu": cpu,
        "steady_cpu": (end_cpu - warm_cpu) * count / steady,
        "wall": wall,
        "count": count,
    }


async def drain(state: Path, url: str) -> dict[str, float]:
    """``--role drain``: the dispatcher empties the store; CPU of this process meanwhile."""
    # The daemon logs one line per attempt: so does this worker (to /dev/null).
    configure_logging(level="info", stream=DEVNULL)
    store = SQLiteStore(state)
    total = pending(store)
    telemetry = CountedTelemetry(total)
    async with build_http_client() as http:
        dispatcher = Dispatcher(store=store, http=http, telemetry=telemetry)
        cpu, wall = time.process_time(), time.perf_counter()
        await dispatcher.start([build_notifier(bench_destination(url))])
        await telemetry.done.wait()
        end_cpu, wall = time.process_time(), time.perf_counter() - wall
        await dispatcher.stop(grace=5)
    delivered = store.delivery_counts().get((DESTINATION, "delivered"), 0)
    store.close()
    if delivered != total:
        raise BenchError(f"drain: {delivered} of {total} delivered")
    return figures(end_cpu - cpu, telemetry.warm_cpu, end_cpu, wall, delivered)


def read_bodies(bodies: Path) -> list[tuple[bytes, dict[str, str]]]:
    requests = [json.loads(line) for line in bodies.read_text().splitlines()]
    return [(request["body"].encode(), request["headers"]) for request in requests]


async def bare(bodies: Path, url: str) -> dict[str, float]:
    """``--role bare``: the same bodies POSTed one at a time with a bare httpx client."""
    payloads = read_bodies(bodies)
    warm = warm_up(len(payloads))
    async with build_http_client() as http:
        cpu, wall = time.process_time(), time.perf_counter()
        warm_cpu = cpu
        for number, (body, headers) in enumerate(payloads, start=1):
            response = await http.post(url, content=body, headers=headers)
            if response.status_code != 204:
                raise BenchError(f"bare: HTTP {response.status_code}")
            if number == warm:
                warm_cpu = time.process_time()
        end_cpu, wall = time.process_time(), time.perf_counter() - wall
    return figures(end_cpu - cpu, warm_cpu, end_cpu, wall, len(payloads))


def pin(role: str) -> None:
    """With two CPUs or more, the receiver runs on another CPU than the worker measured."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[-1] if role == "receiver" else cpus[0]})


def run_worker(role: str, *args: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--role", role, *args],
        capture_output=True,
        text=True,
        timeout=WORKER_DEADLINE,
    )
    if result.returncode != 0:
        raise BenchError(f"{role} worker failed:\n{result.stdout}{result.stderr}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


@contextmanager
def receiver_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--role", "receiver"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        found = RECEIVER_LINE.search(process.stdout.readline())
        if found is None:
            raise BenchError("the receiver did not start")
        yield f"http://127.0.0.1:{found.group(1)}/hook"
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass(frozen=True)
class DrainFigures:
    deliveries: int
    drain_cpu: list[float]  # per delivery, after the warm-up
    bare_cpu: list[float]
    drain_wall: list[float]
    bare_wall: list[float]
    drain_total: list[float]  # per delivery, the whole run (start included)
    bare_total: list[float]

    @property
    def ratios(self) -> list[float]:
        """Each round's dispatcher / bare: the two ran back to back, in the same conditions."""
        return [d / b for d, b in zip(self.drain_cpu, self.bare_cpu, strict=True)]


def measure_drain(count: int, rounds: int, *, state_dir: str | None) -> DrainFigures:
    events = backlog_events(count)
    found = DrainFigures(count, [], [], [], [], [], [])
    with (
        tempfile.TemporaryDirectory(prefix="keywatch-bench-", dir=state_dir) as work,
        receiver_process() as url,
    ):
        template, bodies = Path(work) / "backlog.db", Path(work) / "bodies.jsonl"
        write_backlog(template, events)
        write_bodies(bodies, events)
        for number in range(rounds):
            state = Path(work) / f"state-{number}.db"
            shutil.copyfile(template, state)
            roles = [("bare", str(bodies)), ("drain", str(state))]
            for role, path in roles if number % 2 == 0 else roles[::-1]:  # alternate the order
                figures = run_worker(role, path, url)
                getattr(found, f"{role}_cpu").append(figures["steady_cpu"] / count)
                getattr(found, f"{role}_total").append(figures["cpu"] / count)
                getattr(found, f"{role}_wall").append(figures["wall"])
            print(
                f"  round {number + 1}/{rounds}: dispatcher {found.drain_cpu[-1] * 1e6:.0f} us, "
                f"bare httpx {found.bare_cpu[-1] * 1e6:.0f} us a delivery "
                f"(ratio {found.ratios[-1]:.2f})"
            )
    return found


# --- report --------------------------------------------------------------------------------------


def report_latency(report: Report, latencies: Latencies) -> None:
    count = len(latencies.end_to_end)
    p50, p99 = (percentile(latencies.end_to_end, q) for q in (0.50, 0.99))
    report.section(f"Notify latency: {count} rotations, poll interval {POLL_INTERVAL}, no jitter")
    report.add("rotation -> POST, p50", f"{p50:.3f} s")
    report.add(
        "rotation -> POST, p99",
        f"{p99:.3f} s",
        f"<= {LATENCY_TARGET_P99} s",
        verdict(p99 <= LATENCY_TARGET_P99),
    )
    q50, q99 = (percentile(latencies.pipeline, q) for q in (0.50, 0.99))
    report.add("detected_at -> POST, p50 / p99", f"{q50 * 1000:.1f} / {q99 * 1000:.1f} ms")


def report_drain(report: Report, found: DrainFigures) -> None:
    drain_cpu, bare_cpu = statistics.median(found.drain_cpu), statistics.median(found.bare_cpu)
    ratio = statistics.median(found.ratios)
    rounds = len(found.drain_cpu)
    report.section(f"Notify drain: {found.deliveries} deliveries (median of {rounds})")
    warm = warm_up(found.deliveries)
    report.add(f"dispatcher CPU per delivery (after the first {warm})", f"{drain_cpu * 1e6:.0f} us")
    report.add(f"bare httpx CPU per delivery (after the first {warm})", f"{bare_cpu * 1e6:.0f} us")
    report.add(
        "ratio dispatcher / bare (median of the rounds' ratios)",
        f"{ratio:.2f}",
        f"<= {CPU_RATIO_TARGET}",
        verdict(ratio <= CPU_RATIO_TARGET),
    )
    report.add("the rounds' ratios", " / ".join(f"{r:.2f}" for r in found.ratios))
    report.add(
        "CPU per delivery, whole run (start included): dispatcher / bare",
        f"{statistics.median(found.drain_total) * 1e6:.0f} / "
        f"{statistics.median(found.bare_total) * 1e6:.0f} us",
    )
    drain_wall = statistics.median(found.drain_wall)
    bare_wall = statistics.median(found.bare_wall)
    report.add("wall time: dispatcher / bare", f"{drain_wall:.1f} / {bare_wall:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rotations", type=int, help="rotations to time (default 60)")
    parser.add_argument("--deliveries", type=int, help="queued deliveries (default 10000)")
    parser.add_argument("--rounds", type=int, help="drain rounds (default 3)")
    parser.add_argument("--only", choices=["latency", "drain"], help="run one measurement")
    parser.add_argument(
        "--state-dir",
        help="where the drain's SQLite store lives (default: the temp directory); "
        "/dev/shm shows the cost without the per-delivery fsync",
    )
    parser.add_argument("--figures", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--role", choices=["receiver", "drain", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("worker_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.role is not None:
            pin(args.role)
        if args.role == "receiver":
            return serve_forever_in_this_process()
        if args.role in ("drain", "bare"):
            path, url = args.worker_args
            work = drain if args.role == "drain" else bare
            print(json.dumps(asyncio.run(work(Path(path), url))))
            return 0
        rotations = args.rotations or (8 if args.quick else 60)
        deliveries = args.deliveries or (1000 if args.quick else 10_000)
        rounds = args.rounds or (1 if args.quick else 3)
        print(f"machine: {machine()}; {load()}")
        report = Report()
        if args.only != "drain":
            print(f"latency: {rotations} rotations")
            report_latency(report, measure_latency(rotations, random.Random(1)))
        if args.only != "latency":
            print(f"drain: {deliveries} deliveries, {rounds} round(s)")
            report_drain(report, measure_drain(deliveries, rounds, state_dir=args.state_dir))
        if args.figures:
            report.write_json(args.figures)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
