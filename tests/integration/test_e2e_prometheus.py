"""End to end, for real, on loopback: the simulated Auth0, keywatch (a subprocess), Prometheus
scraping it every second with deploy/prometheus/rules.yml loaded unchanged, Alertmanager, and a
webhook receiver. Revoking a key in the simulator must reach the receiver as an
Auth0SigningKeyRevoked alert naming the tenant and the kid.

Needs /usr/bin/prometheus and /usr/bin/prometheus-alertmanager (Debian packages prometheus and
prometheus-alertmanager): skipped without them, failed without them under CI=true.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.simulator.server import SimulatorServer
from monitor.simulator.tenant import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Simulator
from tests.support.deploy import (
    DEPLOY_DIR,
    ManagedProcess,
    find_tool,
    free_port,
    keywatch_command,
    wait_for,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

RULES = DEPLOY_DIR / "prometheus" / "rules.yml"
TENANT = "e2e"
ALERT = "Auth0SigningKeyRevoked"
START_TIMEOUT = 30.0
ALERT_TIMEOUT = 60.0


# --- the webhook receiver ---------------------------------------------------------------------


@dataclass
class Receiver:
    """Collects the JSON bodies POSTed to it."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.bodies)


def serve_receiver(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            with receiver.lock:
                receiver.bodies.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
    return server


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    collected = Receiver()
    server = serve_receiver(collected)
    try:
        yield collected, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator(tenants=1)) as server:
        yield server


# --- configurations ---------------------------------------------------------------------------


