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
import gc
import logging
import math
import os
import platform
import pstats
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from monitor.config import parse_config
from monitor.daemon import Daemon, build_daemon
from monitor.httpclient import build_http_client
from monitor.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from monitor.sources.auth0 import KEYS_PATH, TOKEN_PATH

RATIO_TARGET = 2.0
CPU_SHARE_TARGET = 0.10
RSS_TARGET_MB = 150.0

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


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    cpus = len(os.sched_getaffinity(0))
    return f"{cpus} CPU(s), {model}, Python {platform.python_version()}, {platform.system()}"


# --- 1. per-poll CPU -----------------------------------------------------------------------------


@dataclass
class PollCpu:
    keywatch_ms: list[float]
    bare_ms: list[float]
    polls: int

    @property
    def keywatch_median(self) -> float:
        return statistics.median(self.keywatch_ms)

    @property
    def bare_median(self) -> float:
        return statistics.median(self.bare_ms)

    @property
    def ratio(self) -> float:
        return self.keywatch_median / self.bare_median


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


async def measure_poll_cpu(
    base_url: str,
    *,
    workdir: Path,
    polls: int,
    rounds: int,
    warmup: int,
    profile_to: Path | None,
) -> PollCpu:
    config = daemon_config(
        base_url, [BENCH_TENANT], workdir=workdir, defaults="{interval: 1h, jitter: 0}"
    )
    daemon = build_daemon(parse_config(config))
    await daemon.start()  # the first poll (the baseline) runs right away
    try:
        await asyncio.wait_for(daemon.wait_ready(), HTTP_TIMEOUT_SECONDS)
        async with build_http_client(timeout=HTTP_TIMEOUT_SECONDS) as http:
            bare = BarePoller(http, f"{base_url}/{BENCH_TENANT}")
            await bare.fetch_token()

            async def keywatch_poll() -> object:
                return await daemon.poll_tenant(BENCH_TENANT)

            contenders = {"keywatch": keywatch_poll, "bare": bare.poll}
            for call in contenders.values():
                await cpu_ms_per_call(call, warmup)
            results: dict[str, list[float]] = {name: [] for name in contenders}
            for round_number in range(rounds):
                order = list(contenders) if round_number % 2 == 0 else list(contenders)[::-1]
                for name in order:
                    results[name].append(await cpu_ms_per_call(contenders[name], polls))
            if profile_to is not None:
                await profile_polls(keywatch_poll, polls, profile_to)
        failures = failed_polls(daemon)
        if failures:
            raise BenchError(f"{failures:g} keywatch polls failed; see the log above")
    finally:
        await daemon.shutdown()
    return PollCpu(keywatch_ms=results["keywatch"], bare_ms=results["bare"], polls=polls)


async def profile_polls(call: Callable[[], Awaitable[object]], count: int, path: Path) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        await call()
    profiler.disable()
    profiler.dump_stats(path)


# --- 2. fleet ----------------------------------------------------------------------------------


@dataclass
class Fleet:
    tenants: int
    interval: float
    startup_wall: float
    startup_cpu: float
    window_wall: float
    window_cpu: float
    rss_end_mb: float
    rss_window_max_mb: float
    rss_peak_mb: float
    stop_seconds: float | None
    window_polls: float | None = None
    window_errors: float | None = None
    tenants_up: float | None = None
    scrape_problems: int = 0
    scrape_cpu: float | None = None

    @property
    def startup_share(self) -> float:
        return self.startup_cpu / self.startup_wall

    @property
    def window_share(self) -> float:
        return self.window_cpu / self.window_wall

    @property
    def expected_polls(self) -> float:
        """Polls at the mean interval: APScheduler's jitter adds 0..jitter to each interval."""
        return self.tenants * self.window_wall / (self.interval * (1 + FLEET_JITTER / 2))


def metric_total(text: str, name: str) -> float:
    """The sum of every sample called ``name`` in a Prometheus text exposition."""
    return sum(float(value) for found, _, value in SAMPLE_LINE.findall(text) if found == name)


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


class Scraper:
    """GET /metrics; a failed or slow scrape is a finding to report, not a crash."""

    def __init__(self, http: httpx.Client) -> None:
        self._http = http
        self.problems = 0

    def __call__(self) -> str | None:
        try:
            response = self._http.get("/metrics")
        except httpx.HTTPError as exc:
            log.warning("GET /metrics failed: %s", type(exc).__name__)
            self.problems += 1
            return None
        if response.status_code != 200:
            log.warning("GET /metrics: HTTP %d", response.status_code)
            self.problems += 1
            return None
        return response.text


