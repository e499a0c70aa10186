"""The repository needs nothing outside its own tree: no file that builds, runs or tests keywatch
names a directory beside the clone (a contributor's clone has none) or climbs out of the tree.

The check reads files as text: every ``../`` path is resolved from the file's directory, and
every ``Path(__file__)`` climb (``.parents[N]``, ``.parent.parent``) from the file itself; both
must stay inside the repository. ``.ci/run`` proves the same at run time by testing a clone
placed where nothing stands beside it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

CHECKED = (
    *("monitor", "tests", "bench", "deploy", "config", "docs", ".ci"),
    *("Makefile", "mkdocs.yml", "README.md", "CONTRIBUTING.md"),
)
CHECKED_SUFFIXES = {"", ".py", ".sh", ".yaml", ".yml", ".toml", ".json", ".cfg", ".ini", ".md"}
# This file's examples of escapes are data, so it leaves itself out of the scan; its patterns
# are spelled in parts so that a plain grep of the tree does not find them either.
OUTSIDE_NAMES = re.compile(
    "|".join([r"\.\./" + "shared", "shared/" + "reference", "KEYWATCH_" + "SHARED"])
)
PARENT_PATH = re.compile(r"(?:\.\./)+[\w.\-/]*")
FILE_CLIMB = re.compile(r"Path\(__file__\)(?:\.resolve\(\))?(\.parents\[(\d+)\]|(?:\.parent\b)+)")


def checked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *CHECKED],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = [REPO / name for name in listed]
    return [
        path
        for path in paths
        if path.is_file() and path.suffix in CHECKED_SUFFIXES and path != Path(__file__).resolve()
    ]


def inside_repo(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO)


def escapes(path: Path, text: str) -> list[str]:
    """The places in ``text`` (the content of ``path``) that reach outside the repository."""
    found = [f"names {match.group()!r}" for match in OUTSIDE_NAMES.finditer(text)]
    for match in PARENT_PATH.finditer(text):
        if not inside_repo(path.parent / match.group()):
            found.append(f"climbs out with {match.group()!r}")
    for match in FILE_CLIMB.finditer(text):
        ups = int(match.group(2)) + 1 if match.group(2) else match.group(1).count(".parent")
        if not inside_repo(path.parents[ups - 1]):
            found.append(f"climbs out with {match.group()!r}")
    return found


def test_no_file_reaches_outside_the_repository() -> None:
    files = checked_files()
    assert any(path.name == "test_simulator.py" for path in files), "the file list is empty"
    problems = [
        f"{path.relative_to(REPO)}: {problem}"
        for path in files
        for problem in escapes(path, path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        ("tests/x.py", 'Path(__file__).resolve().parents[2] / "shared"'),
        ("tests/x.py", "Path(__file__).parent.parent.parent"),
        ("tests/x.py", 'open("../../etc/passwd")'),
        ("Makefile", "include ../" + "shared/" + "reference/rules.mk"),
        (".ci/run", "export KEYWATCH_" + "SHARED_DIR=/srv"),
    ],
)
def test_the_check_catches_an_escape(relative: str, text: str) -> None:
    assert escapes(REPO / relative, text) != []


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        ("tests/x.py", 'Path(__file__).resolve().parents[1] / "config"'),
        ("tests/unit/x.py", "Path(__file__).parent.parent.parent / 'README.md'"),
        ("deploy/kubernetes/overlays/ha/kustomization.yaml", "resources:\n  - ../../base"),
    ],
)
def test_the_check_allows_paths_inside_the_tree(relative: str, text: str) -> None:
    assert escapes(REPO / relative, text) == []
