"""How much CPU and memory polling costs, against the simulated Auth0 on 127.0.0.1.

Two measurements, each with the simulator in a separate process so its CPU is not counted:

1. Per-poll CPU, in this process, for one tenant and the same response: keywatch's poll path
   (``Daemon.poll_tenant``: fetch + parse + diff + telemetry, the store only on a change) and a
   bare ``httpx`` GET of the same URL + JSON parse, with the same client settings. Several
   rounds alternate the two; the medians and their ratio are reported (target: ratio <= 2.0).
2. A fleet: ``keywatch run`` as a subprocess watching many tenants (default 1,000, every 60 s,
   10% jitter). Its CPU share (utime + stime from /proc over wall time) is measured over a
   window that starts once every tenant has been polled (/readyz answers 200), and reported
   separately for the start-up (launch until ready); RSS at the end and at its peak (VmHWM).
   Targets: under 10% of one core, under 150 MB.

    python bench/poll.py              # the full run (a few minutes); `make bench`
    python bench/poll.py --quick      # a smoke run (figures not representative)
    python bench/poll.py --help       # the options: sizes, window, scraping, profiling

Exits 0 when the benchmark ran (whether or not a target was met), 1 when something broke.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import gc
import io
import logging
import math
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from figures import Report, load, machine, verdict

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.httpclient import (
    TRANSPORT,
    HttpClients,
    Route,
    Transport,
    build_http_client,
)
from monitor.metrics import SPECS, PublicationView, Telemetry, build_registry, prepared_chunks
from monitor.model import KeyState, Snapshot
from monitor.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from monitor.sources.auth0 import KEYS_PATH, TOKEN_PATH
from monitor.store import open_store

RATIO_TARGET = 2.0
TRANSPORTS: tuple[Transport, ...] = ("httpcore", "aiohttp")  # measured side by side
TRANSPORT_NAMES = {"httpcore": "httpcore (httpx's own)", "aiohttp": "httpx-aiohttp"}
BIG_FLEET = 10_000  # the targets of issue 12 are for this size; smaller fleets show the growth
CPU_SHARE_TARGET = 0.20
RSS_TARGET_MB = 250.0
STARTUP_TARGET_SECONDS = 30.0
ANSWER_TARGET_MS = 100.0
SCRAPE_TARGET_MS = 150.0
FLEET_RATIO_TARGET = 1.5
KEYS_PER_TENANT = 3  # the simulator's tenants: current, next, previous
API_SAMPLE_TENANTS = 50
SCRAPES_MEASURED = 10
POLLED_BETWEEN_SCRAPES = 0.25  # a scrape every 15 s, each tenant polled every 60 s
PROBE_EVERY_SECONDS = 0.25
SCRAPE_PROBE_EVERY_SECONDS = 5.0  # a scrape of 10,000 tenants costs ~0.15 s of CPU

BENCH_TENANT = "tenant-1"
HTTP_TIMEOUT_SECONDS = 10.0
SIMULATOR_START_SECONDS = 180.0
DAEMON_READY_SECONDS = 600.0
STOP_GRACE_SECONDS = 20.0
SCRAPE_TIMEOUT_SECONDS = 60.0
FLEET_JITTER = 0.1
SAMPLE_EVERY_SECONDS = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROFILE_TOP = 20

SIMULATOR_BANNER = re.compile(r"keywatch simulator: \d+ tenant\(s\) on (http://127\.0\.0\.1:\d+)")
DAEMON_LISTENING = re.compile(r"serving http://127\.0\.0\.1:(\d+)/metrics")
SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", re.MULTILINE)

log = logging.getLogger("bench")


class BenchError(Exception):
    """Something broke: the benchmark could not measure what it set out to."""


# --- processes ---------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = "\n".join(self.log_text().splitlines()[-15:])
            raise BenchError(f"{self.name} exited with code {code}; last lines of its log:\n{tail}")

    def wait_for_log(self, pattern: re.Pattern[str], *, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = pattern.search(self.log_text())
            if found:
                return found
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: no {pattern.pattern!r} in its log after {timeout}s")
            time.sleep(0.1)

    def stop(self) -> float | None:
        """SIGTERM, then SIGKILL after a grace period; only this child, by its pid.

        Returns the seconds it took to exit after SIGTERM, None when it had to be killed."""
        if self.process.poll() is not None:
            return 0.0
        asked = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %ss; killing it", self.name, STOP_GRACE_SECONDS)
            self.process.kill()
            self.process.wait()
            return None
        return time.monotonic() - asked


@contextmanager
def child_process(name: str, args: list[str], *, workdir: Path) -> Iterator[Child]:
    """Run ``python ARGS`` with stdout and stderr in ``workdir/NAME.log``; always stopped."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    child = Child(name=name, process=process, log_path=log_path)
    try:
        yield child
    finally:
        child.stop()


