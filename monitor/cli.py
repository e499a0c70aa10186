"""The ``keywatch`` command. No business logic here: parse arguments, call, map to exit codes.

Exit codes: 0 fine; 1 a problem was found (``check``), the test notification was not
delivered (``test-notify``) or an unexpected error (a bug); 2 bad configuration, bad
arguments, a port that cannot be listened on, an unreachable tenant or a store that cannot be
opened; 130 interrupted before a daemon was running (a running one stops cleanly with 0).

``main`` is the one error boundary: every expected failure (``KeywatchError``) becomes one
line per problem on stderr, prefixed with the configuration file it concerns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import NoReturn

from monitor import __version__
from monitor.config import DestinationConfig, Settings, load_config
from monitor.daemon import build_daemon, ignore_stop_signals, secrets_of
from monitor.detect import problems
from monitor.errors import ConfigError, KeywatchError, SourceError
from monitor.heap import ReturnFreeMemory, map_big_blocks, return_free_memory
from monitor.httpclient import HttpClients, Route, build_http_client
from monitor.logs import configure_logging
from monitor.notify import build_notifier, sample_event
from monitor.notify.base import Outcome, Verdict
from monitor.poll import client_for_tenant, fetch_snapshot
from monitor.report import (
    TenantCheck,
    check_document,
    open_state,
    print_check_table,
    print_status,
    read_status,
    status_document,
)
from monitor.store import probe_store

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("monitor.cli")


def _print_config_error(exc: ConfigError, source: str) -> None:
    for problem in exc.problems:
        print(f"{source}: {problem}", file=sys.stderr)


def _load(path: str) -> Settings:
    return load_config(path)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    ignore_stop_signals()  # stopping: a second signal must not cut the cleanup short
    raise KeyboardInterrupt


@contextmanager
def _stop_signals() -> Iterator[None]:
    """Around a daemon command: SIGTERM, like SIGINT, unwinds a start in progress (temporary
    files are removed on the way out); the daemon takes both over while it runs; once it has
    stopped, both are ignored while the command cleans up."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        ignore_stop_signals()


# --- run ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    map_big_blocks()
    settings = _load(args.config)
    return_free_memory()  # what parsing the file took (a big fleet's is tens of MB)
    redactor = configure_logging(
        log_format=settings.log_format, level=settings.log_level, secrets=secrets_of(settings)
    )
    with _stop_signals(), ReturnFreeMemory():
        daemon = build_daemon(settings, config_path=args.config, redactor=redactor)
        asyncio.run(daemon.run())
    return EXIT_OK


# --- validate -------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _load(args.file)
    if not args.no_store:
        probe_store(settings.state)
    counts = f"{len(settings.tenants)} tenant(s), {len(settings.destinations)} destination(s)"
    print(f"{args.file}: ok ({counts})")
    return EXIT_OK


# --- check ----------------------------------------------------------------------------------


async def _check_all(settings: Settings) -> list[TenantCheck]:
    timeout = max(tenant.timeout for tenant in settings.tenants)
    clients = HttpClients(timeout=timeout)
    try:

        async def check_one(index: int) -> TenantCheck:
            tenant = settings.tenants[index]
            result = TenantCheck(name=tenant.name)
            http = clients.get(Route(*settings.route_of(tenant)))
            try:
                result.snapshot = await fetch_snapshot(
                    client_for_tenant(http, tenant),
                    tenant=tenant.name,
                    previous=None,
                    watched_kids=tenant.kids,
                )
            except SourceError as exc:
                result.error = str(exc)
            else:
                result.problems = problems(result.snapshot)
            return result

        return list(await asyncio.gather(*(check_one(i) for i in range(len(settings.tenants)))))
    finally:
        await clients.aclose()


def _exit_code(results: Sequence[TenantCheck]) -> int:
    if any(result.error for result in results):
        return EXIT_CONFIG
    if any(result.problems for result in results):
        return EXIT_PROBLEM
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    configure_logging(level="error", secrets=secrets_of(settings))
    results = asyncio.run(_check_all(settings))
    code = _exit_code(results)
    if args.json:
        document = check_document(results, code)
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        print_check_table(results, sys.stdout)
    return code


# --- test-notify ----------------------------------------------------------------------------

TEST_TENANT = "keywatch-test"


def _destination(settings: Settings, name: str, source: str) -> DestinationConfig | None:
    for destination in settings.destinations:
        if destination.name == name:
            return destination
    known = ", ".join(d.name for d in settings.destinations) or "none configured"
    print(f"{source}: no destination named {name!r} (known: {known})", file=sys.stderr)
    return None


async def _send_test(settings: Settings, destination: DestinationConfig) -> Verdict:
    notifier = build_notifier(destination)
    now = datetime.now(UTC)
    event = sample_event(tenant=TEST_TENANT, detected_at=now)
    route = Route(*settings.route_of(destination))
    async with build_http_client(timeout=destination.timeout, route=route) as http:
        return await notifier.deliver(http, event, now=now)


