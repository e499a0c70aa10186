"""The ``keywatch`` command. No business logic here: parse arguments, call, map to exit codes.

Exit codes: 0 fine; 1 a problem was found (``check``); 2 bad configuration, bad arguments or an
unreachable tenant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from monitor import __version__
from monitor.config import Settings, load_config
from monitor.daemon import build_daemon, secrets_of
from monitor.detect import problems
from monitor.errors import ConfigError, SourceError
from monitor.httpclient import build_http_client
from monitor.logs import configure_logging
from monitor.model import KeyState, Snapshot
from monitor.poll import client_for_tenant, fetch_snapshot

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_CONFIG = 2

log = logging.getLogger("monitor.cli")


def _print_config_error(exc: ConfigError, source: str) -> None:
    for problem in exc.problems:
        print(f"{source}: {problem}", file=sys.stderr)


def _load(path: str) -> Settings | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        _print_config_error(exc, path)
        return None


# --- run ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    redactor = configure_logging(
        log_format=settings.log_format, level=settings.log_level, secrets=secrets_of(settings)
    )
    daemon = build_daemon(settings, config_path=args.config, redactor=redactor)
    try:
        asyncio.run(daemon.run())
    except ConfigError as exc:
        _print_config_error(exc, args.config)
        return EXIT_CONFIG
    return EXIT_OK


# --- validate -------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _load(args.file)
    if settings is None:
        return EXIT_CONFIG
    print(f"{args.file}: ok ({len(settings.tenants)} tenant(s))")
    return EXIT_OK


# --- check ----------------------------------------------------------------------------------


@dataclass
class TenantCheck:
    name: str
    snapshot: Snapshot | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)


async def _check_all(settings: Settings) -> list[TenantCheck]:
    timeout = max(tenant.timeout for tenant in settings.tenants)
    async with build_http_client(timeout=timeout) as http:

        async def check_one(index: int) -> TenantCheck:
            tenant = settings.tenants[index]
            result = TenantCheck(name=tenant.name)
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


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def _key_row(tenant: str, key: KeyState) -> list[str]:
    return [
        tenant,
        key.kid,
        key.state,
        _date(key.current_since),
        _date(key.not_after),
        "ok" if key.thumbprint_ok else "MISMATCH",
    ]


def _print_table(results: Sequence[TenantCheck], out: TextIO) -> None:
    header = ["TENANT", "KID", "STATE", "CURRENT_SINCE", "CERT_NOT_AFTER", "THUMBPRINT"]
    rows = [header]
    for result in results:
        if result.snapshot is not None:
            keys = sorted(result.snapshot.keys.values(), key=lambda k: (k.state, k.kid))
            rows.extend(_key_row(result.name, key) for key in keys)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)), file=out
        )
    for result in results:
        if result.error:
            print(f"{result.name}: UNREACHABLE: {result.error}", file=out)
        for problem in result.problems:
            print(f"{result.name}: PROBLEM: {problem}", file=out)


def _key_json(key: KeyState) -> dict[str, object]:
    return {
        "kid": key.kid,
        "state": key.state,
        "current": key.current,
        "next": key.next,
        "previous": key.previous,
        "revoked": key.revoked,
        "current_since": _date(key.current_since) if key.current_since else None,
        "current_until": _date(key.current_until) if key.current_until else None,
        "revoked_at": _date(key.revoked_at) if key.revoked_at else None,
        "cert_not_after": _date(key.not_after) if key.not_after else None,
        "thumbprint": key.thumbprint,
        "thumbprint_ok": key.thumbprint_ok,
    }


def _exit_code(results: Sequence[TenantCheck]) -> int:
    if any(result.error for result in results):
        return EXIT_CONFIG
    if any(result.problems for result in results):
        return EXIT_PROBLEM
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    configure_logging(level="error", secrets=secrets_of(settings))
    results = asyncio.run(_check_all(settings))
    code = _exit_code(results)
    if args.json:
        document = {
            "exit_code": code,
            "tenants": [
                {
                    "name": result.name,
                    "reachable": result.error is None,
                    "error": result.error,
                    "problems": result.problems,
                    "keys": [
                        _key_json(result.snapshot.keys[kid]) for kid in sorted(result.snapshot.keys)
                    ]
                    if result.snapshot
                    else [],
                }
                for result in results
            ],
        }
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        _print_table(results, sys.stdout)
    return code


# --- simulate / demo ------------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def cmd_simulate(args: argparse.Namespace) -> int:
    from monitor.simulator import run_simulator

    host, port = args.listen
    return run_simulator(f"{host}:{port}", args.tenants, preset=args.preset)


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    config = Path(args.config)
    if not config.is_file():
        print(f"{config}: not found (run `make demo` from the repository root)", file=sys.stderr)
        return EXIT_CONFIG
    with tempfile.TemporaryDirectory(prefix="keywatch-demo-") as state_dir:
        return run_demo(
            config,
            listen_port=args.port,
            state_dir=state_dir,
            rotate_every=args.rotate_every,
            environ=os.environ,
        )


# --- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keywatch", description="Watch Auth0 tenants' application signing keys."
    )
    parser.add_argument("--version", action="version", version=f"keywatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="poll every tenant once and report")
    check.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.set_defaults(handler=cmd_check)

    validate = commands.add_parser("validate", help="check a configuration file")
    validate.add_argument("file", help="configuration file (YAML)")
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

    demo = commands.add_parser("demo", help="simulator + daemon + scripted rotations")
    demo.add_argument("--config", default="config/demo.yaml")
    demo.add_argument("--port", type=int, default=9464, help="metrics port (default 9464)")
    demo.add_argument(
        "--rotate-every", type=float, default=20.0, help="seconds between scripted rotations"
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
