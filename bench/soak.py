"""A soak run: two replicas on PostgreSQL under random faults, then a count of what was lost.

Two ``python -m monitor run`` replicas share a private PostgreSQL schema (leader lease, 3 s)
and poll one simulated tenant every second; one webhook destination points at a loopback
receiver in this process. For ``--minutes`` the script, every few seconds, does one of:

- rotate the tenant's key (only once the previous rotation was detected, so every rotation
  has a current key that Auth0 showed for at least one poll);
- an Auth0 fault: 5xx/429 answers, an answer slower than the timeout, a malformed answer
  (simulator fault endpoints), on the Management API or the token endpoint;
- a webhook fault: the receiver answers the next 1-3 requests with 5xx, or after the
  destination's timeout (keywatch gives up: not a delivery);
- ``kill -9`` the leader (restarted after 0.5-3 s), or ``SIGSTOP`` it for 1.2-2.5 lease
  ttls, then ``SIGCONT``.

Then faults stop and the script waits until every stored delivery is delivered, and prints:
rotations made, events detected, false events (a rotation to a key that never became
current, or an event type a rotation does not cause), deliveries expected (stored events x
destinations), delivered, duplicated (an event id answered 2xx more than once), lost
(stored, never answered 2xx). Targets: lost 0, false events 0, duplicates only in the
window of a killed or stopped leader.

    python bench/soak.py                  # 10 minutes
    python bench/soak.py --minutes 1      # a smoke run
    KEYWATCH_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test python bench/soak.py

Exits 0 when the run completed (whatever the figures), 1 when something broke.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
from figures import Report, verdict
from psycopg import sql

from monitor.model import EventType
from monitor.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator, SimulatorServer
from monitor.store import open_store

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
TENANT = "tenant-1"
LEASE_TTL = 3.0
TIMEOUT = 2.0
SETTLE_DEADLINE = 240.0
ROTATION_EVENTS = {EventType.KEY_ROTATED, EventType.KEY_ADDED, EventType.KEY_STATE_CHANGED}
MALFORMED_API: tuple[str, ...] = ("html", "truncated", "wrong_type", "flag_string")
MALFORMED_API += ("missing_field", "bad_cert", "bad_thumbprint", "empty", "no_current")
LEADER_LINE = re.compile(r"^keywatch_leader 1\.0$", re.MULTILINE)


class SoakError(Exception):
    """Something broke: the soak could not run."""


# --- the webhook receiver -----------------------------------------------------------------


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a sender killed mid-request is part of the soak


class Receiver:
    """Answers 204, or the scripted faults first; records (event id, succeeded, time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: list[tuple[int, float]] = []  # (status, delay)
        self.posts: list[tuple[str, bool, float]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the sender died mid-body: no request arrived
                with receiver.lock:
                    status, delay = receiver.faults.pop(0) if receiver.faults else (204, 0.0)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.wfile.flush()
                except OSError:
                    return  # the sender gave up (a timeout, a kill): not a delivery
                ok = 200 <= status < 300 and delay < TIMEOUT  # later, keywatch gave up
                with receiver.lock:
                    receiver.posts.append((self.headers.get("webhook-id", ""), ok, time.time()))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def script(self, answers: list[tuple[int, float]]) -> None:
        with self.lock:
            self.faults.extend(answers)

    def successes(self) -> list[tuple[str, float]]:
        with self.lock:
            return [(event_id, at) for event_id, ok, at in self.posts if ok]


# --- the replicas -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Replica:
    name: str
    config: Path
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # SIGSTOPped

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KEYWATCH_SOAK_PORT": str(self.port)},
            )

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def leads(self) -> bool:
        if self.stopped or self.process is None or self.process.poll() is not None:
            return False
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=1.0).text
        except httpx.HTTPError:
            return False
        return LEADER_LINE.search(text) is not None


def replica_config(state: str, hook: str, tenant_url: str) -> str:
    return (
        'listen: "127.0.0.1:${KEYWATCH_SOAK_PORT}"\n'
        f'state: "{state}"\n'
        f"lease: {{ttl: {LEASE_TTL:g}s}}\n"
        "log_level: warning\n"
        f"defaults: {{interval: 1s, jitter: 0, timeout: {TIMEOUT:g}s}}\n"
        "tenants:\n"
        f"  - {{name: {TENANT}, base_url: '{tenant_url}', client_id: {DEFAULT_CLIENT_ID}, "
        f"client_secret: {DEFAULT_CLIENT_SECRET}}}\n"
        "destinations:\n"
        f"  - {{name: hook, kind: webhook, url: '{hook}', min_severity: info, "
        f"timeout: {TIMEOUT:g}s}}\n"
    )


