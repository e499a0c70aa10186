"""monitor.config.compose: the lean node tree, from libyaml's events or PyYAML's own parser,
reads the same and refuses the same, with the same lines and messages."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml

from monitor.config import compose as composing
from monitor.config.compose import MAX_YAML_DEPTH, Mapping, Scalar, compose
from monitor.config.problems import KeyPath
from monitor.config.reader import read_document
from monitor.errors import ConfigError

PARSERS = [
    pytest.param(composing._python_events, id="pure-python"),
    pytest.param(
        composing._libyaml_events,
        id="libyaml",
        marks=pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml"),
    ),
]

DOCUMENT = """\
defaults: &defaults
  interval: 60s
  jitter: 0.1
  enabled: yes
  none: ~
  when: 2025-03-01
tenants:
  - <<: *defaults
    name: "a"
    port: 0x1F
  - {<<: [*defaults], name: 'b', tags: [x, y, !!str 3]}
  - &third
    name: >-
      folded
      text
  - *third
"""


@pytest.fixture(params=PARSERS)
def parser(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., object]:
    monkeypatch.setattr(composing, "_FAST_EVENTS", request.param)
    return request.param  # type: ignore[no-any-return]


def read(text: str) -> tuple[object, dict[KeyPath, int], dict[KeyPath, int], list[str]]:
    data, reader = read_document(text, {})
    return data, reader.key_lines, reader.node_lines, [p.render() for p in reader.problems]


def test_both_parsers_read_the_same_values_and_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    read_by = []
    for events in (composing._python_events, composing._libyaml_events):
        monkeypatch.setattr(composing, "_FAST_EVENTS", events)
        read_by.append(read(DOCUMENT))
    assert read_by[0] == read_by[1]
    data, key_lines, _, problems = read_by[0]
    assert problems == []
    assert isinstance(data, dict)
    assert data["tenants"][0] == {
        "interval": "60s",
        "jitter": 0.1,
        "enabled": True,
        "none": None,
        "when": data["defaults"]["when"],
        "name": "a",
        "port": 31,
    }
    assert data["tenants"][1]["tags"] == ["x", "y", "3"]
    assert data["tenants"][2] == data["tenants"][3] == {"name": "folded text"}
    assert key_lines[("tenants", 1, "name")] == 11
    assert key_lines[("tenants", 3)] == 12  # an alias is its anchor's node, on its line


def test_nodes_are_lean(parser: object) -> None:
    root, nodes = compose("a: &x [1, 2]\nb: *x\n")
    assert isinstance(root, Mapping) and nodes == 6  # the mapping, 2 keys, the list, 2 items
    assert not hasattr(root, "__dict__")
    (_, listed), (_, aliased) = root.value
    assert listed is aliased  # an alias reuses the anchored node
    assert all(isinstance(item, Scalar) and item.line == 1 for item in listed.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: *nowhere\n", "YAML syntax error: found undefined alias 'nowhere' (line 1, column 4)"),
        (
            "a: &x 1\nb: &x 2\n",
            "YAML syntax error: found duplicate anchor 'x'; first occurrence, second occurrence "
            "(line 2, column 4)",
        ),
        ("[" * 60, f"the YAML is nested deeper than {MAX_YAML_DEPTH} levels (line 1, column 51)"),
        (
            "a: [1\n",
            "YAML syntax error: expected ',' or ']', but got '<stream end>' while parsing a flow "
            "sequence that starts here (line 1, column 4)",
        ),
        (
            "a: 1\n---\nb: 2\n",
            "YAML syntax error: expected a single document in the stream, "
            "but found another document (line 2, column 1)",
        ),
        ("a: \x07\n", "control character U+0007 is not allowed in YAML (line 1, column 4)"),
    ],
)
def test_both_parsers_refuse_the_same_with_the_same_words(
    parser: object, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        compose(text)
    assert caught.value.problems == [message]


def test_recursion_and_depth_through_aliases_are_problems_not_crashes(parser: object) -> None:
    _, _, _, problems = read("a: &x [*x]\n")
    assert problems == ["a[0]: recursive YAML alias (line 1)"]
    nested = "".join(f"l{n}: &l{n} [*l{n - 1}]\n" for n in range(1, MAX_YAML_DEPTH + 2))
    _, _, _, problems = read("l0: &l0 [x]\n" + nested)
    assert any("nested deeper than 50 levels (through aliases)" in p for p in problems)