def fleet_config(base_url: str, tenants: int, *, interval: float, workdir: Path) -> Path:
    names = [f"tenant-{number}" for number in range(1, tenants + 1)]
    defaults = f"{{interval: {interval:g}s, jitter: {FLEET_JITTER:g}}}"
    path = workdir / "fleet.yaml"
    path.write_text(daemon_config(base_url, names, workdir=workdir, defaults=defaults))
    return path


def measure_fleet(
    base_url: str,
    *,
    workdir: Path,
    tenants: int,
    interval: float,
    window: float,
    scrape_every: float,
    profile_to: Path | None,
) -> Fleet:
    config_path = fleet_config(base_url, tenants, interval=interval, workdir=workdir)
    profiler = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    args = [*profiler, "-m", "monitor", "run", "--config", str(config_path)]
    launched = time.monotonic()
    with child_process("daemon", args, workdir=workdir) as daemon:
        port = daemon.wait_for_log(DAEMON_LISTENING, timeout=DAEMON_READY_SECONDS).group(1)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=SCRAPE_TIMEOUT_SECONDS, trust_env=False
        ) as http:
            wait_ready(http, daemon, timeout=DAEMON_READY_SECONDS)
            startup_cpu = cpu_seconds(daemon.pid)
            startup_wall = time.monotonic() - launched
            scrape = Scraper(http)
            before = scrape()

            window_started = time.monotonic()
            cpu_at_start = cpu_seconds(daemon.pid)
            rss_max = 0.0
            next_scrape = window_started + scrape_every if scrape_every else math.inf
            while (now := time.monotonic()) < window_started + window:
                daemon.check_alive()
                rss_max = max(rss_max, memory_mb(daemon.pid)["VmRSS"])
                if now >= next_scrape:
                    scrape()
                    next_scrape += scrape_every
                time.sleep(min(SAMPLE_EVERY_SECONDS, window_started + window - now))
            window_cpu = cpu_seconds(daemon.pid) - cpu_at_start
            window_wall = time.monotonic() - window_started
            memory = memory_mb(daemon.pid)

            cpu_before_scrape = cpu_seconds(daemon.pid)
            after = scrape()
            scrape_cpu = cpu_seconds(daemon.pid) - cpu_before_scrape
        result = Fleet(
            tenants=tenants,
            interval=interval,
            startup_wall=startup_wall,
            startup_cpu=startup_cpu,
            window_wall=window_wall,
            window_cpu=window_cpu,
            rss_end_mb=memory["VmRSS"],
            rss_window_max_mb=max(rss_max, memory["VmRSS"]),
            rss_peak_mb=memory["VmHWM"],
            stop_seconds=daemon.stop(),
            scrape_problems=scrape.problems,
            scrape_cpu=scrape_cpu if after is not None else None,
        )
    if before is not None and after is not None:
        polls, errors = "keywatch_poll_duration_seconds_count", "keywatch_api_errors_total"
        result.window_polls = metric_total(after, polls) - metric_total(before, polls)
        result.window_errors = metric_total(after, errors) - metric_total(before, errors)
    if after is not None:
        result.tenants_up = metric_total(after, "keywatch_tenant_up")
    return result


# --- report ------------------------------------------------------------------------------------


def verdict(met: bool, *, judged: bool = True) -> str:
    if not judged:
        return "n/a (quick or profiled run)"
    return "PASS" if met else "MISS"


def row(label: str, value: str, target: str = "", result: str = "") -> str:
    return f"  {label:<48} {value:>12}   {target:<10} {result}".rstrip()


def report_poll_cpu(result: PollCpu, *, rounds: int) -> None:
    print(f"\nPer-poll CPU, one tenant, {rounds} rounds x {result.polls} polls (median of rounds)")
    spread = "  (rounds: {})".format
    print(row("keywatch poll path (Daemon.poll_tenant)", f"{result.keywatch_median:.3f} ms"))
    print(spread(", ".join(f"{value:.3f}" for value in result.keywatch_ms)))
    print(row("bare httpx GET + JSON parse", f"{result.bare_median:.3f} ms"))
    print(spread(", ".join(f"{value:.3f}" for value in result.bare_ms)))
    print(
        row(
            "ratio keywatch / bare",
            f"{result.ratio:.2f}",
            f"<= {RATIO_TARGET:g}",
            verdict(result.ratio <= RATIO_TARGET),
        )
    )


def optional(value: float | None, template: str) -> str:
    return "n/a" if value is None else template.format(value)


