"""YAML text -> plain values, with the line of every key and every problem found on the way.

1. ``compose`` builds a lean node tree (``monitor.config.compose``: syntax errors stop here,
   with their line; nesting deeper than ``MAX_YAML_DEPTH`` is refused before it is recursed
   into).
2. ``YamlReader`` turns nodes into plain values, remembering each path's line, rejecting
   duplicate keys, and expanding ``${VAR}`` / ``${VAR:-default}`` inside each string scalar
   (after parsing, so a variable's value can never inject YAML). Aliases are expanded here,
   within a budget, so an alias bomb is refused rather than exploded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode

from monitor.config.compose import MAX_YAML_DEPTH, Mapping, Node, Scalar, Sequence, compose
from monitor.config.problems import KeyPath, Problem, is_secret_key
from monitor.errors import ConfigError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MIN_ALIAS_BUDGET",
    "UNRESOLVED",
    "YamlReader",
    "read_config_file",
    "read_document",
]

MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""Enough for 10,000 tenants with their own credentials (about 200 bytes each) and more."""
MIN_ALIAS_BUDGET = 10_000
"""Values aliases may add beyond the document's own (or as many as it has, if more)."""


class _Unresolved:
    """Stands in for a value whose interpolation failed (already reported)."""

    def __repr__(self) -> str:
        return "<unresolved>"


UNRESOLVED = _Unresolved()
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_REFERENCE_START = re.compile(r"\$\$\{|\$\{")
_REFERENCE_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)


class _InterpolationError(Exception):
    pass


