"""Every test in this directory is an integration test: it starts real servers on loopback,
subprocesses or a PostgreSQL schema. ``make unit`` leaves them out; ``make test`` runs them.

The fixtures several files use live here (``server``, ``receiver``, ``store``, ``pki``). A file
that needs another fleet says so with the ``simulator`` marker; one that needs another receiver
or store defines its own fixture of the same name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.simulator import Simulator, SimulatorServer
from monitor.store.sqlite import SQLiteStore
from tests.support.delivery import Answer, Receiver
from tests.support.tls import Pki, make_pki

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[SimulatorServer]:
    """The simulator on loopback: one tenant, its RSA keys from a pool of four (fast to make),
    unless a ``simulator`` marker says otherwise, e.g.
    ``pytestmark = pytest.mark.simulator(tenants=2, key_pool_size=6)``."""
    marker = request.node.get_closest_marker("simulator")
    fleet = {"tenants": 1, "key_pool_size": 4} | (marker.kwargs if marker else {})
    with SimulatorServer(Simulator(**fleet)) as running_server:
        yield running_server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A loopback receiver: ``/slack`` answers 200 "ok" as Slack does, other paths 204."""
    with Receiver(defaults={"/slack": Answer(200, b"ok")}) as running_receiver:
        yield running_receiver


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """A migrated SQLite store in the test's directory (state.db), closed at the end."""
    opened = SQLiteStore(tmp_path / "state.db")
    opened.migrate()
    yield opened
    opened.close()


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh test CA and a server certificate for 127.0.0.1 it signed, in tmp_path/pki."""
    return make_pki(tmp_path / "pki")