def report_fleet(result: Fleet, *, judged: bool) -> None:
    print(
        f"\nFleet: keywatch run, {result.tenants} tenants every {result.interval:g}s "
        f"(jitter {FLEET_JITTER:.0%}), window {result.window_wall:.0f}s after all were polled once"
    )
    print(
        row(
            f"start-up share (launch -> ready, {result.startup_wall:.1f}s)",
            f"{result.startup_share:.1%}",
            "(info)",
        )
    )
    print(row("start-up CPU", f"{result.startup_cpu:.2f} s"))
    print(
        row(
            "steady CPU share of one core",
            f"{result.window_share:.2%}",
            f"< {CPU_SHARE_TARGET:.0%}",
            verdict(result.window_share < CPU_SHARE_TARGET, judged=judged),
        )
    )
    if result.window_polls:
        per_poll = result.window_cpu / result.window_polls
        print(row("daemon CPU per poll (window CPU / polls)", f"{per_poll * 1000:.2f} ms"))
        # The polls come in waves, so a window catches more or fewer than the mean rate.
        projected = per_poll * result.expected_polls / result.window_wall
        print(row("share at the mean poll rate (per poll x rate)", f"{projected:.2%}", "(info)"))
    print(
        row(
            "polls in the window (expected at the mean interval)",
            f"{optional(result.window_polls, '{:.0f}')} ({result.expected_polls:.0f})",
        )
    )
    print(row("failed polls in the window", optional(result.window_errors, "{:.0f}")))
    print(row("tenants up at the end", optional(result.tenants_up, "{:.0f}")))
    print(
        row(
            "CPU of one GET /metrics (clock ticks: +-10 ms)",
            optional(result.scrape_cpu, "{:.2f} s"),
        )
    )
    if result.scrape_problems:
        print(row("failed or timed-out GET /metrics", f"{result.scrape_problems}"))
    print(row("RSS at the end of the window", f"{result.rss_end_mb:.1f} MB"))
    print(row("RSS, highest sample in the window", f"{result.rss_window_max_mb:.1f} MB"))
    print(
        row(
            "peak RSS since launch (VmHWM)",
            f"{result.rss_peak_mb:.1f} MB",
            f"< {RSS_TARGET_MB:g} MB",
            verdict(result.rss_peak_mb < RSS_TARGET_MB, judged=judged),
        )
    )
    stopped = optional(result.stop_seconds, "{:.1f} s")
    if result.stop_seconds is None:
        stopped = f"killed after {STOP_GRACE_SECONDS:g} s"
    print(row("exit after SIGTERM", stopped))
    if result.window_wall < 2 * result.interval:
        print("  note: the window is shorter than two poll intervals; the share is rough")


def print_profile(path: Path, title: str) -> None:
    print(f"\n{title} (cProfile, top {PROFILE_TOP} by own time; saved in {path})")
    stats = pstats.Stats(str(path), stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(PROFILE_TOP)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small N, short window")
    parser.add_argument("--polls", type=int, help="polls per round and contender (default 300)")
    parser.add_argument("--rounds", type=int, help="rounds of per-poll measurement (default 5)")
    parser.add_argument("--tenants", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument(
        "--interval", type=float, default=60.0, help="fleet poll interval, seconds (default 60)"
    )
    parser.add_argument("--window", type=float, help="fleet measurement seconds (default 120)")
    parser.add_argument(
        "--scrape",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also GET /metrics this often during the window (default: never)",
    )
    parser.add_argument("--only", choices=["poll", "fleet"], help="run one of the two measurements")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write cProfile data to DIR and print the hot spots (slows the fleet run down)",
    )
    args = parser.parse_args(argv)
    args.polls = args.polls or (50 if args.quick else 300)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.window = args.window or (30.0 if args.quick else 120.0)
    args.warmup = max(5, args.polls // 10)
    for name in ("polls", "rounds", "tenants"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.interval <= 0 or args.window <= 0 or args.scrape < 0:
        parser.error("--interval and --window must be > 0, --scrape >= 0")
    return args


def run(args: argparse.Namespace) -> None:
    print(f"keywatch poll benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {machine()}")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="keywatch-bench-") as temporary:
        workdir = Path(temporary)
        if args.only in (None, "poll"):
            run_poll_cpu(args, workdir=workdir / "poll")
        if args.only in (None, "fleet"):
            run_fleet(args, workdir=workdir / "fleet")


def run_poll_cpu(args: argparse.Namespace, *, workdir: Path) -> None:
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
    report_poll_cpu(result, rounds=args.rounds)
    if profile_to:
        print_profile(profile_to, "keywatch poll path")


def run_fleet(args: argparse.Namespace, *, workdir: Path) -> None:
    profile_to = args.profile / "fleet.prof" if args.profile else None
    with simulator(args.tenants, workdir=workdir) as base_url:
        result = measure_fleet(
            base_url,
            workdir=workdir,
            tenants=args.tenants,
            interval=args.interval,
            window=args.window,
            scrape_every=args.scrape,
            profile_to=profile_to,
        )
    report_fleet(result, judged=not args.quick and not args.profile)
    if profile_to:
        print_profile(profile_to, "the fleet daemon")


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        run(args)
    except BenchError as exc:
        print(f"bench/poll.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
