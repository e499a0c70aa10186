"""monitor.config: reading files, ${VAR} interpolation, secrets never echoed, the shipped
examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import (
    Defaults,
    is_secret_key,
    load_config,
    parse_config,
)
from monitor.errors import ConfigError
from tests.support import REPO
from tests.support.config import ENV, SECRET, load, yaml_text

# --- interpolation -------------------------------------------------------------------------


def tenant_with(value: str) -> str:
    tenant = "  - name: a\n    domain: a.auth0.com\n    token: abc\n"
    return f"tenants:\n{tenant}    audience: {value}\n"


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ('"${AUD}"', {"AUD": "https://x/api/v2/"}, "https://x/api/v2/"),
        ('"https://${HOST}/api/v2/"', {"HOST": "h.example"}, "https://h.example/api/v2/"),
        ('"${HOST:-d.example}/${P:-x}"', {}, "d.example/x"),
        ('"${HOST:-d.example}"', {"HOST": ""}, "d.example"),
        ('"${HOST:-d.example}"', {"HOST": "set"}, "set"),
        ('"a${EMPTY}b"', {"EMPTY": ""}, "ab"),
        ('"$${HOST} costs $5"', {"HOST": "no"}, "${HOST} costs $5"),
        ('"${A}${B}"', {"A": "1", "B": "2"}, "12"),
        ('"${A:-x:-y}"', {}, "x:-y"),
    ],
)
def test_interpolation(value: str, env: dict[str, str], expected: str) -> None:
    assert load(tenant_with(value), env=env).tenants[0].audience == expected


def test_interpolated_values_cannot_inject_yaml() -> None:
    injected = "x\nlisten: 0.0.0.0:1\ntoken: other"
    settings = load(tenant_with('"${AUD}"'), env={"AUD": injected})
    assert settings.tenants[0].audience == injected
    assert settings.listen == "0.0.0.0:9464"


def test_interpolated_numbers_and_durations_are_parsed() -> None:
    settings = load(
        """
        listen: 127.0.0.1:${PORT:-9000}
        defaults: {interval: "${INTERVAL}", jitter: "${JITTER:-0}", timeout: "${TIMEOUT:-1m}"}
        tenants: [{name: a, domain: a.auth0.com, token: abc}]
        """,
        env={"INTERVAL": "45"},
    )
    assert settings.listen_port == 9000
    assert settings.defaults == Defaults(interval=45.0, jitter=0.0, timeout=60.0)


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KW_TEST_TOKEN", "from-os-environ")
    settings = parse_config("tenants: [{name: a, domain: a.auth0.com, token: '${KW_TEST_TOKEN}'}]")
    token = settings.tenants[0].token
    assert token is not None
    assert token.get_secret_value() == "from-os-environ"


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "secret"),
    [
        (("tenants", 0, "client_secret"), True),
        (("tenants", 3, "token"), True),
        (("destinations", 0, "url"), True),
        (("destinations", 1, "secret"), True),
        (("destinations", 1, "secrets", 0), True),
        (("destinations", 2, "urls", 1), True),
        (("destinations", 3, "routing_key"), True),
        (("destinations", 3, "template"), False),
        (("destinations", 3, "name"), False),
        (("tenants", 0, "client_id"), False),
        (("tenants", 0, "base_url"), False),
        (("listen",), False),
        ((), False),
    ],
)
def test_is_secret_key(path: tuple[str | int, ...], secret: bool) -> None:
    assert is_secret_key(path) is secret


def test_secrets_are_not_echoed_in_errors() -> None:
    text = """
    tenants:
      - name: a
        domain: a.auth0.com
        client_id: abc
        client_secret: ${AUTH0_SECRET}
        token: ${AUTH0_SECRET}
      - name: b
        domain: b.auth0.com
        clinet_secret: ${AUTH0_SECRET}
        token: ["${AUTH0_SECRET}"]
      - name: c
        domain: https://${AUTH0_SECRET}
        token: ${AUTH0_SECRET}
        token: ${AUTH0_SECRET}
    """
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml_text(text), env=ENV)
    error = caught.value
    assert len(error.problems) == 5
    everything = "\n".join([str(error), repr(error), *error.problems])
    assert SECRET not in everything
    # The secret doubled as a domain is caught by the last safety net, not echoed.
    assert (
        "tenants[2].domain: must be a host name without a scheme (use base_url for a full URL), "
        "got 'https://***' (line 12)"
    ) in error.problems
    assert error.__cause__ is None
    assert error.__context__ is None


def test_yaml_syntax_errors_do_not_quote_the_line() -> None:
    text = f'tenants:\n  - name: a\n    token: "{SECRET}\n    domain: a.auth0.com\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    error = caught.value
    assert error.problems == [
        "YAML syntax error: found unexpected end of stream "
        "while scanning a quoted scalar that starts here (line 3, column 12)"
    ]
    assert SECRET not in str(error)
    assert error.__cause__ is None
    assert error.__suppress_context__  # the YAML error quotes the line: never chain it


# --- files and examples --------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keywatch.yaml"
    path.write_text("tenants: [{name: a, domain: a.auth0.com, token: abc}]\n", encoding="utf-8")
    assert load_config(path, env={}).tenants[0].name == "a"
    assert load_config(str(path), env={}).tenants[0].name == "a"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.yaml", "file not found"),
        (lambda d: d, "cannot read: Is a directory"),
    ],
)
def test_load_config_unreadable(tmp_path: Path, make: object, problem: str) -> None:
    assert callable(make)
    with pytest.raises(ConfigError) as caught:
        load_config(make(tmp_path), env={})
    assert caught.value.problems == [problem]


def test_load_config_rejects_binary(tmp_path: Path) -> None:
    path = tmp_path / "keywatch.yaml"
    path.write_bytes(b"tenants: \xff\xfe\x00\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == ["not a UTF-8 text file"]


def test_example_config_loads_with_its_secrets_in_the_environment() -> None:
    env = {
        "AUTH0_PROD_CLIENT_ID": "prod-client",
        "AUTH0_PROD_CLIENT_SECRET": "prod-secret",
        "AUTH0_STAGING_MGMT_TOKEN": "staging-token",
        "HOME": "/home/kw",
    }
    settings = load_config(REPO / "config" / "example.yaml", env=env)
    prod, staging = settings.tenants
    assert prod.api_base == "https://acme.eu.auth0.com"
    assert prod.client_id == "prod-client"
    assert (prod.interval, prod.jitter, prod.timeout) == (60.0, 0.1, 10.0)
    assert staging.token is not None
    assert staging.token.get_secret_value() == "staging-token"
    assert len(staging.kids) == 2
    assert staging.interval == 300.0


def test_example_config_names_the_missing_secrets() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "config" / "example.yaml", env={})
    assert [problem.split(" (line")[0] for problem in caught.value.problems] == [
        "tenants[0].client_id: environment variable AUTH0_PROD_CLIENT_ID is not set",
        "tenants[0].client_secret: environment variable AUTH0_PROD_CLIENT_SECRET is not set",
        "tenants[1].token: environment variable AUTH0_STAGING_MGMT_TOKEN is not set",
    ]


def test_demo_config_targets_the_simulator() -> None:
    settings = load_config(REPO / "monitor" / "demo.yaml", env={})
    (demo,) = settings.tenants
    assert demo.name == "demo"
    assert demo.token_url == "http://127.0.0.1:8765/tenant-1/oauth/token"
    assert demo.management_audience == "http://127.0.0.1:8765/tenant-1/api/v2/"
    assert demo.client_id == "keywatch-demo"
    assert demo.client_secret is not None
    assert demo.client_secret.get_secret_value() == "keywatch-demo-secret"
    assert (demo.interval, demo.jitter) == (2.0, 0.0)
    assert settings.listen == "127.0.0.1:9464"
    assert settings.state == "sqlite:///./.keywatch-demo/state.db"


def test_demo_config_follows_the_environment() -> None:
    env = {
        "KEYWATCH_SIM_PORT": "18001",
        "KEYWATCH_LISTEN_PORT": "18002",
        "KEYWATCH_DEMO_STATE": "/tmp/demo/state.db",
        "KEYWATCH_DEMO_SECRET": "other-secret",
    }
    settings = load_config(REPO / "monitor" / "demo.yaml", env=env)
    assert settings.tenants[0].api_base == "http://127.0.0.1:18001/tenant-1"
    assert settings.listen_port == 18002
    assert settings.sqlite_path == "/tmp/demo/state.db"