@contextmanager
def simulator(tenants: int, *, workdir: Path) -> Iterator[str]:
    """A ``keywatch simulate`` subprocess on a free loopback port; yields its base URL."""
    args = ["-m", "monitor", "simulate", "--listen", "127.0.0.1:0", "--tenants", str(tenants)]
    with child_process("simulator", args, workdir=workdir) as child:
        # The banner is printed after every tenant's keys exist.
        banner = child.wait_for_log(SIMULATOR_BANNER, timeout=SIMULATOR_START_SECONDS)
        yield banner.group(1)


def tenant_lines(base_url: str, names: list[str]) -> list[str]:
    lines = ["tenants:"]
    for name in names:
        lines += [
            f"  - name: {name}",
            f"    base_url: {base_url}/{name}",
            f"    client_id: {DEFAULT_CLIENT_ID}",
            f"    client_secret: {DEFAULT_CLIENT_SECRET}",
        ]
    return lines


def daemon_config(base_url: str, names: list[str], *, workdir: Path, defaults: str) -> str:
    lines = [
        'listen: "127.0.0.1:0"',
        f"data_dir: {workdir}",
        f'state: "sqlite:///{workdir}/state.db"',
        f"defaults: {defaults}",
        *tenant_lines(base_url, names),
    ]
    return "\n".join(lines) + "\n"


# --- /proc -------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of the process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) in MB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024  # kB
    return found


# --- 1. per-poll CPU -----------------------------------------------------------------------------


@dataclass
class PollCpu:
    """CPU ms per poll by contender (one value per round), measured side by side."""

    rounds: dict[str, list[float]]
    polls: int

    def median(self, contender: str) -> float:
        return statistics.median(self.rounds[contender])


async def cpu_ms_per_call(call: Callable[[], Awaitable[object]], count: int) -> float:
    gc.collect()
    started = time.process_time()
    for _ in range(count):
        await call()
    return (time.process_time() - started) * 1000 / count


class BarePoller:
    """The floor: one GET of the keys endpoint with a bearer token fetched once, JSON parsed."""

    def __init__(self, http: httpx.AsyncClient, tenant_url: str) -> None:
        self._http = http
        self._tenant_url = tenant_url
        self._url = f"{tenant_url}{KEYS_PATH}"
        self._headers: dict[str, str] = {}

    async def fetch_token(self) -> None:
        response = await self._http.post(
            f"{self._tenant_url}{TOKEN_PATH}",
            json={
                "grant_type": "client_credentials",
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": DEFAULT_CLIENT_SECRET,
                "audience": f"{self._tenant_url}/api/v2/",
            },
        )
        if response.status_code != 200:
            raise BenchError(f"token request: HTTP {response.status_code}")
        self._headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def poll(self) -> object:
        response = await self._http.get(self._url, headers=self._headers)
        if response.status_code != 200:
            raise BenchError(f"GET {KEYS_PATH}: HTTP {response.status_code}")
        keys = response.json()
        if not isinstance(keys, list) or not keys:
            raise BenchError(f"GET {KEYS_PATH}: expected a non-empty JSON list")
        return keys


def failed_polls(daemon: Daemon) -> float:
    return sum(
        sample.value
        for metric in daemon.registry.collect()
        for sample in metric.samples
        if sample.name == "keywatch_api_errors_total"
    )


