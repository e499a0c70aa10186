"""Shared helpers of the configuration tests (tests/unit/test_config_*.py)."""

from __future__ import annotations

import textwrap

import pytest

from monitor.config import Settings, parse_config
from monitor.errors import ConfigError

SECRET = "s3cr3t-Value-that-must-never-leak"
ENV = {"AUTH0_SECRET": SECRET, "HOME": "/home/kw"}


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml_text(text), env=ENV if env is None else env)
    return caught.value.problems


def load(text: str, env: dict[str, str] | None = None) -> Settings:
    return parse_config(yaml_text(text), env=ENV if env is None else env)
