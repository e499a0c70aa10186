"""How many JWKS requests keywatch adds per tenant and poll, counted at the simulator.

The daemon polls every tenant POLLS times through ``Daemon.poll_tenant``, with a clock shared
with the simulator that moves INTERVAL seconds before each poll, and the simulator's JWKS
answers with Auth0's ``Cache-Control: max-age=15``. One tenant in four rotates halfway. The
figure is the JWKS requests the simulator served divided by the polls; the target is at most
1 per tenant per poll in the steady state.

    .venv/bin/python bench/publication.py [--tenants 20] [--polls 30] [--interval 60]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime

from monitor.config import parse_config
from monitor.daemon import build_daemon
from monitor.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator, SimulatorServer


class Clock:
    def __init__(self) -> None:
        self.epoch = float(int(time.time()))

    def time(self) -> float:
        return self.epoch

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.epoch, UTC)


def config(server: SimulatorServer, state_dir: str, tenants: int) -> str:
    lines = [
        'listen: "127.0.0.1:0"',
        f'state: "sqlite:///{state_dir}/state.db"',
        "defaults: {interval: 1h, jitter: 0, timeout: 5s}",
        "tenants:",
    ]
    for index in range(1, tenants + 1):
        lines += [
            f"  - name: tenant-{index}",
            f"    base_url: {server.tenant_url(f'tenant-{index}')}",
            f"    client_id: {DEFAULT_CLIENT_ID}",
            f"    client_secret: {DEFAULT_CLIENT_SECRET}",
        ]
    return "\n".join(lines) + "\n"


async def measure(tenants: int, polls: int, interval: float) -> float:
    clock = Clock()
    simulator = Simulator(tenants=tenants, key_pool_size=8, clock=clock.time)
    with SimulatorServer(simulator) as server, tempfile.TemporaryDirectory() as state_dir:
        daemon = build_daemon(parse_config(config(server, state_dir, tenants)), now=clock.now)
        await daemon.start()
        try:
            await daemon.wait_ready()
            before = sum(t.publication.requests_to("jwks") for t in simulator.tenants)
            for round_ in range(polls):
                clock.epoch += interval
                if round_ == polls // 2:
                    for tenant in simulator.tenants[::4]:
                        tenant.rotate()
                for tenant in simulator.tenants:
                    await daemon.poll_tenant(tenant.name)
            after = sum(t.publication.requests_to("jwks") for t in simulator.tenants)
        finally:
            await daemon.shutdown()
    return (after - before) / (tenants * polls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--polls", type=int, default=30)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    args = parser.parse_args(argv)
    per_poll = asyncio.run(measure(args.tenants, args.polls, args.interval))
    verdict = "PASS" if per_poll <= 1.0 else "MISS"
    print(
        f"JWKS requests per tenant per poll: {per_poll:.3f} (target <= 1) {verdict}  "
        f"[{args.tenants} tenants x {args.polls} polls, every {args.interval:g} s, max-age 15 s]"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