def cmd_test_notify(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    destination = _destination(settings, args.destination, args.config)
    if destination is None:
        return EXIT_CONFIG
    configure_logging(level="warning", secrets=secrets_of(settings))
    verdict = asyncio.run(_send_test(settings, destination))
    outcome = "delivered" if verdict.outcome is Outcome.DELIVERED else "NOT delivered"
    print(f"{destination.name} ({destination.kind}): {outcome}: {verdict.detail}")
    if verdict.outcome is Outcome.RETRY:
        wait = f" in {verdict.retry_after:g}s" if verdict.retry_after is not None else ""
        print(f"the daemon would retry{wait} (a temporary failure)")
    elif verdict.outcome is Outcome.DEAD:
        print("the daemon would give up at once (a permanent failure: check the destination)")
    return EXIT_OK if verdict.outcome is Outcome.DELIVERED else EXIT_PROBLEM


# --- status / redeliver ---------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    configure_logging(level="error", secrets=secrets_of(settings))
    store = open_state(settings)
    try:
        report = read_status(store)
    finally:
        store.close()
    document = status_document(settings, report)
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        print_status(document, sys.stdout)
    return EXIT_OK


def cmd_redeliver(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    configure_logging(level="error", secrets=secrets_of(settings))
    configured = {d.name for d in settings.destinations}
    if args.destination is not None and args.destination not in configured:
        print(
            f"note: destination {args.destination!r} is not in {args.config}: its deliveries "
            "stay queued until it is configured again",
            file=sys.stderr,
        )
    store = open_state(settings)
    try:
        count = store.requeue_dead(
            now=datetime.now(UTC), destination=args.destination, event_id=args.event
        )
    finally:
        store.close()
    noun = "delivery" if count == 1 else "deliveries"
    print(f"{count} dead {noun} queued again")
    return EXIT_OK


# --- simulate / demo ------------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (port 0 to 65535), got {text!r}")
    return host.strip("[]"), int(port)


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return int(text)


def _rotate_every(text: str) -> float:
    from monitor.demo import MIN_ROTATE_EVERY

    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not seconds >= MIN_ROTATE_EVERY or seconds == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_ROTATE_EVERY:g} seconds (twice the demo's poll interval), "
            f"got {text!r}"
        )
    return seconds


def cmd_simulate(args: argparse.Namespace) -> int:
    from monitor.simulator import run_simulator

    host, port = args.listen
    return run_simulator(f"{host}:{port}", args.tenants, preset=args.preset)


def _check_port_free(port: int) -> None:
    """The metrics port the demo is about to use, checked before anything starts."""
    from monitor.web import bind

    try:
        bind("127.0.0.1", port).close()
    except ConfigError as exc:
        reason = exc.problems[0].removeprefix("listen: ")
        raise ConfigError(f"--port {port}: {reason} (choose another with --port)") from None


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    _check_port_free(args.port)
    with _stop_signals(), tempfile.TemporaryDirectory(prefix="keywatch-demo-") as state_dir:
        return run_demo(
            args.config,
            listen_port=args.port,
            state_dir=state_dir,
            rotate_every=args.rotate_every,
            environ=os.environ,
        )


# --- parser ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (the usage is behind --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="keywatch", description="Watch Auth0 tenants' application signing keys.")
    parser.add_argument("--version", action="version", version=f"keywatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="poll every tenant once and report")
    check.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(handler=cmd_check)

    validate = commands.add_parser(
        "validate", help="check a configuration file and that its state store can be opened"
    )
    validate.add_argument("file", help="configuration file (YAML)")
    validate.add_argument(
        "--no-store",
        action="store_true",
        help="check the file only: do not look at the state store (no PostgreSQL connection)",
    )
    validate.set_defaults(handler=cmd_validate)

    simulate = commands.add_parser("simulate", help="run the simulated Auth0 on its own")
    simulate.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8765))
    simulate.add_argument("--tenants", type=int, default=1, help="number of tenants (default 1)")
    simulate.add_argument(
        "--preset",
        choices=["unlimited", "free", "enterprise"],
        default="unlimited",
        help="rate-limit preset (default unlimited; free = 2 requests/s)",
    )
    simulate.set_defaults(handler=cmd_simulate)

    test_notify = commands.add_parser(
        "test-notify", help="send a sample event to one destination and report the answer"
    )
    test_notify.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    test_notify.add_argument("--destination", "-d", required=True, help="destination name")
    test_notify.set_defaults(handler=cmd_test_notify)

    status = commands.add_parser(
        "status", help="tenants, pending and dead deliveries, read from the store"
    )
    status.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.set_defaults(handler=cmd_status)

    redeliver = commands.add_parser("redeliver", help="queue dead deliveries again")
    redeliver.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    redeliver.add_argument("--destination", "-d", help="only this destination's")
    redeliver.add_argument("--event", "-e", help="only this event's (an event id)")
    redeliver.set_defaults(handler=cmd_redeliver)

    demo = commands.add_parser("demo", help="simulator + daemon + scripted rotations")
    demo.add_argument(
        "--config", help="configuration file (default: the demo configuration in the package)"
    )
    demo.add_argument("--port", type=_port, default=9464, help="metrics port (default 9464)")
    demo.add_argument(
        "--rotate-every",
        type=_rotate_every,
        default=20.0,
        help="seconds between scripted rotations (default 20, at least 4)",
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run_command(args)


def _run_command(args: argparse.Namespace) -> int:
    """The one error boundary of every command: expected failures are one line each, prefixed
    with the configuration file; anything else is a bug, reported in one line with a hint
    (the traceback goes to the log at DEBUG)."""
    source = _source_of(args)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        _print_config_error(exc, source)
        return EXIT_CONFIG
    except KeywatchError as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        ignore_stop_signals()
        print(f"keywatch {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.debug("keywatch %s failed", args.command, exc_info=True)
        print(
            f"keywatch {args.command}: unexpected error ({type(exc).__name__}); "
            "this is a bug: set log_level: debug to see the traceback, and report it",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    return code


def _source_of(args: argparse.Namespace) -> str:
    """What error lines are about: the configuration file, else the command."""
    path = getattr(args, "config", None) or getattr(args, "file", None)
    if path:
        return str(path)
    return f"keywatch {args.command}"


if __name__ == "__main__":
    sys.exit(main())
