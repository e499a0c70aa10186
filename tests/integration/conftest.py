"""Every test in this directory is an integration test: it starts real servers on loopback,
subprocesses or a PostgreSQL schema. ``make unit`` leaves them out; ``make test`` runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