class OneClient(HttpClients):
    """Every route gets the given client (the transport under measurement)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        super().__init__()
        self._client = client

    def get(self, route: Route = Route()) -> httpx.AsyncClient:  # noqa: B008 (a frozen value)
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()


def daemon_on(settings_text: str, http: httpx.AsyncClient) -> Daemon:
    """``build_daemon``, but on the given HTTP client."""
    telemetry = Telemetry()
    settings = parse_config(settings_text)
    return Daemon(
        settings=settings,
        store=open_store(settings.state),
        clients=OneClient(http),
        telemetry=telemetry,
        registry=build_registry(telemetry, version="bench"),
    )


async def measure_poll_cpu(
    base_url: str,
    *,
    workdir: Path,
    polls: int,
    rounds: int,
    warmup: int,
    profile_to: Path | None,
) -> PollCpu:
    defaults = "{interval: 1h, jitter: 0}"
    clients = {
        transport: build_http_client(timeout=HTTP_TIMEOUT_SECONDS, transport=transport)
        for transport in TRANSPORTS
    }
    contenders: dict[str, Callable[[], Awaitable[object]]] = {}
    daemons: list[Daemon] = []
    try:
        for transport, http in clients.items():
            config = daemon_config(
                base_url, [BENCH_TENANT], workdir=workdir / transport, defaults=defaults
            )
            (workdir / transport).mkdir(parents=True, exist_ok=True)
            daemon = daemon_on(config, http)
            daemons.append(daemon)
            await daemon.start()  # the first poll (the baseline) runs right away
            await asyncio.wait_for(daemon.wait_ready(), HTTP_TIMEOUT_SECONDS)
            bare = BarePoller(http, f"{base_url}/{BENCH_TENANT}")
            await bare.fetch_token()
            contenders[f"keywatch/{transport}"] = functools.partial(
                daemon.poll_tenant, BENCH_TENANT
            )
            contenders[f"bare/{transport}"] = bare.poll
        for call in contenders.values():
            await cpu_ms_per_call(call, warmup)
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for round_number in range(rounds):
            order = list(contenders) if round_number % 2 == 0 else list(contenders)[::-1]
            for name in order:
                results[name].append(await cpu_ms_per_call(contenders[name], polls))
        if profile_to is not None:
            await profile_polls(contenders[f"keywatch/{TRANSPORT}"], polls, profile_to)
        failures = sum(failed_polls(daemon) for daemon in daemons)
        if failures:
            raise BenchError(f"{failures:g} keywatch polls failed; see the log above")
    finally:
        for daemon in daemons:
            await daemon.shutdown()  # closes its client
    return PollCpu(rounds=results, polls=polls)


async def profile_polls(call: Callable[[], Awaitable[object]], count: int, path: Path) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        await call()
    profiler.disable()
    profiler.dump_stats(path)


# --- 2. fleet ----------------------------------------------------------------------------------


@dataclass
class Latencies:
    """Wall times of requests to the daemon, in seconds."""

    samples: list[float] = field(default_factory=list)
    failures: int = 0
    spans: list[tuple[float, float]] = field(default_factory=list)  # monotonic start, end

    @property
    def worst(self) -> float:
        return max(self.samples, default=math.nan)

    def worst_outside(self, others: Latencies) -> float:
        """The slowest answer that overlapped none of ``others``' requests (a /healthz probe
        that waited for no scrape)."""
        alone = [
            took
            for took, (start, end) in zip(self.samples, self.spans, strict=True)
            if not any(
                start < other_end and other_start < end for other_start, other_end in others.spans
            )
        ]
        return max(alone, default=math.nan)


@dataclass
class Scrapes:
    """Scrapes of /metrics after the window: CPU of each (clock ticks, less the polling's
    share of the scrape's wall time: the fleet keeps polling meanwhile), body size."""

    cpu: list[float] = field(default_factory=list)
    size: int = 0
    lines: int = 0

    @property
    def p99(self) -> float:
        return percentile(self.cpu, 0.99)


@dataclass
class Fleet:
    tenants: int
    interval: float
    startup_wall: float
    startup_cpu: float
    window_wall: float
    window_cpu: float
    rss_end_mb: float
    rss_peak_mb: float
    stop_seconds: float | None
    startup_healthz: Latencies
    startup_metrics: Latencies
    lag_during_scrapes: Latencies
    plain: Scrapes
    gzipped: Scrapes
    api_calls: dict[str, float]  # per sampled tenant, in the window
    window_polls: float | None = None
    window_errors: float | None = None
    tenants_up: float | None = None

    @property
    def window_share(self) -> float:
        return self.window_cpu / self.window_wall

    @property
    def cpu_per_poll(self) -> float | None:
        return self.window_cpu / self.window_polls if self.window_polls else None

    @property
    def polls_per_hour(self) -> float:
        """Per tenant, at the mean interval."""
        return 3600 / (self.interval * (1 + FLEET_JITTER / 2))

    @property
    def tenant_polls_per_hour(self) -> float:
        """Polls per tenant per hour in the window (counted, not the mean interval's)."""
        if not self.window_polls:
            return self.polls_per_hour
        return self.window_polls / self.tenants / (self.window_wall / 3600)

    @property
    def requests_per_poll(self) -> float:
        """HTTP requests a tenant's poll makes (tokens aside), counted at the simulator."""
        calls = self.api_calls
        public = sum(count for name, count in calls.items() if name.startswith("public:"))
        made = calls.get("list_keys", 0.0) + calls.get("get_key", 0.0) + public
        return max(1.0, made / self.tenant_polls_per_hour)

    @property
    def expected_polls(self) -> float:
        """Polls at the mean interval: APScheduler's jitter adds 0..jitter to each interval."""
        return self.tenants * self.window_wall / (self.interval * (1 + FLEET_JITTER / 2))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def metric_total(text: str, name: str) -> float:
    """The sum of every sample called ``name`` in a Prometheus text exposition."""
    return sum(float(value) for found, _, value in SAMPLE_LINE.findall(text) if found == name)


class Prober:
    """GETs a path of the daemon every ``every`` seconds in a thread, timing each answer,
    until stopped: is the event loop free while the daemon is busy?"""

    def __init__(self, base_url: str, path: str, *, every: float) -> None:
        self.latencies = Latencies()
        self._base_url = base_url
        self._path = path
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _get(self, http: httpx.Client) -> int:
        """The status, once the last byte came; the body is not decompressed, as that is the
        scraper's work, not the daemon's (about 0.1 s of this process's CPU at 10,000 tenants)."""
        with http.stream("GET", self._path) as response:
            for _ in response.iter_raw():
                pass
            return response.status_code

    def _run(self) -> None:
        with httpx.Client(
            base_url=self._base_url, timeout=SCRAPE_TIMEOUT_SECONDS, trust_env=False
        ) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    ok = self._get(http) < 500 or self._path == "/readyz"
                except httpx.HTTPError:
                    ok = False
                if ok:
                    ended = time.monotonic()
                    self.latencies.samples.append(ended - started)
                    self.latencies.spans.append((started, ended))
                else:
                    self.latencies.failures += 1
                self._stop.wait(self._every)


def wait_ready(http: httpx.Client, daemon: Child, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        daemon.check_alive()
        try:
            if http.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"the daemon was not ready (/readyz) within {timeout:g}s")
        time.sleep(0.2)


def scrape(http: httpx.Client, *, encoding: str = "gzip") -> httpx.Response | None:
    """GET /metrics; a failed or slow scrape is a finding to report, not a crash."""
    try:
        response = http.get("/metrics", headers={"Accept-Encoding": encoding})
    except httpx.HTTPError as exc:
        log.warning("GET /metrics failed: %s", type(exc).__name__)
        return None
    if response.status_code != 200:
        log.warning("GET /metrics: HTTP %d", response.status_code)
        return None
    return response


def measure_scrapes(
    http: httpx.Client, pid: int, *, encoding: str, count: int, polling_share: float
) -> Scrapes:
    found = Scrapes()
    for _ in range(count):
        before, started = cpu_seconds(pid), time.monotonic()
        response = scrape(http, encoding=encoding)
        if response is not None:
            polling = polling_share * (time.monotonic() - started)
            found.cpu.append(max(0.0, cpu_seconds(pid) - before - polling))
            found.size = int(response.headers.get("content-length", len(response.content)))
            found.lines = response.text.count("\n")
    return found


def api_calls(base_url: str, tenants: list[str]) -> dict[str, float]:
    """Management API requests the simulator served, summed over ``tenants``."""
    total: dict[str, float] = {}
    with httpx.Client(timeout=SCRAPE_TIMEOUT_SECONDS, trust_env=False) as http:
        for tenant in tenants:
            state = http.get(f"{base_url}/{tenant}/__admin/state").json()
            public = state.get("publication", {}).get("requests", {})
            for endpoint, count in [
                *state.get("requests", {}).items(),
                *((f"public:{name}", count) for name, count in public.items()),
            ]:
                total[endpoint] = total.get(endpoint, 0) + count
    return total


def fleet_names(tenants: int) -> list[str]:
    return [f"tenant-{number}" for number in range(1, tenants + 1)]


def fleet_config(base_url: str, tenants: int, *, interval: float, workdir: Path) -> Path:
    defaults = f"{{interval: {interval:g}s, jitter: {FLEET_JITTER:g}}}"
    path = workdir / "fleet.yaml"
    text = daemon_config(base_url, fleet_names(tenants), workdir=workdir, defaults=defaults)
    path.write_text(text)
    return path


@contextmanager
def sampled(pid: int, path: Path | None) -> Iterator[None]:
    """py-spy samples the process while the block runs (nothing when ``path`` is None)."""
    if path is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(pid), "--rate", "50", "--format", "raw"]
    process = subprocess.Popen(
        [*command, "--nonblocking", "-o", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        process.wait(timeout=STOP_GRACE_SECONDS)


def measure_fleet(
    base_url: str,
    *,
    workdir: Path,
    tenants: int,
    interval: float,
    window: float,
    scrape_every: float,
    profile_to: Path | None,
    sample_to: Path | None,
) -> Fleet:
    config_path = fleet_config(base_url, tenants, interval=interval, workdir=workdir)
    profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    args = [*profiler, "-m", "monitor", "run", "--config", str(config_path)]
    sample_tenants = fleet_names(tenants)[:: max(1, tenants // API_SAMPLE_TENANTS)]
    launched = time.monotonic()
    with child_process("daemon", args, workdir=workdir) as daemon:
        port = daemon.wait_for_log(DAEMON_LISTENING, timeout=DAEMON_READY_SECONDS).group(1)
        daemon_url = f"http://127.0.0.1:{port}"
        with httpx.Client(
            base_url=daemon_url, timeout=SCRAPE_TIMEOUT_SECONDS, trust_env=False
        ) as http:
            startup_sample = sample_to / "startup.txt" if sample_to else None
            with (
                sampled(daemon.pid, startup_sample),
                Prober(daemon_url, "/healthz", every=PROBE_EVERY_SECONDS) as healthz,
                Prober(daemon_url, "/metrics", every=SCRAPE_PROBE_EVERY_SECONDS) as metrics,
            ):
                wait_ready(http, daemon, timeout=DAEMON_READY_SECONDS)
            startup_cpu = cpu_seconds(daemon.pid)
            startup_wall = time.monotonic() - launched
            before = scrape(http)
            calls_before = api_calls(base_url, sample_tenants)

            window_started = time.monotonic()
            cpu_at_start = cpu_seconds(daemon.pid)
            lag = Latencies()
            next_scrape = window_started + scrape_every if scrape_every else math.inf
            with sampled(daemon.pid, sample_to / "steady.txt" if sample_to else None):
                while (now := time.monotonic()) < window_started + window:
                    daemon.check_alive()
                    if now >= next_scrape:
                        with Prober(daemon_url, "/healthz", every=0.02) as probe:
                            scrape(http)
                        lag.samples.extend(probe.latencies.samples)
                        lag.failures += probe.latencies.failures
                        next_scrape += scrape_every
                    time.sleep(min(SAMPLE_EVERY_SECONDS, window_started + window - now))
            window_cpu = cpu_seconds(daemon.pid) - cpu_at_start
            window_wall = time.monotonic() - window_started
            calls_after = api_calls(base_url, sample_tenants)
            after = scrape(http)
            memory = memory_mb(daemon.pid)
            share = window_cpu / window_wall
            plain, gzipped = (
                measure_scrapes(
                    http, daemon.pid, encoding=encoding, count=SCRAPES_MEASURED, polling_share=share
                )
                for encoding in ("identity", "gzip")
            )
        window_hours = window_wall / 3600
        result = Fleet(
            tenants=tenants,
            interval=interval,
            startup_wall=startup_wall,
            startup_cpu=startup_cpu,
            window_wall=window_wall,
            window_cpu=window_cpu,
            rss_end_mb=memory["VmRSS"],
            rss_peak_mb=memory["VmHWM"],
            stop_seconds=daemon.stop(),
            startup_healthz=healthz.latencies,
            startup_metrics=metrics.latencies,
            lag_during_scrapes=lag,
            plain=plain,
            gzipped=gzipped,
            api_calls={
                endpoint: (calls_after.get(endpoint, 0) - calls_before.get(endpoint, 0))
                / len(sample_tenants)
                / window_hours
                for endpoint in {*calls_before, *calls_after}
            },
        )
    if before is not None and after is not None:
        polls, errors = "keywatch_poll_duration_seconds_count", "keywatch_api_errors_total"
        result.window_polls = metric_total(after.text, polls) - metric_total(before.text, polls)
        result.window_errors = metric_total(after.text, errors) - metric_total(before.text, errors)
    if after is not None:
        result.tenants_up = metric_total(after.text, "keywatch_tenant_up")
    return result


# --- 3. one scrape, in this process ------------------------------------------------------------


@dataclass
class ScrapeCpu:
    tenants: int
    gzip_ms: list[float]
    plain_ms: list[float]
    series: int
    first_gzip_ms: float = math.nan  # every line new: after the start-up, or a restart
    gzip_size: int = 0


def scrape_telemetry(tenants: int) -> Telemetry:
    """The state of a polled fleet: 3 keys with dates, a publication view, every counter."""
    telemetry = Telemetry()
    now = datetime.now(UTC)
    dated = functools.partial(
        KeyState, not_before=now - timedelta(days=30), not_after=now + timedelta(days=3650)
    )
    for number in range(1, tenants + 1):
        tenant = f"tenant-{number}"
        kids = [f"{role}{number:016d}xyzab" for role in ("cur", "nxt", "prv")]
        keys = {
            kids[0]: dated(kids[0], "A" * 40, "A" * 40, "A" * 40, current=True),
            kids[1]: dated(kids[1], "B" * 40, "B" * 40, "B" * 40, next=True),
            kids[2]: dated(kids[2], "C" * 40, "C" * 40, "C" * 40, previous=True),
        }
        telemetry.add_tenant(tenant)
        telemetry.set_snapshot(Snapshot(tenant=tenant, taken_at=now, keys=keys))
        telemetry.record_poll_success(tenant, duration=0.2)
        telemetry.publication.add_tenant(tenant)
        published = {(kid, "jwks"): True for kid in kids}
        telemetry.publication.set_view(tenant, PublicationView(published=published))
    return telemetry


def gzip_scrape_ms(telemetry: Telemetry) -> tuple[float, int]:
    """CPU of one gzipped scrape (what ``/metrics`` runs in its worker thread), and its size."""
    gc.collect()
    started = time.process_time()
    body = b"".join(prepared_chunks(telemetry, version="bench", gzip=True))
    return (time.process_time() - started) * 1000, len(body)


def measure_scrape(tenants: int, *, count: int = SCRAPES_MEASURED) -> ScrapeCpu:
    """CPU of what ``/metrics`` runs in its worker thread (``prepared_chunks``, gzipped or
    joined), in this process: a live fleet's scrape shares its CPU with the polls, so its own
    share is only estimated there. Before each measured scrape, a quarter of the fleet records
    a successful poll (a new last-success timestamp), as between two scrapes 15 s apart; the
    first scrape, where every line is new, is told apart."""
    telemetry = scrape_telemetry(tenants)
    found = ScrapeCpu(tenants, [], [], 0)
    found.first_gzip_ms, _ = gzip_scrape_ms(telemetry)
    names = [f"tenant-{number}" for number in range(1, tenants + 1)]
    polled = max(1, int(tenants * POLLED_BETWEEN_SCRAPES))
    for round_number in range(count):
        for number in range(round_number * polled, (round_number + 1) * polled):
            telemetry.record_poll_success(names[number % tenants], duration=0.2)
        gzip_ms, found.gzip_size = gzip_scrape_ms(telemetry)
        found.gzip_ms.append(gzip_ms)
        started = time.process_time()
        body = b"".join(prepared_chunks(telemetry, version="bench"))
        found.plain_ms.append((time.process_time() - started) * 1000)
        found.series = body.count(b"\n") - 2 * len(SPECS)
    return found


def report_scrape(report: Report, results: list[ScrapeCpu]) -> None:
    report.section(
        f"One /metrics scrape in this process (the worker thread's work), p99 of "
        f"{SCRAPES_MEASURED}, a quarter of the fleet polled before each: 3 keys a tenant, "
        "JWKS checked"
    )
    for result in results:
        p99 = percentile(result.gzip_ms, 0.99)
        judge = result.tenants >= BIG_FLEET
        report.add(
            f"{result.tenants:,} tenants ({result.series:,} series): gzip",
            f"{p99:.0f} ms",
            f"< {SCRAPE_TARGET_MS:g} ms" if judge else "",
            verdict(p99 < SCRAPE_TARGET_MS) if judge else "",
        )
        report.add(
            f"{result.tenants:,} tenants: plain text", f"{percentile(result.plain_ms, 0.99):.0f} ms"
        )
        report.add(
            f"{result.tenants:,} tenants: gzip, the first scrape (every line new)",
            f"{result.first_gzip_ms:.0f} ms",
        )
        report.add(f"{result.tenants:,} tenants: gzip size", f"{result.gzip_size / 1e6:.2f} MB")


# --- report ------------------------------------------------------------------------------------


def report_poll_cpu(report: Report, result: PollCpu, *, rounds: int) -> None:
    report.section(
        f"Per-poll CPU, one tenant, {rounds} rounds x {result.polls} polls (median of rounds)"
    )
    for transport in TRANSPORTS:
        used = " (keywatch's)" if transport == TRANSPORT else ""
        report.add(
            f"keywatch poll path (Daemon.poll_tenant), {TRANSPORT_NAMES[transport]}{used}",
            f"{result.median(f'keywatch/{transport}'):.3f} ms",
        )
        report.add(
            f"bare httpx GET + JSON parse, {TRANSPORT_NAMES[transport]}",
            f"{result.median(f'bare/{transport}'):.3f} ms",
        )
    for transport in TRANSPORTS:
        ratio = result.median(f"keywatch/{transport}") / result.median(f"bare/{transport}")
        judged = transport == TRANSPORT
        report.add(
            f"ratio keywatch / bare, both on {TRANSPORT_NAMES[transport]}",
            f"{ratio:.2f}",
            f"<= {RATIO_TARGET:g}" if judged else "",
            verdict(ratio <= RATIO_TARGET) if judged else "",
        )
    for who in ("keywatch", "bare"):
        aiohttp = result.median(f"{who}/aiohttp") / result.median(f"{who}/httpcore")
        report.add(f"{who}: httpx-aiohttp / httpcore transport", f"{aiohttp:.2f}")


def optional(value: float | None, template: str) -> str:
    return "n/a" if value is None else template.format(value)


def report_fleet_ratios(
    report: Report,
    per_poll: float,
    requests: float,
    bare_ms: dict[Transport, float],
    big: bool,
    judged: bool,
) -> None:
    """Per HTTP request, against a bare GET on each transport. The issue's target is the bare
    httpx GET as httpx ships (its own httpcore transport, 0.73 ms when the issue was filed);
    the ratio to a bare GET on keywatch's own transport is the stricter figure beside it."""
    report.add(
        f"CPU per poll in the fleet / one bare GET on {TRANSPORT_NAMES[TRANSPORT]}",
        f"{per_poll * 1000 / bare_ms[TRANSPORT]:.2f}",
    )
    for transport in TRANSPORTS:
        ratio = per_poll * 1000 / (bare_ms[transport] * requests)
        judge = big and transport == "httpcore"
        report.add(
            f"per HTTP request ({requests:.2f} a poll: keys list + JWKS) / one bare httpx GET"
            f" on {TRANSPORT_NAMES[transport]}",
            f"{ratio:.2f}",
            f"<= {FLEET_RATIO_TARGET:g}" if judge else "",
            verdict(ratio <= FLEET_RATIO_TARGET, judged=judged) if judge else "",
        )


def report_fleet(
    report: Report, result: Fleet, *, bare_ms: dict[Transport, float] | None, judged: bool
) -> None:
    big = result.tenants >= BIG_FLEET
    report.section(
        f"Fleet of {result.tenants:,} tenants every {result.interval:g}s (jitter "
        f"{FLEET_JITTER:.0%}), {result.window_wall:.0f}s window after all were polled once"
    )
    report.add(
        "start-up: launch until every tenant polled once",
        f"{result.startup_wall:.1f} s",
        f"< {STARTUP_TARGET_SECONDS:g} s" if big else "",
        verdict(result.startup_wall < STARTUP_TARGET_SECONDS, judged=judged) if big else "",
    )
    report.add("start-up CPU", f"{result.startup_cpu:.1f} s")
    for name, latencies in (
        ("/healthz", result.startup_healthz),
        ("/metrics", result.startup_metrics),
    ):
        worst = latencies.worst * 1000
        report.add(
            f"start-up: slowest {name} answer ({len(latencies.samples)} probes)",
            f"{worst:.0f} ms" + (f", {latencies.failures} failed" if latencies.failures else ""),
            f"< {ANSWER_TARGET_MS:g} ms",
            verdict(worst < ANSWER_TARGET_MS and not latencies.failures, judged=judged),
        )
    healthz = result.startup_healthz
    report.add(
        "start-up: /healthz, p99 / slowest while no /metrics scrape was in flight",
        f"{percentile(healthz.samples, 0.99) * 1000:.0f} / "
        f"{healthz.worst_outside(result.startup_metrics) * 1000:.0f} ms",
    )
    share_target = CPU_SHARE_TARGET if big else None
    report.add(
        "steady CPU share of one core",
        f"{result.window_share:.1%}",
        f"< {share_target:.0%}" if share_target else "",
        verdict(result.window_share < share_target, judged=judged) if share_target else "",
    )
    per_poll = result.cpu_per_poll
    if per_poll is not None:
        report.add("daemon CPU per poll (window CPU / polls)", f"{per_poll * 1000:.2f} ms")
        projected = per_poll * result.expected_polls / result.window_wall
        report.add("share at the mean poll rate (per poll x rate)", f"{projected:.1%}")
        if bare_ms is not None:
            report_fleet_ratios(report, per_poll, result.requests_per_poll, bare_ms, big, judged)
    report.add(
        "polls in the window (expected at the mean interval)",
        f"{optional(result.window_polls, '{:.0f}')} ({result.expected_polls:.0f})",
    )
    report.add("failed polls in the window", optional(result.window_errors, "{:.0f}"))
    report.add("tenants up at the end", optional(result.tenants_up, "{:,.0f}"))
    for label, scrapes in (("gzip", result.gzipped), ("plain", result.plain)):
        judge = big and label == "gzip"  # Prometheus always asks for gzip
        report.add(
            f"CPU of one GET /metrics, {label}, p99 of {len(scrapes.cpu)}, net of polling",
            f"{scrapes.p99 * 1000:.0f} ms",
            f"< {SCRAPE_TARGET_MS:g} ms" if judge else "",
            verdict(scrapes.p99 * 1000 < SCRAPE_TARGET_MS, judged=judged) if judge else "",
        )
        report.add(f"/metrics size, {label}", f"{scrapes.size / 1e6:.2f} MB")
    report.add("/metrics lines", f"{result.plain.lines:,}")
    lag = result.lag_during_scrapes
    if lag.samples:
        report.add(
            "loop lag during scrapes: slowest /healthz while scraping",
            f"{lag.worst * 1000:.0f} ms",
            f"< {ANSWER_TARGET_MS:g} ms",
            verdict(lag.worst * 1000 < ANSWER_TARGET_MS and not lag.failures, judged=judged),
        )
    rss_target = RSS_TARGET_MB if big else None
    report.add("RSS at the end of the window", f"{result.rss_end_mb:.0f} MB")
    report.add(
        "peak RSS since launch (VmHWM)",
        f"{result.rss_peak_mb:.0f} MB",
        f"< {rss_target:g} MB" if rss_target else "",
        verdict(result.rss_peak_mb < rss_target, judged=judged) if rss_target else "",
    )
    report_budget(report, result)
    stopped = optional(result.stop_seconds, "{:.1f} s")
    if result.stop_seconds is None:
        stopped = f"killed after {STOP_GRACE_SECONDS:g} s"
    report.add("exit after SIGTERM", stopped)


def report_budget(report: Report, result: Fleet) -> None:
    """Management API calls per tenant per hour, against a design that GETs each kid."""
    calls = result.api_calls
    management = sum(calls.get(name, 0.0) for name in ("list_keys", "get_key", "token"))
    public = sum(count for name, count in calls.items() if name.startswith("public:"))
    polls_per_hour = result.polls_per_hour
    scale = polls_per_hour / result.tenant_polls_per_hour  # the window's polls -> an hour's
    report.add(
        "Management API calls per tenant per hour (list + get + token)",
        f"{management * scale:.1f}",
    )
    report.add(
        "public JWKS requests per tenant per hour (not the Management API)",
        f"{public * scale:.1f}",
    )
    per_poll = calls.get("list_keys", 0.0) / result.tenant_polls_per_hour
    report.add(
        "list calls per poll, nothing changed",
        f"{per_poll:.2f}",
        "1 (+-10%)",
        verdict(abs(per_poll - 1) <= 0.1 and calls.get("get_key", 0.0) == 0),
    )
    naive = polls_per_hour * (1 + KEYS_PER_TENANT)
    report.add(f"naive design: list + GET each of {KEYS_PER_TENANT} kids, per hour", f"{naive:.0f}")


def print_profile(path: Path, title: str) -> None:
    print(f"\n{title} (cProfile, top {PROFILE_TOP} by own time; saved in {path})")
    stats = pstats.Stats(str(path), stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(PROFILE_TOP)


def print_samples(path: Path, title: str) -> None:
    """The functions py-spy saw most: own samples, then samples within (top ``PROFILE_TOP``)."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r"\(/\S*/(site-packages|python3\.\d+)/", "(", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            within[frame] += int(count)
    print(f"\n{title} (py-spy, {total} samples at 50 Hz; saved in {path})")
    for heading, counts in (("own", own), ("within", within)):
        print(f"  -- {heading}")
        for frame, samples in counts.most_common(PROFILE_TOP):
            print(f"  {samples / total:6.1%}  {frame}")


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small N, short window")
    parser.add_argument("--polls", type=int, help="polls per round and contender (default 300)")
    parser.add_argument("--rounds", type=int, help="rounds of per-poll measurement (default 5)")
    parser.add_argument(
        "--tenants",
        default="1000",
        help="fleet sizes, comma-separated, each measured in turn (default 1000)",
    )
    parser.add_argument(
        "--interval", type=float, default=60.0, help="fleet poll interval, seconds (default 60)"
    )
    parser.add_argument("--window", type=float, help="fleet measurement seconds (default 120)")
    parser.add_argument(
        "--scrape",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="also GET /metrics this often during the window (default 15; 0: never)",
    )
    parser.add_argument(
        "--only", choices=["poll", "scrape", "fleet"], help="run one of the three measurements"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write cProfile data to DIR and print the hot spots (slows the fleet run down)",
    )
    parser.add_argument(
        "--py-spy",
        dest="py_spy",
        type=Path,
        metavar="DIR",
        help="sample the fleet daemon with py-spy (start-up and window) into DIR",
    )
    parser.add_argument("--figures", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    args.polls = args.polls or (50 if args.quick else 300)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.window = args.window or (30.0 if args.quick else 120.0)
    args.warmup = max(5, args.polls // 10)
    try:
        args.tenants = [int(size) for size in str(args.tenants).split(",")]
    except ValueError:
        parser.error("--tenants: comma-separated whole numbers, e.g. 100,1000,10000")
    if min(args.polls, args.rounds, *args.tenants) < 1:
        parser.error("--polls, --rounds and --tenants must be at least 1")
    if args.interval <= 0 or args.window <= 0 or args.scrape < 0:
        parser.error("--interval and --window must be > 0, --scrape >= 0")
    return args


def run(args: argparse.Namespace) -> Report:
    print(f"keywatch poll benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}; {load()}")
    report = Report()
    for directory in (args.profile, args.py_spy):
        if directory:
            directory.mkdir(parents=True, exist_ok=True)
    bare_ms = None
    with tempfile.TemporaryDirectory(prefix="keywatch-bench-") as temporary:
        workdir = Path(temporary)
        if args.only in (None, "poll"):
            bare_ms = run_poll_cpu(args, report, workdir=workdir / "poll")
        if args.only in (None, "scrape"):
            report_scrape(report, [measure_scrape(size) for size in args.tenants])
        if args.only in (None, "fleet"):
            for size in args.tenants:
                run_fleet(args, report, size, bare_ms=bare_ms, workdir=workdir / f"fleet{size}")
    return report


def run_poll_cpu(
    args: argparse.Namespace, report: Report, *, workdir: Path
) -> dict[Transport, float]:
    profile_to = args.profile / "poll.prof" if args.profile else None
    with simulator(1, workdir=workdir) as base_url:
        result = asyncio.run(
            measure_poll_cpu(
                base_url,
                workdir=workdir,
                polls=args.polls,
                rounds=args.rounds,
                warmup=args.warmup,
                profile_to=profile_to,
            )
        )
    report_poll_cpu(report, result, rounds=args.rounds)
    if profile_to:
        print_profile(profile_to, "keywatch poll path")
    return {transport: result.median(f"bare/{transport}") for transport in TRANSPORTS}


def run_fleet(
    args: argparse.Namespace,
    report: Report,
    size: int,
    *,
    bare_ms: dict[Transport, float] | None,
    workdir: Path,
) -> None:
    profile_to = args.profile / f"fleet{size}.prof" if args.profile else None
    sample_to = args.py_spy / f"fleet{size}" if args.py_spy else None
    if sample_to:
        sample_to.mkdir(parents=True, exist_ok=True)
    with simulator(size, workdir=workdir) as base_url:
        result = measure_fleet(
            base_url,
            workdir=workdir,
            tenants=size,
            interval=args.interval,
            window=args.window,
            scrape_every=args.scrape,
            profile_to=profile_to,
            sample_to=sample_to,
        )
    judged = not args.quick and not args.profile and not args.py_spy
    report_fleet(report, result, bare_ms=bare_ms, judged=judged)
    if result.window_wall < 2 * result.interval:
        report.note("the window is shorter than two poll intervals; the share is rough")
    if profile_to:
        print_profile(profile_to, "the fleet daemon")
    if sample_to:
        for phase in ("startup", "steady"):
            print_samples(sample_to / f"{phase}.txt", f"the fleet daemon, {phase}")


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchError as exc:
        print(f"bench/poll.py: {exc}", file=sys.stderr)
        return 1
    if args.figures:
        report.write_json(args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
