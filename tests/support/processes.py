"""The daemon as a real process (``keywatch run``) for the tests that freeze, stop or starve it:
its configuration file, its HTTP endpoints and metrics read from outside, its signals."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from monitor.simulator import SimulatorServer
from tests.support.daemon import daemon_config
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
    """A configuration file: one simulated tenant polled every 200 ms, a webhook and a Slack
    destination on ``receiver``, the store ``state``, listening on ``port``."""
    text = daemon_config(server, directory, interval="200ms", extra_lines=extra_lines)
    text = text.replace('listen: "127.0.0.1:0"', f'listen: "127.0.0.1:{port}"')
    text = text.replace(f'state: "sqlite:///{directory}/state.db"', f'state: "{state}"')
    text += (
        "destinations:\n"
        f"  - {{name: hook, kind: webhook, url: '{receiver.url('/hook')}', min_severity: info}}\n"
        f"  - {{name: chat, kind: slack, url: '{receiver.url('/slack')}', events: [key.rotated]}}\n"
    )
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
