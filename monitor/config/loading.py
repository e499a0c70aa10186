"""``load_config`` and ``parse_config``: YAML text -> ``Settings``, or every problem at once.

The reader (``reader.py``) gives plain values with their lines; pydantic validates them into the
models and its errors are mapped back to key paths and lines here; the cross-field checks
(``checks.py``) run over the same plain values. Everything is reported together as one
``ConfigError``, sorted by line. Values of secret keys are never echoed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import date

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from monitor.config.checks import CHECKED, document_problems
from monitor.config.destinations import unknown_key_message
from monitor.config.models import FIELD_ERROR, Settings
from monitor.config.problems import KeyPath, Problem, is_secret_key, yaml_spelling
from monitor.config.reader import UNRESOLVED, YamlReader, read_config_file, read_document
from monitor.config.values import DESTINATION_KINDS
from monitor.errors import ConfigError
from monitor.redact import Redactor

__all__ = ["load_config", "parse_config"]


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the YAML file at ``path``; ``env`` defaults to ``os.environ``.

    Reading stops at ``MAX_CONFIG_BYTES``: a larger file (or ``/dev/zero``) is refused."""
    return parse_config(read_config_file(path), source=os.fspath(path), env=env)


def parse_config(
    text: str, *, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Settings:
    """Validate YAML ``text``.

    Problem lines never name the file: callers prefix them with ``source`` (the file name, or
    ``<config>``), as the CLI does, so the same text reads the same wherever it came from.
    """
    del source  # part of the API for callers that keep it; see above
    environment = os.environ if env is None else env
    data, reader = read_document(text, environment)
    settings, problems = _validate(data, reader, environment)
    if problems or settings is None:
        # A last safety net: no secret value survives in a message.
        redact = Redactor(reader.secret_values)
        raise ConfigError([redact(problem.render()) for problem in problems])
    share_equal_values(settings.tenants)
    return settings


def share_equal_values(models: Iterable[BaseModel]) -> None:
    """Make frozen ``models`` hold each field value they have equal (by type and value) in
    one object, and each set of given field names in one set: every tenant carries its own copy
    of what it inherits from ``defaults`` (the ``confirm`` model, the warning tuple) and often the
    same credentials, about 1.5 KB a tenant. Values that cannot be hashed are left alone."""
    values: dict[tuple[type, object], object] = {}
    given: dict[frozenset[str], set[str]] = {}
    for model in models:
        fields = model.__dict__  # frozen: equal values are interchangeable
        for name, value in fields.items():
            try:
                kept = values.setdefault((type(value), value), value)
            except TypeError:  # unhashable
                continue
            if kept is not value:
                fields[name] = kept
        # pydantic's own set of the fields that were given; nothing mutates it once frozen
        names = model.__pydantic_fields_set__
        shared = given.setdefault(frozenset(names), names)
        if shared is not names:
            object.__setattr__(model, "__pydantic_fields_set__", shared)


def _validate(
    data: object, reader: YamlReader, env: Mapping[str, str]
) -> tuple[Settings | None, list[Problem]]:
    settings: Settings | None = None
    found: list[Problem] = []
    try:
        settings = Settings.model_validate(data, context={"env": env, CHECKED: True})
    except ValidationError as error:
        found = _validation_problems(error, reader)
    if isinstance(data, Mapping):
        found += [
            Problem(message, path, reader.line_of(path))
            for message, path in document_problems(data)
        ]
    unknown = [p.path for p in found if p.message == "unknown key" and p.path is not None]
    earlier = [p for p in reader.problems if not _is_under(p.path, unknown)]
    problems = sorted([*earlier, *found], key=_problem_order)
    return settings, problems


def _problem_order(problem: Problem) -> tuple[int, tuple[tuple[int, int, str], ...]]:
    """By line, then by path (``tenants[1]`` before ``tenants[1].name``)."""
    path = problem.path or ()
    return problem.line or 0, tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, part) for part in path
    )


def _is_under(path: KeyPath | None, ancestors: Iterable[KeyPath]) -> bool:
    return path is not None and any(path[: len(parent)] == parent for parent in ancestors)


# --- pydantic errors -> problem lines -----------------------------------------------------


def _type_name(value: object) -> str:
    names: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (Mapping, "a mapping"),
        ((list, tuple), "a list"),
        (type(None), "null"),
        (bytes, "binary data"),
        (date, "a date"),
    ]
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return f"a YAML {type(value).__name__}"


_EXPECTED = {
    "string_type": "a string",
    "float_type": "a number",
    "float_parsing": "a number",
    "tuple_type": "a list",
    "list_type": "a list",
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_KINDS_EXPECTED = (
    ", ".join(repr(kind) for kind in DESTINATION_KINDS[:-1]) + f" or {DESTINATION_KINDS[-1]!r}"
)


def _describe(error: ErrorDetails, path: KeyPath) -> str:
    kind, value, context = error["type"], error["input"], error.get("ctx", {})
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "value_error":
        return str(context["error"])
    if kind in _EXPECTED:
        hint = " (quote the value)" if isinstance(value, int | float) else ""
        return f"expected {_EXPECTED[kind]}, got {_type_name(value)}{hint}"
    if kind == "literal_error":
        shown = "" if is_secret_key(path) else f", got {yaml_spelling(value)}"
        return f"expected {context['expected']}{shown}"
    return error["msg"]


def _without_kind(loc: tuple[str | int, ...]) -> tuple[KeyPath, str | None]:
    """pydantic puts the kind into the location of an error inside a destination
    (``destinations.0.slack.url``): the path without it, and the kind."""
    if len(loc) >= 3 and loc[0] == "destinations" and loc[2] in DESTINATION_KINDS:
        return (*loc[:2], *loc[3:]), str(loc[2])
    return loc, None


def _problem_from_error(error: ErrorDetails, reader: YamlReader) -> Problem | None:
    """The problem pydantic's ``error`` is, or None when it is already reported (a value whose
    ``${VAR}`` could not be expanded)."""
    path, kind = _without_kind(tuple(error["loc"]))
    context, value = error.get("ctx", {}), error["input"]
    if value is UNRESOLVED and error["type"] != "extra_forbidden":
        return None
    if error["type"] == FIELD_ERROR:
        path = (*path, context["field"])
        return Problem(str(context["detail"]), path, reader.line_of(path))
    if error["type"] == "union_tag_not_found":
        path = (*path, "kind")
        return Problem("missing", path, reader.line_of(path))
    if error["type"] == "union_tag_invalid":
        return _kind_problem(value, (*path, "kind"), reader)
    message = _describe(error, path)
    if error["type"] == "extra_forbidden" and kind is not None:
        message = unknown_key_message(kind, str(path[-1])) or message
    return Problem(message, path, reader.line_of(path))


def _kind_problem(destination: object, path: KeyPath, reader: YamlReader) -> Problem | None:
    given = destination.get("kind") if isinstance(destination, Mapping) else None
    if given is UNRESOLVED:
        return None
    message = f"expected {_KINDS_EXPECTED}, got {yaml_spelling(given)}"
    return Problem(message, path, reader.line_of(path))


def _validation_problems(error: ValidationError, reader: YamlReader) -> list[Problem]:
    found = (_problem_from_error(details, reader) for details in error.errors(include_url=False))
    return [problem for problem in found if problem is not None]
