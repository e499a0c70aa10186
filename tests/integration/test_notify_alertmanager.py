"""AlertmanagerNotifier against a real Prometheus Alertmanager started on loopback.

Needs the ``prometheus-alertmanager`` binary (Debian package of that name); skipped without it,
except in CI (``CI=true``), where a missing binary is a failure.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.config import AlertmanagerDestination
from monitor.model import Event, EventType, make_event
from monitor.notify.alertmanager import AlertmanagerNotifier
from monitor.notify.base import Outcome
from tests.support.deploy import find_tool, free_port, wait_for

CONFIG = """
route:
  receiver: "null"
receivers:
  - name: "null"
"""
DEADLINE = 20.0


def wait_until(check: Any, what: str, process: subprocess.Popen[bytes] | None = None) -> Any:
    return wait_for(check, timeout=DEADLINE, what=what, process=process)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = find_tool("prometheus-alertmanager")
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG, encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/-/ready", timeout=1.0, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, "/-/ready", process)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def alerts_of(base: str, alertname: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/api/v2/alerts", timeout=2.0, trust_env=False)
    answer.raise_for_status()
    return [a for a in answer.json() if a["labels"].get("alertname") == alertname]


def active(base: str, alertname: str) -> list[dict[str, Any]]:
    return [a for a in alerts_of(base, alertname) if a["status"]["state"] == "active"]


def event(event_type: EventType, detected_at: datetime, **fields: Any) -> Event:
    return make_event("prod", event_type, detected_at, [event_type.value], **fields)


async def test_alerts_reach_alertmanager_and_resolve(alertmanager: str) -> None:
    config = AlertmanagerDestination(
        name="am",
        urls=(alertmanager,),
        resolve_after=3600,  # type: ignore[arg-type]
    )
    notifier = AlertmanagerNotifier(config)
    now = datetime.now(UTC)
    revoked = event(EventType.KEY_REVOKED, now, kid="kid-revoked", details={"thumbprint": "AB12"})
    no_next = event(EventType.TENANT_NO_NEXT_KEY, now, details={"last_kids": "kid-next"})
    async with httpx.AsyncClient(trust_env=False) as http:
        for sent in (revoked, no_next):
            verdict = await notifier.deliver(http, sent, now=now)
            assert verdict.outcome is Outcome.DELIVERED, verdict.detail

        (alert,) = wait_until(lambda: active(alertmanager, "Auth0SigningKeyRevoked"), "the alert")
        assert alert["labels"] == {
            "alertname": "Auth0SigningKeyRevoked",
            "tenant": "prod",
            "kid": "kid-revoked",
            "severity": "critical",
            "source": "keywatch",
        }
        assert alert["annotations"]["event_id"] == revoked.id
        assert alert["annotations"]["summary"] == "signing key kid-revoked revoked on prod"
        wait_until(lambda: active(alertmanager, "Auth0TenantNoNextSigningKey"), "no-next-key")

        # Re-sending what is active is accepted and changes nothing.
        resent = await notifier.periodic(http, datetime.now(UTC))
        assert resent is not None and resent.outcome is Outcome.DELIVERED
        assert len(active(alertmanager, "Auth0SigningKeyRevoked")) == 1

        # An operator resolves the revocation alert; a rotation clears "no next key".
        later = datetime.now(UTC)
        assert (await notifier.resolve(http, revoked, now=later)).outcome is Outcome.DELIVERED
        rotated = event(EventType.KEY_ROTATED, later, old_kid="kid-a", new_kid="kid-b")
        assert (await notifier.deliver(http, rotated, now=later)).outcome is Outcome.DELIVERED

    wait_until(lambda: not active(alertmanager, "Auth0SigningKeyRevoked"), "the resolution")
    wait_until(lambda: not active(alertmanager, "Auth0TenantNoNextSigningKey"), "the clearing")
    assert len(wait_until(lambda: active(alertmanager, "Auth0SigningKeyRotated"), "rotation")) == 1
    assert [a["labels"]["alertname"] for a in notifier.active_alerts(datetime.now(UTC))] == [
        "Auth0SigningKeyRotated"
    ]
