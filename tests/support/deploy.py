"""Helpers shared by the deployment tests (test_deploy_*.py, test_e2e_prometheus.py).

External tools (promtool, prometheus, alertmanager, kubectl, systemd-analyze) are optional on a
developer machine: a test that needs a missing one is skipped with the reason. In CI
(``CI=true``) the Prometheus tools are installed by ``.ci/run``, so a missing one fails instead
of silently skipping the alerting tests.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, TracebackType
from typing import IO, TypeVar

import pytest

from tests.support import REPO

REPO_ROOT = REPO
DEPLOY_DIR = REPO_ROOT / "deploy"

# Tools (and modules) whose absence fails the run under CI=true: Debian packages prometheus and
# prometheus-alertmanager (.ci/run installs them), kubectl (on the machine image) and the
# kubernetes-validate test dependency; any other missing one only skips its tests.
REQUIRED_IN_CI = frozenset(
    {
        "promtool",
        "prometheus",
        "prometheus-alertmanager",
        "amtool",
        "kubectl",
        "kubernetes_validate",
    }
)

POLL_SECONDS = 0.1
T = TypeVar("T")


def find_tool(name: str) -> str:
    """The path of an external program, or skip (fail under CI for REQUIRED_IN_CI) the test."""
    # PATH decides (so a run with a narrowed PATH sees the tool as absent); /usr/sbin is added
    # because a non-root PATH often lacks it.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if path is not None:
        return path
    message = f"{name} is not installed (Debian: apt-get install {_debian_package(name)})"
    if os.environ.get("CI") == "true" and name in REQUIRED_IN_CI:
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


def find_module(name: str, *, package: str) -> ModuleType:
    """Import an optional Python module, or skip (fail under CI for REQUIRED_IN_CI) the test."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"{name} is not installed (pip install {package})"
        if os.environ.get("CI") == "true" and name in REQUIRED_IN_CI:
            pytest.fail(f"{message}; CI must install it")
        pytest.skip(message)


def _debian_package(tool: str) -> str:
    return {
        "promtool": "prometheus",
        "amtool": "prometheus-alertmanager",
        "systemd-analyze": "systemd",
    }.get(tool, tool)


def keywatch_command() -> list[str]:
    """How to run the keywatch of the environment running the tests."""
    script = Path(sys.executable).parent / "keywatch"
    return [str(script)] if script.exists() else [sys.executable, "-m", "monitor"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for programs that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def port_in_use() -> Iterator[int]:
    """A port on 127.0.0.1 that a listening socket holds until the block ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port: int = taken.getsockname()[1]
        yield port


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
    process: subprocess.Popen[str] | subprocess.Popen[bytes] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail after ``timeout``
    seconds, or as soon as ``process`` (when given) has exited, naming ``what`` was awaited and
    appending ``diagnostics()``. The one way a synchronous test waits."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if process is not None and process.poll() is not None:
            pytest.fail(
                f"exited with {process.returncode} while waiting for {what}\n{diagnostics()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}\n{diagnostics()}")
        time.sleep(POLL_SECONDS)


class ManagedProcess:
    """A subprocess whose output goes to a log file; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
        )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
        code: int | None = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=5)
            code = self.process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return f"--- {self.name}: no log"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- {self.name} ({shlex.join(self.argv[:2])} ...), last lines:\n{tail}"

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction (CMD ["a", "b"]); fails on shell form."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        pytest.fail(f"expected the exec (JSON array) form, got: {arguments}")
    assert isinstance(value, list) and all(isinstance(item, str) for item in value), arguments
    return value
