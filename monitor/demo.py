"""``keywatch demo``: the simulated tenant, the daemon against it, and an operator script that
rotates the signing key and then revokes the key it rotated out, again and again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path

from monitor.config import load_config
from monitor.daemon import Daemon, build_daemon, secrets_of
from monitor.logs import configure_logging
from monitor.simulator import SimulatedTenant, SimulatorServer

DEMO_TENANT = "tenant-1"


def _say(text: str) -> None:
    print(f"demo: {text}", flush=True)


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


def run_demo(
    config_path: Path,
    *,
    listen_port: int,
    state_dir: str,
    rotate_every: float,
    environ: Mapping[str, str],
) -> int:
    with SimulatorServer(tenants=1) as server:
        env = {
            **environ,
            "KEYWATCH_SIM_PORT": str(server.port),
            "KEYWATCH_LISTEN_PORT": str(listen_port),
            "KEYWATCH_DEMO_STATE": f"{state_dir}/state.db",
        }
        settings = load_config(config_path, env=env)
        redactor = configure_logging(
            log_format=settings.log_format, level=settings.log_level, secrets=secrets_of(settings)
        )
        _say(f"simulated Auth0 tenant at {server.tenant_url(DEMO_TENANT)}")
        _say(f"metrics at http://127.0.0.1:{listen_port}/metrics   (Ctrl-C stops everything)")
        _say(f"a rotation every {rotate_every:g}s, the revocation of the old key halfway between")
        daemon = build_daemon(settings, redactor=redactor)
        tenant = server.simulator.tenant(DEMO_TENANT)
        asyncio.run(_run(daemon, tenant, rotate_every=rotate_every))
    _say("stopped")
    return 0