# --- the run ------------------------------------------------------------------------------


@dataclass
class Chaos:
    server: SimulatorServer
    receiver: Receiver
    replicas: list[Replica]
    store: Any
    rng: random.Random
    actions: Counter[str] = field(default_factory=Counter)
    rotated_to: list[str] = field(default_factory=list)
    disruptions: list[float] = field(default_factory=list)  # times of kills and stops
    timers: list[threading.Timer] = field(default_factory=list)

    def leader(self) -> Replica | None:
        leading = [replica for replica in self.replicas if replica.leads()]
        return leading[0] if len(leading) == 1 else None

    def detected(self) -> set[str]:
        events = self.store.recent_events(TENANT, limit=100_000)
        return {e.new_kid for e in events if e.type is EventType.KEY_ROTATED and e.new_kid}

    def step(self) -> None:
        tenant = self.server.simulator.tenant(TENANT)
        waiting = bool(self.rotated_to) and self.rotated_to[-1] not in self.detected()
        choice = self.rng.choices(
            ["rotate", "auth0", "webhook", "kill", "stop"], weights=[5, 3, 2, 1, 1]
        )[0]
        if choice == "rotate" and not waiting:
            self.rotated_to.append(tenant.next_kid)
            tenant.rotate()
        elif choice == "auth0":
            self.auth0_fault(tenant)
        elif choice == "webhook":
            count = self.rng.randint(1, 3)
            answer = self.rng.choice([(500, 0.0), (503, 0.0), (200, TIMEOUT + 1.5)])
            self.receiver.script([answer] * count)
        elif choice in ("kill", "stop"):
            leader = self.leader()
            if leader is None:
                return
            self.disruptions.append(time.time())
            if choice == "kill":
                leader.signal(signal.SIGKILL)
                assert leader.process is not None
                leader.process.wait()
                self.later(self.rng.uniform(0.5, 3.0), leader.start)
            else:
                leader.stopped = True
                leader.signal(signal.SIGSTOP)
                self.later(self.rng.uniform(1.2, 2.5) * LEASE_TTL, lambda: self.resume(leader))
        else:
            return
        self.actions[choice] += 1

    def auth0_fault(self, tenant: Any) -> None:
        kind = self.rng.choice(["status", "slow", "malformed", "token"])
        if kind == "status":
            status = self.rng.choice([429, 500, 502, 503])
            tenant.fail_next(self.rng.randint(1, 3), status=status)
        elif kind == "slow":
            tenant.slow_next(1, delay=TIMEOUT + 1.0)
        elif kind == "malformed":
            tenant.malform_next(1, kind=self.rng.choice(MALFORMED_API))
        else:
            tenant.fail_next(self.rng.randint(1, 2), status=503, target="token")

    def resume(self, replica: Replica) -> None:
        replica.signal(signal.SIGCONT)
        replica.stopped = False

    def later(self, seconds: float, action: Any) -> None:
        timer = threading.Timer(seconds, action)
        self.timers.append(timer)
        timer.start()

    def calm(self) -> None:
        """No more faults: pending timers run now, every replica runs."""
        for timer in self.timers:
            if timer.is_alive():
                timer.cancel()
                timer.function(*timer.args)
        for replica in self.replicas:
            if replica.stopped:
                self.resume(replica)
            if replica.process is None or replica.process.poll() is not None:
                replica.start()
        self.server.simulator.tenant(TENANT).clear_faults()
        with self.receiver.lock:
            self.receiver.faults.clear()


def settle(chaos: Chaos, deadline: float) -> None:
    while time.monotonic() < deadline:
        counts = chaos.store.delivery_counts()
        detected = chaos.detected()
        if all(kid in detected for kid in chaos.rotated_to) and all(
            state == "delivered" for _, state in counts
        ):
            return
        time.sleep(0.5)
    print("warning: not settled by the deadline", file=sys.stderr)