def _interpolate(text: str, env: AnyMapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` (default when unset or empty); ``$${`` is a
    literal ``${``. Raises ``_InterpolationError`` naming the variable, never the text."""
    pieces: list[str] = []
    position = 0
    for start in _REFERENCE_START.finditer(text):
        if start.start() < position:
            continue
        pieces.append(text[position : start.start()])
        if start.group() == "$${":
            pieces.append("${")
            position = start.end()
            continue
        end = text.find("}", start.end())
        if end < 0:
            raise _InterpolationError("unterminated ${ (write $${ for a literal ${)")
        pieces.append(_resolve_reference(text[start.end() : end], env))
        position = end + 1
    pieces.append(text[position:])
    return "".join(pieces)


def _resolve_reference(body: str, env: AnyMapping[str, str]) -> str:
    reference = _REFERENCE_BODY.fullmatch(body)
    if reference is None:
        raise _InterpolationError("invalid ${...} reference (expected ${NAME} or ${NAME:-default})")
    name, default = reference.groups()
    value = env.get(name)
    if default is not None:
        return value if value else default
    if value is None:
        raise _InterpolationError(f"environment variable {name} is not set")
    return value


@dataclass
class YamlReader:
    """Turns a composed node tree into plain values, recording lines and problems.

    Aliases are expanded here, so here is where an alias bomb would explode: reading stops
    (``over_budget``) after ``node_budget`` nodes, and nesting (aliases and merges included)
    deeper than ``MAX_YAML_DEPTH`` is not followed."""

    env: AnyMapping[str, str]
    node_budget: int = MIN_ALIAS_BUDGET
    over_budget: bool = False
    key_lines: dict[KeyPath, int] = field(default_factory=dict)
    node_lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    secret_values: set[str] = field(default_factory=set)
    _constructor: SafeConstructor = field(default_factory=SafeConstructor)
    _open_nodes: set[int] = field(default_factory=set)
    _nodes_read: int = 0

    def read(self, node: Node, path: KeyPath) -> object:
        self._nodes_read += 1
        if self._nodes_read > self.node_budget:
            self.over_budget = True
        if self.over_budget:
            return UNRESOLVED
        self.node_lines[path] = node.line
        if isinstance(node, Scalar):
            return self._read_scalar(node, path)
        if id(node) in self._open_nodes:
            self.problems.append(Problem("recursive YAML alias", path, node.line))
            return UNRESOLVED
        if len(self._open_nodes) >= MAX_YAML_DEPTH:
            message = f"nested deeper than {MAX_YAML_DEPTH} levels (through aliases)"
            self.problems.append(Problem(message, path, node.line))
            return UNRESOLVED
        self._open_nodes.add(id(node))
        try:
            if isinstance(node, Mapping):
                return self._read_mapping(node, path)
            assert isinstance(node, Sequence)
            return self._read_sequence(node, path)
        finally:
            self._open_nodes.discard(id(node))

    def _read_sequence(self, node: Sequence, path: KeyPath) -> list[object]:
        items: list[object] = []
        for index, item in enumerate(node.value):
            self.key_lines[(*path, index)] = item.line
            items.append(self.read(item, (*path, index)))
        return items

    def _read_mapping(self, node: Mapping, path: KeyPath) -> dict[str, object]:
        mapping: dict[str, object] = {}
        explicit = [(key, value) for key, value in node.value if key.tag != _MERGE_TAG]
        for merge_key, merged in node.value:
            if merge_key.tag == _MERGE_TAG:
                mapping.update(self._read_merge(merged, path))
        self.node_lines[path] = node.line  # reading a merged mapping moved it to the anchor
        first_lines: dict[str, int] = {}
        for key_node, value_node in explicit:
            if not isinstance(key_node, Scalar):
                self.problems.append(Problem("keys must be plain strings", path, key_node.line))
                continue
            key, line = key_node.value, key_node.line
            if key in first_lines:
                message = f"duplicate key, first defined on line {first_lines[key]}"
                self.problems.append(Problem(message, (*path, key), line))
            first_lines.setdefault(key, line)
            self.key_lines[(*path, key)] = line
            mapping[key] = self.read(value_node, (*path, key))
        return mapping

    def _read_merge(self, node: Node, path: KeyPath) -> dict[str, object]:
        """``<<: *anchor`` or ``<<: [*a, *b]``; earlier mappings win, explicit keys win over all."""
        sources = node.value if isinstance(node, Sequence) else [node]
        merged: dict[str, object] = {}
        for source in reversed(sources):
            if not isinstance(source, Mapping):
                message = "<< must merge a mapping or a list of mappings"
                self.problems.append(Problem(message, path, node.line))
                continue
            read = self.read(source, path)
            if isinstance(read, dict):
                merged.update(read)
        return merged

    def _read_scalar(self, node: Scalar, path: KeyPath) -> object:
        constructor = self._constructor
        try:
            value = constructor.construct_object(ScalarNode(node.tag, node.value, style=node.style))
        except (yaml.YAMLError, ValueError):
            message = f"unsupported YAML value (tag {node.tag})"
            self.problems.append(Problem(message, path, node.line))
            return UNRESOLVED
        finally:
            constructor.constructed_objects.clear()  # keyed by the node, made for this call
        if not isinstance(value, str):
            return value
        try:
            value = _interpolate(value, self.env)
        except _InterpolationError as error:
            self.problems.append(Problem(str(error), path, node.line))
            return UNRESOLVED
        if is_secret_key(path) and value:
            self.secret_values.add(value)
        return value

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``'s key, else of the nearest ancestor the YAML has."""
        for length in range(len(path), -1, -1):
            prefix = path[:length]
            line = self.key_lines.get(prefix) or self.node_lines.get(prefix)
            if line is not None:
                return line
        return None


def read_config_file(path: str | os.PathLike[str]) -> str:
    """The text of the file at ``path``; reading stops at ``MAX_CONFIG_BYTES``: a larger file
    (or ``/dev/zero``) is refused."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found") from None
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror or type(error).__name__}") from None
    if len(data) > MAX_CONFIG_BYTES:
        limit = MAX_CONFIG_BYTES // 1024 // 1024
        raise ConfigError(f"larger than {limit} MiB: not a configuration file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file") from None


def read_document(text: str, env: AnyMapping[str, str]) -> tuple[object, YamlReader]:
    """The document's plain values and the reader that holds their lines and the problems
    found so far; ``ConfigError`` when there is no mapping to read at all."""
    root, nodes = compose(text)
    if root is None or (isinstance(root, Scalar) and root.tag == _NULL_TAG):
        raise ConfigError("the configuration is empty (at least tenants is required)")
    if not isinstance(root, Mapping):
        kind = "a list" if isinstance(root, Sequence) else "a single value"
        message = f"the top level must be a mapping of keys, got {kind}"
        raise ConfigError(Problem(message, line=root.line).render())
    reader = YamlReader(env, node_budget=nodes + max(MIN_ALIAS_BUDGET, nodes))
    data = reader.read(root, ())
    if reader.over_budget:
        raise ConfigError(
            f"YAML aliases expand to more than {reader.node_budget} values "
            "(an alias bomb?): refused"
        )
    return data, reader
