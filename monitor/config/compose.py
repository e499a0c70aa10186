"""YAML text -> a lean node tree: each node its tag, value and line, nothing more.

PyYAML's own nodes carry two ``Mark`` objects and a ``__dict__`` each, about 500 bytes a
scalar: a 2 MiB configuration of 10,000 tenants composed into some 90 MB and took 3 s of CPU
in the pure-Python parser. Here the events come from libyaml when PyYAML was built with it (the
pure-Python parser otherwise) and each node is a slotted object of three or four fields.

The limits are checked while composing, before anything is recursed into: nesting deeper
than ``MAX_YAML_DEPTH`` is refused, and the nodes are counted (aliases reuse theirs) as the
base of the alias expansion budget. Messages are PyYAML's own: every character is checked by
PyYAML's reader first, and a syntax error found by libyaml is reported as the pure-Python
parser reports it (its wording differs).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any, Protocol, cast

import yaml
from yaml.composer import ComposerError
from yaml.events import (
    AliasEvent,
    Event,
    MappingEndEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from monitor.config.problems import Problem
from monitor.errors import ConfigError

__all__ = ["MAX_YAML_DEPTH", "Mapping", "Node", "Scalar", "Sequence", "compose"]

MAX_YAML_DEPTH = 50
"""Levels of nested lists and mappings; deeper is refused (and never recursed into)."""


class Scalar:
    __slots__ = ("line", "style", "tag", "value")

    def __init__(self, tag: str, value: str, line: int, style: str | None) -> None:
        self.tag, self.value, self.line, self.style = tag, value, line, style


class Sequence:
    __slots__ = ("line", "tag", "value")

    def __init__(self, tag: str, line: int) -> None:
        self.tag, self.line = tag, line
        self.value: list[Node] = []


class Mapping:
    __slots__ = ("line", "tag", "value")

    def __init__(self, tag: str, line: int) -> None:
        self.tag, self.line = tag, line
        self.value: list[tuple[Node, Node]] = []


Node = Scalar | Sequence | Mapping


class _Events(Protocol):
    def check_event(self, *choices: type[Event]) -> bool: ...

    def peek_event(self) -> Any: ...

    def get_event(self) -> Any: ...

    def dispose(self) -> None: ...


class _LimitExceeded(yaml.MarkedYAMLError):
    """The document is nested too deeply: refused before it is recursed into."""


def _python_events(text: str) -> _Events:
    return yaml.SafeLoader(text)


def _libyaml_events(text: str) -> _Events:
    return cast(_Events, yaml.CSafeLoader(text))


_FAST_EVENTS: Callable[[str], _Events] = (
    _libyaml_events if yaml.__with_libyaml__ else _python_events
)


def _line(event: Any) -> int:
    return int(event.start_mark.line) + 1


class _Composer:
    """PyYAML's ``Composer``, building lean nodes, bounded in depth, counting its nodes."""

    def __init__(self, events: _Events) -> None:
        self._events = events
        self._resolver = Resolver()
        self._anchors: dict[str, Node] = {}
        self._depth = 0
        self.nodes = 0

    def single_document(self) -> Node | None:
        events = self._events
        events.get_event()  # stream start
        root = None
        if not events.check_event(StreamEndEvent):
            events.get_event()  # document start
            root = self._node()
            events.get_event()  # document end
        if not events.check_event(StreamEndEvent):
            event = events.get_event()
            raise ComposerError(
                "expected a single document in the stream",
                None,
                "but found another document",
                event.start_mark,
            )
        return root

    def _node(self) -> Node:
        events = self._events
        self._depth += 1
        try:
            event = events.peek_event()
            mark = event.start_mark
            if self._depth > MAX_YAML_DEPTH:
                problem = f"nested deeper than {MAX_YAML_DEPTH} levels"
                raise _LimitExceeded(problem=problem, problem_mark=mark)
            if isinstance(event, AliasEvent):
                events.get_event()
                if event.anchor not in self._anchors:
                    raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
                return self._anchors[event.anchor]
            self.nodes += 1
            if event.anchor is not None and event.anchor in self._anchors:
                raise ComposerError(
                    f"found duplicate anchor {event.anchor!r}; first occurrence",
                    None,
                    "second occurrence",
                    mark,
                )
            node = self._compose(event)
            if event.anchor is not None:
                self._anchors[event.anchor] = node
            return node
        finally:
            self._depth -= 1

    def _compose(self, event: Any) -> Node:
        events = self._events
        if isinstance(event, ScalarEvent):
            events.get_event()
            tag = self._tag(event, ScalarNode, event.value)
            return Scalar(tag, event.value, _line(event), event.style)
        events.get_event()
        if isinstance(event, SequenceStartEvent):
            sequence = Sequence(self._tag(event, SequenceNode, None), _line(event))
            self._register(event, sequence)
            while not events.check_event(SequenceEndEvent):
                sequence.value.append(self._node())
            events.get_event()
            return sequence
        mapping = Mapping(self._tag(event, MappingNode, None), _line(event))
        self._register(event, mapping)
        while not events.check_event(MappingEndEvent):
            key = self._node()
            mapping.value.append((key, self._node()))
        events.get_event()
        return mapping

    def _register(self, event: Any, node: Node) -> None:
        """A collection is known by its anchor while its content is composed (PyYAML's
        composer does the same: an alias inside it is a recursive one)."""
        if event.anchor is not None:
            self._anchors[event.anchor] = node

    def _tag(self, event: Any, kind: type, value: str | None) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._resolver.resolve(kind, value, event.implicit)  # type: ignore[no-untyped-call]
        return str(tag)