def report(chaos: Chaos, minutes: float, table: Report) -> None:
    events = chaos.store.recent_events(TENANT, limit=100_000)
    rotated = [e for e in events if e.type is EventType.KEY_ROTATED]
    false_events = [e for e in rotated if e.new_kid not in chaos.rotated_to]
    false_events += [e for e in events if e.type not in ROTATION_EVENTS]
    successes = chaos.receiver.successes()
    per_id = Counter(event_id for event_id, _ in successes)
    stored = {e.id for e in events}
    duplicated = sum(count - 1 for count in per_id.values() if count > 1)
    explained = 0
    for event_id, count in per_id.items():
        if count > 1:
            times = sorted(at for eid, at in successes if eid == event_id)
            if any(times[0] - LEASE_TTL * 3 <= at <= times[-1] for at in chaos.disruptions):
                explained += 1
    counts = chaos.store.delivery_counts()
    rows = [
        ("minutes", f"{minutes:g}"),
        ("actions", ", ".join(f"{k} {v}" for k, v in sorted(chaos.actions.items()))),
        ("rotations made", len(chaos.rotated_to)),
        ("rotations detected", len({e.new_kid for e in rotated} & set(chaos.rotated_to))),
        ("events detected", f"{len(events)} ({Counter(str(e.type) for e in events)})"),
        ("false events", len(false_events)),
        ("deliveries expected", len(stored)),
        ("delivered", len(stored & set(per_id))),
        ("duplicated", f"{duplicated} ({explained} ids near a leader kill or stop)"),
        ("lost", len(stored - set(per_id))),
        ("store delivery states", dict(counts)),
    ]
    for name, value in rows:
        print(f"{name:24} {value}")
    for event in false_events:
        print(f"false event: {event.type} {event.summary}")
    detected = len({e.new_kid for e in rotated} & set(chaos.rotated_to))
    lost = len(stored - set(per_id))
    table.section(f"Soak: two replicas under faults, {minutes:g} min")
    made = len(chaos.rotated_to)
    table.add("rotations made / detected", f"{made} / {detected}", "all", verdict(detected == made))
    table.add("false events", str(len(false_events)), "0", verdict(not false_events))
    table.add("deliveries expected / lost", f"{len(stored)} / {lost}", "lost 0", verdict(not lost))
    table.add("duplicated (near a leader kill or stop)", f"{duplicated} ({explained})")


def private_schema(url: str) -> tuple[str, str]:
    schema = f"kw_soak_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in url else "?"
    return schema, f"{url}{separator}options=" + quote(f"-c search_path={schema}")


def run(minutes: float, postgres: str, seed: int, workdir: Path, table: Report) -> None:
    rng = random.Random(seed)
    schema, state = private_schema(postgres)
    receiver = Receiver()
    replicas: list[Replica] = []
    try:
        with SimulatorServer(Simulator(tenants=1)) as server:
            config = workdir / "keywatch.yaml"
            config.write_text(replica_config(state, receiver.url, server.tenant_url(TENANT)))
            replicas = [Replica(n, config, workdir / f"{n}.log") for n in ("a", "b")]
            for replica in replicas:
                replica.start()
            store = open_store(state)
            chaos = Chaos(server, receiver, replicas, store, rng)
            deadline = time.monotonic() + 60
            # A rotation before the baseline is part of the baseline, never an event: the
            # chaos starts once a leader has committed the tenant's first poll.
            while chaos.leader() is None or TENANT not in store.load_states():
                if time.monotonic() > deadline:
                    raise SoakError(f"no baseline after 60 s; see the logs in {workdir}")
                time.sleep(0.2)
            end = time.monotonic() + minutes * 60
            while time.monotonic() < end:
                chaos.step()
                time.sleep(rng.uniform(2.0, 5.0))
            chaos.calm()
            settle(chaos, time.monotonic() + SETTLE_DEADLINE)
            report(chaos, minutes, table)
            store.close()
    finally:
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                if replica.stopped:
                    replica.signal(signal.SIGCONT)
                replica.process.terminate()
                replica.process.wait(30)
        receiver.server.shutdown()
        with psycopg.connect(postgres, autocommit=True) as connection:
            drop = sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema))
            connection.execute(drop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("KEYWATCH_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="PostgreSQL URL (a private schema is created and dropped)",
    )
    parser.add_argument("--figures", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    table = Report()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"soak: {args.minutes:g} min, seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="keywatch-soak-") as directory:
        try:
            run(args.minutes, args.postgres, seed, Path(directory), table)
        except (SoakError, OSError, psycopg.Error) as exc:
            print(f"soak: {exc}", file=sys.stderr)
            return 1
    if args.figures:
        table.write_json(args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
