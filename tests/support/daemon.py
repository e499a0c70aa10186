"""Helpers for tests that run the daemon against the simulator over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from monitor.config import Settings, parse_config
from monitor.daemon import Daemon, build_daemon
from monitor.model import Event
from monitor.simulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, SimulatorServer
from tests.support.delivery import Receiver

DEADLINE_SECONDS = 15.0


def daemon_config(
    server: SimulatorServer,
    state_dir: Path,
    *,
    tenants: Sequence[str] = ("tenant-1",),
    interval: str = "1h",
    secret: str = DEFAULT_CLIENT_SECRET,
    extra_tenant_lines: str = "",
    extra_lines: str = "",
) -> str:
    lines = [
        'listen: "127.0.0.1:0"',
        f'state: "sqlite:///{state_dir}/state.db"',
        f"defaults: {{interval: {interval}, jitter: 0, timeout: 5s}}",
        "tenants:",
    ]
    for name in tenants:
        lines += [
            f"  - name: {name}",
            f"    base_url: {server.tenant_url(name)}",
            f"    client_id: {DEFAULT_CLIENT_ID}",
            f"    client_secret: {secret}",
        ]
        if extra_tenant_lines:
            lines.append(extra_tenant_lines)
    if extra_lines:
        lines.append(extra_lines)
    return "\n".join(lines) + "\n"


def daemon_settings(server: SimulatorServer, state_dir: Path, **options: Any) -> Settings:
    return parse_config(daemon_config(server, state_dir, **options))


def hook_destination(receiver: Receiver, *fields: str) -> str:
    """One entry of ``destinations:``, the webhook ``hook`` on ``receiver``'s /hook for every
    event and severity; ``fields`` are more of its settings ("proxy: direct")."""
    url = receiver.url("/hook")
    settings = [f"name: hook, kind: webhook, url: '{url}'", "min_severity: info", *fields]
    return "  - {" + ", ".join(settings) + "}\n"


def chat_destination(receiver: Receiver, event: str) -> str:
    """One entry of ``destinations:``, the Slack destination ``chat`` on ``receiver``'s /slack
    for the events of type ``event`` only."""
    return f"  - {{name: chat, kind: slack, url: '{receiver.url('/slack')}', events: [{event}]}}\n"


def replica_config(
    server: SimulatorServer,
    receiver: Receiver,
    directory: Path,
    *,
    state: str,
    extra_lines: str = "",
    extra_tenant_lines: str = "",
) -> str:
    """One replica's configuration: one simulated tenant polled every 200 ms, the store
    ``state``, a webhook for everything and a Slack destination for rotations on ``receiver``."""
    text = daemon_config(
        server,
        directory,
        interval="200ms",
        extra_lines=extra_lines,
        extra_tenant_lines=extra_tenant_lines,
    )
    text = text.replace(f'state: "sqlite:///{directory}/state.db"', f'state: "{state}"')
    assert state in text
    return (
        text
        + "destinations:\n"
        + hook_destination(receiver)
        + chat_destination(receiver, "key.rotated")
    )


@asynccontextmanager
async def running(settings: Settings, **options: Any) -> AsyncIterator[Daemon]:
    """A started daemon that has polled every tenant once; shut down on exit. ``options`` go
    to ``build_daemon`` (``now``: a clock shared with the simulator)."""
    daemon = build_daemon(settings, **options)
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.wait_ready(), DEADLINE_SECONDS)
        yield daemon
    finally:
        await daemon.shutdown()


def sample(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


def stored_events(daemon: Daemon, tenant: str | None = None) -> list[Event]:
    return daemon.store.recent_events(tenant)