def compose(text: str) -> tuple[Node | None, int]:
    """The document's node tree and how many nodes it has (aliases not counted); every
    problem with the text itself is a ``ConfigError`` with its line and column."""
    try:
        yaml.reader.Reader(text)  # checks every character
    except yaml.reader.ReaderError as error:
        raise ConfigError(_character_error(text, error)) from None
    try:
        return _compose_with(_FAST_EVENTS, text)
    except ConfigError:
        if _FAST_EVENTS is _python_events:
            raise
    return _compose_with(_python_events, text)  # the error again, in PyYAML's words


def _compose_with(events_of: Callable[[str], _Events], text: str) -> tuple[Node | None, int]:
    events = events_of(text)
    composer = _Composer(events)
    try:
        return composer.single_document(), composer.nodes
    except _LimitExceeded as error:
        raise ConfigError(_marked(f"the YAML is {error.problem}", error.problem_mark)) from None
    except yaml.MarkedYAMLError as error:
        raise ConfigError(_syntax_error(error)) from None
    except yaml.YAMLError:
        raise ConfigError("YAML syntax error") from None
    finally:
        events.dispose()


def _marked(message: str, mark: yaml.Mark | None) -> str:
    if mark is None:
        return Problem(message).render()
    return Problem(message, line=int(mark.line) + 1, column=int(mark.column) + 1).render()


def _syntax_error(error: yaml.MarkedYAMLError) -> str:
    """The error at the line where the broken construct starts when the stream ended inside
    it (an unclosed quote or bracket), else where the parser stopped."""
    context, problem = error.context, error.problem or "invalid"
    at_end = "end of stream" in problem or "<stream end>" in problem
    if context and error.context_mark is not None and at_end:
        message = f"YAML syntax error: {problem} {context} that starts here"
        return _marked(message, error.context_mark)
    described = ", ".join(part for part in (context, problem) if part)
    return _marked(f"YAML syntax error: {described}", error.problem_mark or error.context_mark)


def _character_error(text: str, error: yaml.reader.ReaderError) -> str:
    """A character YAML does not allow (a NUL byte, say), named with its line and column."""
    before = text[: error.position]
    line, column = before.count("\n") + 1, error.position - (before.rfind("\n") + 1) + 1
    character = chr(error.character) if isinstance(error.character, int) else error.character
    kind = "control character" if unicodedata.category(character) == "Cc" else "character"
    message = f"{kind} U+{ord(character):04X} is not allowed in YAML"
    return Problem(message, line=line, column=column).render()
