"""The shape the structural step gave the code, kept: small modules and classes a newcomer can
read in one sitting. A module that outgrows this is split by concern, not the limit raised."""

from __future__ import annotations

import ast

from tests.support import REPO

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 250


def python_modules() -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(REPO)), path.read_text(encoding="utf-8"))
        for path in sorted((REPO / "monitor").rglob("*.py"))
    ]


def test_no_module_is_longer_than_the_limit() -> None:
    modules = python_modules()
    assert len(modules) > 40
    too_long = {name: text.count("\n") for name, text in modules}
    assert {name: n for name, n in too_long.items() if n > MAX_MODULE_LINES} == {}


def test_no_class_is_longer_than_the_limit() -> None:
    too_long = {
        f"{name}:{node.name}": node.end_lineno - node.lineno + 1
        for name, text in python_modules()
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
    }
    assert {name: n for name, n in too_long.items() if n > MAX_CLASS_LINES} == {}
