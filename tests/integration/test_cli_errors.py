"""Every command against bad state, hostile input and signals: the documented exit code, one
line per problem on stderr, never a traceback, and (for signals) nothing lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import MAX_YAML_DEPTH
from monitor.simulator import Simulator, SimulatorServer
from tests.support.daemon import daemon_config
from tests.support.deploy import free_port, port_in_use, wait_for

DEADLINE_SECONDS = 20.0
POSTGRES_REFUSED = "postgresql://postgres@127.0.0.1:1/test"
# Under 284 bytes that a naive loader expands to 9**8 strings.
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefg", "bcdefgh", strict=True)
)


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(Simulator(tenants=1)) as running_server:
        yield running_server


def keywatch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_SECONDS,
        cwd=cwd,
        check=False,
    )


def one_clean_line(err: str, *fragments: str) -> str:
    """The one line ``err`` holds; it names every fragment and is no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


# --- a store that cannot be opened: run, validate, status, redeliver agree ------------------


def _under_a_file(tmp: Path) -> str:
    (tmp / "afile").write_text("x")
    return f"sqlite:///{tmp}/afile/state.db"


def _a_directory(tmp: Path) -> str:
    (tmp / "adir").mkdir()
    return f"sqlite:///{tmp}/adir"


def _not_sqlite(tmp: Path) -> str:
    (tmp / "notes.db").write_text("these are not the tables you are looking for\n" * 20)
    return f"sqlite:///{tmp}/notes.db"


def _unwritable(tmp: Path) -> str:
    return "sqlite:////sys/keywatch-test/state.db"  # not writable, not even for root


STORES = [
    pytest.param(_under_a_file, "afile is a file, not a directory", id="path under a file"),
    pytest.param(_a_directory, "adir is a directory, not a database file", id="a directory"),
    pytest.param(_not_sqlite, "file is not a database", id="not a SQLite file"),
    pytest.param(_unwritable, "cannot create it in /sys", id="unwritable location"),
    pytest.param(lambda _: POSTGRES_REFUSED, "Connection refused", id="postgres refuses"),
    pytest.param(
        lambda _: "postgresql://postgres@127.0.0.1:1/test?sslmode=bogus",
        'invalid sslmode value: "bogus"',
        id="bad sslmode",
    ),
]


def store_config(server: SimulatorServer, tmp: Path, state: str) -> str:
    text = daemon_config(server, tmp).replace(f"sqlite:///{tmp}/state.db", state)
    path = tmp / "keywatch.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("make_state", "expected"), STORES)
