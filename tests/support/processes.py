"""The daemon as a real process (``keywatch run``) for the tests that freeze, stop or starve it:
its configuration file, its HTTP endpoints and metrics read from outside, its signals; and
stores that fail for real: a private PostgreSQL server to stop and restart, a tiny file system
to fill."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.simulator import SimulatorServer
from tests.support.daemon import replica_config
from tests.support.delivery import Receiver
from tests.support.deploy import ManagedProcess, free_port, keywatch_command


def process_config(
    server: SimulatorServer,
    receiver: Receiver,
    directory: Path,
    *,
    state: str,
    port: int,
    extra_lines: str = "",
) -> Path:
    """The file of ``replica_config``, listening on ``port``."""
    text = replica_config(server, receiver, directory, state=state, extra_lines=extra_lines)
    text = text.replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"')
    path = directory / f"keywatch-{port}.yaml"
    path.write_text(text)
    return path


class DaemonProcess(ManagedProcess):
    """``keywatch run`` in a process of its own, on a port of its own."""

    def __init__(
        self,
        name: str,
        server: SimulatorServer,
        receiver: Receiver,
        directory: Path,
        *,
        state: str,
        extra_lines: str = "",
    ) -> None:
        self.port = free_port()
        self.config = process_config(
            server, receiver, directory, state=state, port=self.port, extra_lines=extra_lines
        )
        command = [*keywatch_command(), "run", "--config", str(self.config)]
        super().__init__(name, command, log_dir=directory)

    def get(self, path: str) -> httpx.Response | None:
        """The daemon's answer to GET ``path``; None while it does not answer."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2.0)
        except httpx.HTTPError:
            return None

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the daemon's /metrics; None while it does not answer or lacks it."""
        answer = self.get("/metrics")
        if answer is None or answer.status_code != 200:
            return None
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _signal(self, signum: int) -> None:
        assert self.process is not None and self.process.poll() is None, "not running"
        self.process.send_signal(signum)


# --- stores that fail for real ---------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip with ``reason``; under CI=true, where nothing may skip, fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true never skips it)")
    pytest.skip(reason)


def _postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl: on PATH, else Debian's newest version. A link on PATH
    is followed, since the server may run as ``postgres``, who cannot enter every PATH dir."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


class PrivatePostgres:
    """A PostgreSQL server of the test's own (``initdb`` into a temporary directory, a free
    port, a private socket directory), so stopping and restarting it disturbs no other test.
    As root, the server runs as the ``postgres`` user (initdb refuses root)."""

    def __init__(self) -> None:
        binaries = _postgres_bin()
        if binaries is None:
            unavailable("PostgreSQL's initdb and pg_ctl are not installed")
        assert binaries is not None
        self._bin = binaries
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="keywatch-pg-"))
        self._data = self.directory / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            self._user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self._data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self._data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        subprocess.run(
            [
                *self._user,
                str(self._bin / "pg_ctl"),
                "-D",
                str(self._data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, program: str, *arguments: str) -> None:
        done = subprocess.run(
            [*self._user, str(self._bin / program), *arguments],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            unavailable(f"{program} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


@contextmanager
def small_filesystem(directory: Path, *, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``directory`` (needs root and permission to mount)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        unavailable(f"cannot mount a small tmpfs: {mounted.stderr.strip() or 'not root'}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` up to the last byte; returns the filler file."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
