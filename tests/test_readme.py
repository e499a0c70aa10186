"""The README's metric reference matches what keywatch really exports."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from monitor.metrics import METRIC_NAMES
from monitor.simulator import Simulator, SimulatorServer
from tests.daemon_support import daemon_settings, running

README = Path(__file__).resolve().parents[1] / "README.md"
ROW = re.compile(r"^\| `((?:auth0|keywatch)_[a-z0-9_]+)` \|", re.MULTILINE)
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)


def documented_metrics() -> set[str]:
    return set(ROW.findall(README.read_text(encoding="utf-8")))


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator(tenants=1, key_pool_size=2)) as running_server:
        yield running_server


def test_every_documented_metric_is_a_known_metric() -> None:
    documented = documented_metrics()
    assert documented, "the README has no metric table"
    assert documented - set(METRIC_NAMES) == set(), "documented but not exported"
    assert set(METRIC_NAMES) - documented == set(), "exported but not documented"


async def test_every_metric_on_a_live_scrape_is_documented(
    server: SimulatorServer, tmp_path: Path
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    async with running(daemon_settings(server, tmp_path)) as daemon:
        old = tenant.current_kid
        tenant.rotate()
        tenant.revoke(old)
        await daemon.poll_tenant("tenant-1")
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{daemon.port}/metrics")).text
    exported = set()
    for name, kind in TYPE_LINE.findall(text):
        exported.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    assert exported, "nothing was exported"
    assert exported - documented_metrics() == set(), "exported but missing from the README"
