"""The ``keywatch`` command: exit codes and output, in-process and as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from monitor.cli import main
from monitor.simulator import NOSCOPE_CLIENT_ID, NOSCOPE_CLIENT_SECRET, SimulatorServer
from tests.support import REPO
from tests.support.daemon import daemon_config
from tests.support.deploy import free_port, wait_for

pytestmark = pytest.mark.simulator(tenants=2, key_pool_size=4)

DEADLINE_SECONDS = 20.0
EXAMPLE_VARIABLES = ("AUTH0_PROD_CLIENT_ID", "AUTH0_PROD_CLIENT_SECRET", "AUTH0_STAGING_MGMT_TOKEN")


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def watching(tenant: str, server: SimulatorServer, tmp_path: Path) -> str:
    """The path of a configuration file that watches the simulated ``tenant`` only."""
    return write(tmp_path / "c.yaml", daemon_config(server, tmp_path, tenants=(tenant,)))


# --- validate -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config/example.yaml", "monitor/demo.yaml"])
def test_validate_accepts_the_example_configs(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in EXAMPLE_VARIABLES:
        monkeypatch.setenv(variable, "placeholder-value")
    path = str(REPO / name)
    assert main(["validate", path]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok (")


def test_validate_prints_one_line_per_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "bad.yaml",
        "tenants:\n  - name: prod\n    domain: acme.eu.auth0.com\n    client_id: abc\n",
    )
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{path}: tenants[0].client_secret: missing (line 2)"]


def test_validate_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


# --- check ----------------------------------------------------------------------------------


def test_check_prints_a_table_and_exits_0(
    server: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = server.simulator.tenant("tenant-1")
    path = watching("tenant-1", server, tmp_path)
    assert main(["check", "--config", path]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "TENANT", "KID", "STATE", "CURRENT_SINCE", "CERT_NOT_AFTER", "THUMBPRINT"
    ]  # fmt: skip
    assert f"tenant-1  {tenant.current_kid}  current" in out
    assert "MISMATCH" not in out and "PROBLEM" not in out


def test_check_json_lists_every_key(
    server: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = server.simulator.tenant("tenant-2")
    tenant.rotate()
    path = watching("tenant-2", server, tmp_path)
    assert main(["check", "--config", path, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["exit_code"] == 0
    [report] = document["tenants"]
    states = {key["kid"]: key["state"] for key in report["keys"]}
    assert states[tenant.current_kid] == "current"
    assert states[tenant.next_kid] == "next"
    assert [states[kid] for kid in tenant.previous_kids] == ["previous"]
    assert all(key["thumbprint_ok"] for key in report["keys"])


def test_check_exits_1_when_a_tenant_has_no_current_key(
    server: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.simulator.tenant("tenant-1").malform_next(2, kind="no_current")
    path = watching("tenant-1", server, tmp_path)
    assert main(["check", "--config", path]) == 1
    assert "tenant-1: PROBLEM: no current key" in capsys.readouterr().out


def test_check_exits_1_on_a_thumbprint_that_does_not_match_the_certificate(
    server: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.simulator.tenant("tenant-1").malform_next(1, kind="bad_thumbprint")
    path = watching("tenant-1", server, tmp_path)
    assert main(["check", "--config", path]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "PROBLEM" in out


def test_check_exits_2_when_a_tenant_cannot_be_read(
    server: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = daemon_config(server, tmp_path, tenants=("tenant-1",)).replace(
        "keywatch-demo-secret", NOSCOPE_CLIENT_SECRET
    )
    text = text.replace("client_id: keywatch-demo", f"client_id: {NOSCOPE_CLIENT_ID}")
    path = write(tmp_path / "c.yaml", text)
    assert main(["check", "--config", path]) == 2
    out = capsys.readouterr().out
    assert "tenant-1: UNREACHABLE:" in out and "read:signing_keys" in out
    assert NOSCOPE_CLIENT_SECRET not in out


def test_check_exits_2_on_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "c.yaml", "tenants: []\n")
    assert main(["check", "--config", path]) == 2
    assert capsys.readouterr().err.startswith(f"{path}: tenants")


# --- run / simulate as real processes -------------------------------------------------------


def keywatch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_page(url: str, predicate: str) -> str:
    """The body of ``url`` once it answers 200 with ``predicate`` in it."""

    def page() -> str | None:
        try:
            response = httpx.get(url, timeout=2)
        except httpx.TransportError:
            return None
        return response.text if response.status_code == 200 and predicate in response.text else None

    return wait_for(page, timeout=DEADLINE_SECONDS, what=f"{url} with {predicate!r}")


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        out, _ = process.communicate(timeout=DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"did not stop on signal {signum}:\n{out}") from None
    return process.returncode, out


def test_run_serves_reloads_on_sighup_and_stops_on_sigterm(
    server: SimulatorServer, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "keywatch.yaml"
    text = daemon_config(server, tmp_path, tenants=("tenant-1",))
    write(config, text.replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
    process = keywatch("run", "--config", str(config))
    try:
        wait_for_page(f"http://127.0.0.1:{port}/readyz", "ready")
        both = daemon_config(server, tmp_path, tenants=("tenant-1", "tenant-2"))
        write(config, both.replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"'))
        process.send_signal(signal.SIGHUP)
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_for_page(metrics, 'keywatch_tenant_up{tenant="tenant-2"} 1.0')
        write(config, "tenants: [oops\n")
        process.send_signal(signal.SIGHUP)
        wait_for_page(f"http://127.0.0.1:{port}/healthz", "ok")
    finally:
        code, out = stop(process)
    assert code == 0, out
    assert "reload refused, keeping the running configuration" in out
    assert "keywatch-demo-secret" not in out


def test_run_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    process = keywatch("run", "--config", write(tmp_path / "k.yaml", "listen: 1\n"))
    out, _ = process.communicate(timeout=DEADLINE_SECONDS)
    assert process.returncode == 2
    assert "tenants: missing" in out


def test_simulate_serves_tenants_and_prints_credentials() -> None:
    port = free_port()
    process = keywatch("simulate", "--listen", f"127.0.0.1:{port}", "--tenants", "2")
    try:
        base = f"http://127.0.0.1:{port}/tenant-2"
        jwks = wait_for_page(f"{base}/.well-known/jwks.json", '"keys"')
        assert len(json.loads(jwks)["keys"]) == 2
        token = httpx.post(
            f"{base}/oauth/token",
            json={
                "grant_type": "client_credentials",
                "client_id": "keywatch-demo",
                "client_secret": "keywatch-demo-secret",
                "audience": f"{base}/api/v2/",
            },
        )
        assert token.status_code == 200
    finally:
        code, out = stop(process, signal.SIGINT)
    assert code == 0
    assert base in out and "keywatch-demo-secret" in out  # the banner documents them