@pytest.mark.parametrize("command", ["validate", "status", "redeliver"])
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(
    command: str,
    make_state: object,
    expected: str,
    server: SimulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert callable(make_state)
    config = store_config(server, tmp_path, make_state(tmp_path))
    args = [command, config] if command == "validate" else [command, "--config", config]
    assert main(args) == 2
    one_clean_line(capsys.readouterr().err, config, expected)


@pytest.mark.parametrize(("make_state", "expected"), STORES)
def test_run_reports_the_store_as_validate_does(
    make_state: object, expected: str, server: SimulatorServer, tmp_path: Path
) -> None:
    assert callable(make_state)
    config = store_config(server, tmp_path, make_state(tmp_path))
    result = keywatch("run", "--config", config)
    assert result.returncode == 2, result.stderr
    line = one_clean_line(result.stderr, config, expected)
    assert "stopped" not in result.stderr
    validated = keywatch("validate", config)
    assert validated.returncode == 2
    assert one_clean_line(validated.stderr) == line


def test_the_alias_bomb_is_small() -> None:
    assert len(ALIAS_BOMB.encode()) <= 284


@pytest.mark.postgres
def test_a_missing_postgres_database_is_reported_by_validate_and_run(
    server: SimulatorServer, tmp_path: Path, postgres_admin_url: str
) -> None:
    missing = postgres_admin_url.split("?")[0].rsplit("/", 1)[0] + "/keywatch_no_such_database"
    config = store_config(server, tmp_path, missing)
    for args in (["validate", config], ["run", "--config", config]):
        result = keywatch(*args)
        assert result.returncode == 2
        one_clean_line(result.stderr, 'database "keywatch_no_such_database" does not exist')


def test_validate_no_store_checks_the_file_only(
    server: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = store_config(server, tmp_path, POSTGRES_REFUSED)
    assert main(["validate", "--no-store", config]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: ok")


def test_validate_changes_nothing_in_the_store_location(
    server: SimulatorServer, tmp_path: Path
) -> None:
    state = tmp_path / "new" / "deeper" / "state.db"
    config = store_config(server, tmp_path, f"sqlite:///{state}")
    assert main(["validate", config]) == 0
    assert not (tmp_path / "new").exists()


# --- hostile configuration files, for every command that reads one --------------------------

HOSTILE = [
    pytest.param(ALIAS_BOMB, "YAML aliases expand to more than", id="alias bomb"),
    pytest.param("[" * 500, f"nested deeper than {MAX_YAML_DEPTH} levels", id="500 brackets"),
    pytest.param(
        "tenants:\n  - name: a\0b\n",
        "control character U+0000 is not allowed in YAML (line 2, column 12)",
        id="NUL byte",
    ),
    pytest.param(
        "tenants:\n  - name: 'prod\n    domain: a.auth0.com\n\n",
        "while scanning a quoted scalar that starts here (line 2, column 11)",
        id="unclosed quote",
    ),
    pytest.param("x: " + "y" * (16 * 1024 * 1024), "larger than 16 MiB", id="too large"),
    pytest.param(
        "tenants:\n  - {name: a, domain: a.auth0.com, token: t, interval: 1ms}\n",
        "tenants[0].interval: must be at least 1s for an Auth0 domain",
        id="interval 1ms",
    ),
    pytest.param(
        "tenants:\n  - name: a\n    domain: a.auth0.com\n    token: t\n    interval: 0.001s\n",
        "got 1ms (line 5)",
        id="interval on its own line",
    ),
    pytest.param(
        "log_level: {a: 1}\ntenants:\n  - {name: a, domain: a.auth0.com, token: t}\n",
        "log_level: expected 'debug', 'info', 'warning' or 'error', got a mapping (line 1)",
        id="a mapping for a string",
    ),
]
CONFIG_COMMANDS = [
    ["validate", "{}"],
    ["check", "--config", "{}"],
    ["test-notify", "--config", "{}", "--destination", "x"],
    ["status", "--config", "{}"],
    ["redeliver", "--config", "{}"],
]


@pytest.mark.parametrize(("text", "expected"), HOSTILE)
@pytest.mark.parametrize("argv", CONFIG_COMMANDS, ids=lambda argv: argv[0])
def test_hostile_configuration_is_one_line_and_exit_2(
    argv: list[str],
    text: str,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    assert main([part.format(path) for part in argv]) == 2  # a hang ends at pytest's timeout
    one_clean_line(capsys.readouterr().err, f"{path}: ", expected)


@pytest.mark.parametrize(("text", "expected"), HOSTILE[:2])
@pytest.mark.parametrize("command", ["run", "demo"])
def test_hostile_configuration_for_the_daemon_commands(
    command: str, text: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    extra = ["--port", str(free_port())] if command == "demo" else []
    result = keywatch(command, "--config", str(path), *extra)
    assert result.returncode == 2
    one_clean_line(result.stderr, f"{path}: ", expected)


def test_validate_stops_reading_dev_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/dev/zero"]) == 2
    one_clean_line(capsys.readouterr().err, "/dev/zero: larger than 16 MiB")


# --- ports and bounds of the arguments -------------------------------------------------------

BAD_ARGUMENTS = [
    pytest.param(["demo", "--port", "99999"], "expected a port from 1 to 65535", id="port high"),
    pytest.param(["demo", "--port", "-1"], "expected a port from 1 to 65535", id="port -1"),
    pytest.param(["demo", "--port", "0"], "expected a port from 1 to 65535", id="port 0"),
    pytest.param(["demo", "--rotate-every", "0"], "must be at least 4 seconds", id="rotate 0"),
    pytest.param(["demo", "--rotate-every", "nan"], "must be at least 4 seconds", id="rotate nan"),
    pytest.param(["simulate", "--listen", "127.0.0.1:99999"], "port 0 to 65535", id="listen"),
    pytest.param(["status"], "the following arguments are required: --config", id="missing"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_ARGUMENTS)
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], expected: str) -> None:
    result = keywatch(*argv)
    assert result.returncode == 2
    one_clean_line(result.stderr, f"keywatch {argv[0]}: ", expected, "--help")


def test_demo_with_its_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with port_in_use() as port:
        result = keywatch("demo", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 2
    one_clean_line(result.stderr, f"keywatch demo: --port {port}: cannot listen on", "--port")
    assert "stopped" not in result.stdout + result.stderr


def test_simulate_with_its_port_in_use_is_one_line_and_exit_2() -> None:
    with port_in_use() as port:
        result = keywatch("simulate", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    one_clean_line(result.stderr, f"keywatch simulate: cannot listen on 127.0.0.1:{port}", "in use")


def test_run_with_its_port_in_use_says_so_and_never_stopped(
    server: SimulatorServer, tmp_path: Path
) -> None:
    with port_in_use() as port:
        text = daemon_config(server, tmp_path).replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"')
        config = tmp_path / "keywatch.yaml"
        config.write_text(text)
        result = keywatch("run", "--config", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"listen: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("Address already in use")
    assert " stopped" not in result.stderr  # the error is the last word: nothing had started


def test_an_unexpected_error_is_one_line_with_a_hint_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(path: object) -> object:
        raise TypeError("a bug, with a detail that could hold anything")

    monkeypatch.setattr("monitor.cli.load_config", broken)
    assert main(["validate", str(tmp_path / "k.yaml")]) == 1
    line = one_clean_line(capsys.readouterr().err, "keywatch validate: unexpected error")
    assert "TypeError" in line and "log_level: debug" in line
    assert "could hold anything" not in line  # the text may hold a secret; the log has it


# --- signals ---------------------------------------------------------------------------------


def pending_deliveries(state: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(state) as connection:
        rows = connection.execute(
            "SELECT event_id, destination FROM deliveries WHERE state = 'pending'"
        ).fetchall()
    return {(str(event_id), str(destination)) for event_id, destination in rows}


@contextmanager
def keywatch_run(config: Path, log: Path) -> Iterator[subprocess.Popen[str]]:
    """``keywatch run --config config`` with its output in ``log``; killed if it still runs
    when the block ends."""
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(
    check: Callable[[], object], what: str, process: subprocess.Popen[str], log: Path
) -> None:
    wait_for(check, timeout=DEADLINE_SECONDS, what=what, diagnostics=log.read_text, process=process)


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT, signal.SIGINT), (signal.SIGINT, signal.SIGTERM)],
    ids=["SIGINT twice", "SIGINT then SIGTERM"],
)
def test_run_stops_cleanly_on_repeated_signals_and_keeps_pending_deliveries(
    signals: tuple[int, int], server: SimulatorServer, tmp_path: Path
) -> None:
    unreachable = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: stays pending
    config = tmp_path / "keywatch.yaml"
    config.write_text(
        daemon_config(server, tmp_path, interval="200ms")
        + f"destinations:\n  - {{name: hook, kind: webhook, url: '{unreachable}'}}\n"
    )
    state, log = tmp_path / "state.db", tmp_path / "run.log"
    with keywatch_run(config, log) as process:
        wait_until(lambda: "baseline" in log.read_text(), "baseline", process, log)
        server.simulator.tenant("tenant-1").rotate()
        wait_until(lambda: pending_deliveries(state), "pending delivery", process, log)
        pending = pending_deliveries(state)
        for signum in signals:  # the second arrives while the first is being handled
            process.send_signal(signum)
        code = process.wait(timeout=DEADLINE_SECONDS)
    out = log.read_text()
    assert code == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert out.strip().splitlines()[-1].endswith("INFO    stopped"), out
    assert pending_deliveries(state) == pending, "pending deliveries survive the stop"


def test_demo_stops_promptly_on_one_sigint_to_its_process_group(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    argv = [sys.executable, "-m", "monitor", "demo", "--port", str(free_port())]
    with log.open("w") as output:
        process = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
            text=True,
        )
    try:
        wait_until(lambda: "baseline" in log.read_text(), "baseline", process, log)
        assert list(tmp_path.glob("keywatch-demo-*")), "the demo's temporary state"
        os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=DEADLINE_SECONDS)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    out = log.read_text()
    assert code == 0, out
    assert "Traceback" not in out and out.strip().endswith("demo: stopped")
    assert not list(tmp_path.glob("keywatch-demo-*")), "the temporary directory is removed"


def test_a_reload_of_a_hostile_file_keeps_running(server: SimulatorServer, tmp_path: Path) -> None:
    config, log = tmp_path / "keywatch.yaml", tmp_path / "run.log"
    config.write_text(daemon_config(server, tmp_path))
    with keywatch_run(config, log) as process:
        wait_until(lambda: "baseline" in log.read_text(), "baseline", process, log)
        config.write_text("[" * 500)
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text(), "refusal", process, log)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=DEADLINE_SECONDS)
    out = log.read_text()
    assert code == 0, out
    assert f"nested deeper than {MAX_YAML_DEPTH} levels" in out
    assert "Traceback" not in out and "never retrieved" not in out