def keywatch_config(tmp_path: Path, *, port: int, tenant_url: str) -> Path:
    path = tmp_path / "keywatch.yaml"
    config = {
        "listen": f"127.0.0.1:{port}",
        "data_dir": str(tmp_path / "keywatch"),
        "state": f"sqlite:///{tmp_path}/keywatch/state.db",
        "defaults": {"interval": "1s", "jitter": 0},
        "tenants": [
            {
                "name": TENANT,
                "base_url": tenant_url,
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": "${E2E_CLIENT_SECRET}",
            }
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def alertmanager_config(tmp_path: Path, *, webhook_url: str) -> Path:
    path = tmp_path / "alertmanager.yml"
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "tenant", "kid"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": False}]}
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def prometheus_config(tmp_path: Path, *, keywatch_port: int, alertmanager_port: int) -> Path:
    path = tmp_path / "prometheus.yml"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "keywatch",
                "static_configs": [{"targets": [f"127.0.0.1:{keywatch_port}"]}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --- probes -----------------------------------------------------------------------------------


def get_json(url: str, **params: str) -> Any:
    try:
        response = httpx.get(url, params=params, timeout=3)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def is_ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def query(prometheus: str, promql: str) -> list[dict[str, Any]] | None:
    """The instant vector of ``promql``, or None while Prometheus has nothing."""
    answer = get_json(f"{prometheus}/api/v1/query", query=promql)
    if not answer or answer.get("status") != "success" or not answer["data"]["result"]:
        return None
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def firing_in_prometheus(prometheus: str, kid: str) -> dict[str, Any] | None:
    answer = get_json(f"{prometheus}/api/v1/alerts")
    for alert in (answer or {}).get("data", {}).get("alerts", []):
        labels = alert["labels"]
        if (labels.get("alertname"), labels.get("tenant"), labels.get("kid")) == (
            ALERT,
            TENANT,
            kid,
        ):
            if alert["state"] == "firing":
                return dict(alert)
    return None


def routed_by_alertmanager(alertmanager: str, kid: str) -> dict[str, Any] | None:
    answer = get_json(f"{alertmanager}/api/v2/alerts", filter=f'alertname="{ALERT}"')
    for alert in answer or []:
        if alert["labels"].get("kid") == kid and alert["labels"].get("tenant") == TENANT:
            return dict(alert)
    return None


def delivered(receiver: Receiver, kid: str) -> dict[str, Any] | None:
    for body in receiver.received():
        for alert in body.get("alerts", []):
            labels = alert.get("labels", {})
            if (labels.get("alertname"), labels.get("tenant"), labels.get("kid")) == (
                ALERT,
                TENANT,
                kid,
            ):
                return body
    return None


# --- the test ---------------------------------------------------------------------------------


def test_revoked_key_reaches_the_webhook_through_prometheus_and_alertmanager(
    tmp_path: Path,
    simulator: SimulatorServer,
    receiver: tuple[Receiver, str],
) -> None:
    prometheus_bin = find_tool("prometheus")
    alertmanager_bin = find_tool("prometheus-alertmanager")
    collected, webhook_url = receiver
    keywatch_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    alertmanager = f"http://127.0.0.1:{alertmanager_port}"
    tenant = simulator.simulator.tenant("tenant-1")
    tenant_url = simulator.tenant_url("tenant-1")
    keywatch_yaml = keywatch_config(tmp_path, port=keywatch_port, tenant_url=tenant_url)
    alertmanager_yml = alertmanager_config(tmp_path, webhook_url=webhook_url)
    prometheus_yml = prometheus_config(
        tmp_path, keywatch_port=keywatch_port, alertmanager_port=alertmanager_port
    )

    keywatch = ManagedProcess(
        "keywatch",
        [*keywatch_command(), "run", "--config", str(keywatch_yaml)],
        log_dir=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "E2E_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        },
    )
    am = ManagedProcess(
        "alertmanager",
        [
            alertmanager_bin,
            f"--config.file={alertmanager_yml}",
            f"--storage.path={tmp_path / 'alertmanager'}",
            f"--web.listen-address=127.0.0.1:{alertmanager_port}",
            "--cluster.listen-address=",  # no gossip port, no peers
        ],
        log_dir=tmp_path,
    )
    prom = ManagedProcess(
        "prometheus",
        [
            prometheus_bin,
            f"--config.file={prometheus_yml}",
            f"--storage.tsdb.path={tmp_path / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        log_dir=tmp_path,
    )
    processes = (keywatch, am, prom)

    def logs() -> str:
        return "\n".join(process.log_tail() for process in processes)

    with keywatch, am, prom:
        wait_for(
            lambda: is_ready(f"http://127.0.0.1:{keywatch_port}/readyz"),
            timeout=START_TIMEOUT,
            what="keywatch /readyz",
            diagnostics=logs,
        )
        wait_for(
            lambda: is_ready(f"{alertmanager}/-/ready"),
            timeout=START_TIMEOUT,
            what="Alertmanager /-/ready",
            diagnostics=logs,
        )
        wait_for(
            lambda: is_ready(f"{prometheus}/-/ready"),
            timeout=START_TIMEOUT,
            what="Prometheus /-/ready",
            diagnostics=logs,
        )

        # Prometheus has scraped the key that is about to be rotated out and revoked, unrevoked.
        old_kid = tenant.current_kid
        revoked_flag = (
            f'auth0_signing_key_state{{tenant="{TENANT}",kid="{old_kid}",state="revoked"}}'
        )
        wait_for(
            lambda: query(prometheus, f"{revoked_flag} == 0"),
            timeout=START_TIMEOUT,
            what=f"Prometheus to scrape kid {old_kid}",
            diagnostics=logs,
        )

        tenant.rotate()
        assert old_kid in tenant.previous_kids
        tenant.revoke(old_kid)

        alert = wait_for(
            lambda: firing_in_prometheus(prometheus, old_kid),
            timeout=ALERT_TIMEOUT,
            what=f"{ALERT} firing in Prometheus",
            diagnostics=logs,
        )
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook_url"].endswith("#auth0signingkeyrevoked")

        routed = wait_for(
            lambda: routed_by_alertmanager(alertmanager, old_kid),
            timeout=ALERT_TIMEOUT,
            what=f"{ALERT} in Alertmanager",
            diagnostics=logs,
        )
        assert [r["name"] for r in routed["receivers"]] == ["webhook"]

        body = wait_for(
            lambda: delivered(collected, old_kid),
            timeout=ALERT_TIMEOUT,
            what="the webhook from Alertmanager",
            diagnostics=logs,
        )
        assert body["receiver"] == "webhook"
        assert body["status"] == "firing"
        assert body["groupLabels"] == {"alertname": ALERT, "tenant": TENANT, "kid": old_kid}

        codes = {process.name: process.stop() for process in processes}
    assert codes["keywatch"] == 0, keywatch.log_tail()
    assert all(not process.running() for process in processes)
