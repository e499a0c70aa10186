"""Problems found in a configuration, as one line each: the key path, the message, the line.

Also what may be shown of a value: ``is_secret_key`` names the keys whose values never are, and
``yaml_spelling`` shows the others as YAML spells them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["KeyPath", "Problem", "is_secret_key", "render_path", "yaml_spelling"]

KeyPath = tuple[str | int, ...]

# Keys whose values are never echoed, wherever they appear (``destinations`` adds its own).
_SECRET_KEYS = frozenset({"client_secret", "token", "password", "proxy"})
_SECRET_DESTINATION_KEYS = frozenset({"secret", "secrets", "url", "urls", "routing_key"})


def is_secret_key(path: Sequence[str | int]) -> bool:
    """Whether the value at ``path`` (e.g. ``("tenants", 0, "token")``) must never be shown."""
    keys = [part for part in path if isinstance(part, str)]
    if not keys:
        return False
    if keys[-1] in _SECRET_KEYS or keys[:2] == ["web", "basic_auth_users"]:
        return True
    return keys[0] == "destinations" and keys[-1] in _SECRET_DESTINATION_KEYS


def yaml_spelling(value: object) -> str:
    """``value`` as the YAML that gave it: ``true``, ``null``, ``'text'``, ``5``, or what kind
    of collection it is (never a Python repr such as ``True`` or ``{'a': 1}``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Problem:
    """One thing wrong: ``tenants[1].domain: not a valid host name, got 'x' (line 14)``."""

    message: str
    path: KeyPath | None = None
    line: int | None = None
    column: int | None = None

    def render(self) -> str:
        text = self.message if self.path is None else f"{render_path(self.path)}: {self.message}"
        if self.line is None:
            return text
        if self.column is None:
            return f"{text} (line {self.line})"
        return f"{text} (line {self.line}, column {self.column})"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def render_path(path: KeyPath) -> str:
    rendered = ""
    for part in path:
        if isinstance(part, int):
            rendered += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            rendered += f".{part}" if rendered else part
        else:
            rendered += f"[{part!r}]"
    return rendered or "(top level)"
