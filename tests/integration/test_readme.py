"""The README is the front door and the docs/ pages are the reference: they match what keywatch
really exports and runs, and every page is reachable from the README and the site's nav."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from monitor.cli import build_parser
from monitor.config import parse_config
from monitor.metrics import METRIC_NAMES
from monitor.model import EventType
from monitor.simulator import SimulatorServer
from tests.support import REPO
from tests.support.daemon import daemon_settings, running

pytestmark = pytest.mark.simulator(tenants=1, key_pool_size=2)

README = REPO / "README.md"
DOCS = REPO / "docs"
MKDOCS = REPO / "mkdocs.yml"
METRICS_PAGE = DOCS / "metrics.md"
COMMANDS_PAGE = DOCS / "commands.md"
EVENTS_PAGE = DOCS / "events.md"
README_MAX_LINES = 250

ROW = re.compile(r"^\| `((?:auth0|keywatch)_[a-z0-9_]+)` \|", re.MULTILINE)
EVENT_ROW = re.compile(r"^\| `((?:key|tenant|jwks|mirror)\.[a-z_]+)` \|", re.MULTILINE)
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
COMMAND_ROW = re.compile(r"^\| `keywatch ([a-z-]+)[^`]*` \|.*$", re.MULTILINE)
DOCS_LINK = re.compile(r"\]\(docs/([\w-]+\.md)(?:#[\w-]+)?\)")
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def documented_metrics() -> set[str]:
    return set(ROW.findall(METRICS_PAGE.read_text(encoding="utf-8")))


def command_rows(page: Path) -> dict[str, str]:
    """Each row of a page's commands table, by command name."""
    text = page.read_text(encoding="utf-8")
    return {match.group(1): match.group(0) for match in COMMAND_ROW.finditer(text)}


def cli_commands() -> set[str]:
    (subcommands,) = (
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    return set(subcommands.choices)


def nav_pages(entries: list[Any]) -> list[str]:
    """The docs pages a mkdocs ``nav`` lists, at any depth (external links left out)."""
    pages: list[str] = []
    for entry in entries:
        target = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(target, list):
            pages.extend(nav_pages(target))
        elif not str(target).startswith(("http://", "https://")):
            pages.append(str(target))
    return pages


def test_every_documented_metric_is_a_known_metric() -> None:
    documented = documented_metrics()
    assert documented, "docs/metrics.md has no metric table"
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
    assert exported - documented_metrics() == set(), "exported but missing from docs/metrics.md"


def test_the_events_table_lists_every_event_type() -> None:
    documented = EVENT_ROW.findall(EVENTS_PAGE.read_text(encoding="utf-8"))
    assert len(documented) == len(set(documented)), "an event type is listed twice"
    assert set(documented) == {kind.value for kind in EventType}


def test_the_readme_stays_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert 0 < lines < README_MAX_LINES, f"README.md has {lines} lines: move reference to docs/"


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    listed = nav_pages(yaml.safe_load(MKDOCS.read_text(encoding="utf-8"))["nav"])
    assert pages, "docs/ has no pages"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"
    assert pages - set(listed) == set(), "pages missing from the mkdocs.yml nav"
    assert set(listed) - pages == set(), "nav entries without a page"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = set(DOCS_LINK.findall(README.read_text(encoding="utf-8")))
    pages = {path.name for path in DOCS.glob("*.md")}
    assert pages - linked == set(), "docs pages the README does not link to"
    assert linked - pages == set(), "README links to docs pages that do not exist"


def test_the_commands_tables_list_every_command_alike() -> None:
    in_readme, in_docs = command_rows(README), command_rows(COMMANDS_PAGE)
    assert set(in_readme) == cli_commands(), "README.md's commands table vs keywatch's commands"
    assert set(in_docs) == cli_commands(), "docs/commands.md's table vs keywatch's commands"
    for command, row in in_readme.items():
        assert row.replace("](docs/", "](") == in_docs[command], f"the rows of {command} differ"


def test_the_readme_minimal_configuration_is_valid() -> None:
    (block,) = YAML_BLOCK.findall(README.read_text(encoding="utf-8"))
    env = {
        "AUTH0_CLIENT_ID": "client-id",
        "AUTH0_CLIENT_SECRET": "client-secret",
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
    }
    settings = parse_config(block, env=env)
    assert [tenant.name for tenant in settings.tenants] == ["prod"]
    assert [destination.name for destination in settings.destinations] == ["secops"]
