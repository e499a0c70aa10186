"""monitor.config: valid configurations load into typed, frozen Settings; durations and
fractions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.config import (
    Defaults,
    LeaseConfig,
    RetentionConfig,
    Settings,
    TenantConfig,
    parse_duration,
)
from tests.support.config import ENV, SECRET, load, problems_of

# --- valid configurations ------------------------------------------------------------------


FULL = """
listen: "[::1]:9100"
data_dir: /srv/keywatch
state: postgresql://kw:${PGPASSWORD}@db.internal:5432/keywatch
log_format: JSON
log_level: debug
defaults:
  interval: 30s
  jitter: 5%
  timeout: 2500ms
tenants:
  - name: prod
    domain: acme.eu.auth0.com
    client_id: abc
    client_secret: ${AUTH0_SECRET}
    kids: [hzBnXH4CvNN6FoGMxT2OV]
  - name: sim.local
    base_url: http://127.0.0.1:8765/tenant-1/
    token: tok-${AUTH0_SECRET}
    audience: https://custom.example/api/v2/
    interval: 1h30m
    jitter: 0
    timeout: 3
"""


def test_full_config_loads_into_typed_settings() -> None:
    settings = load(FULL, env={**ENV, "PGPASSWORD": "pg-pass-9"})
    assert (settings.listen_host, settings.listen_port) == ("::1", 9100)
    assert settings.data_dir == "/srv/keywatch"
    assert settings.state == "postgresql://kw:pg-pass-9@db.internal:5432/keywatch"
    assert settings.state_backend == "postgresql"
    assert settings.sqlite_path is None
    assert (settings.log_format, settings.log_level) == ("json", "debug")
    assert settings.defaults == Defaults(interval=30.0, jitter=0.05, timeout=2.5)
    prod, sim = settings.tenants
    assert prod.name == "prod"
    assert prod.client_id == "abc"
    assert prod.client_secret is not None
    assert prod.client_secret.get_secret_value() == SECRET
    assert prod.token is None
    assert prod.kids == ("hzBnXH4CvNN6FoGMxT2OV",)
    assert (prod.interval, prod.jitter, prod.timeout) == (30.0, 0.05, 2.5)
    assert sim.token is not None
    assert sim.token.get_secret_value() == f"tok-{SECRET}"
    assert sim.kids == ()
    assert (sim.interval, sim.jitter, sim.timeout) == (5400.0, 0.0, 3.0)


def test_urls_derive_from_domain() -> None:
    tenant = load(FULL, env={**ENV, "PGPASSWORD": "x"}).tenants[0]
    assert tenant.api_base == "https://acme.eu.auth0.com"
    assert tenant.token_url == "https://acme.eu.auth0.com/oauth/token"
    assert tenant.management_audience == "https://acme.eu.auth0.com/api/v2/"
    assert tenant.jwks_url == "https://acme.eu.auth0.com/.well-known/jwks.json"


def test_urls_derive_from_base_url_and_audience_overrides() -> None:
    tenant = load(FULL, env={**ENV, "PGPASSWORD": "x"}).tenants[1]
    assert tenant.base_url == "http://127.0.0.1:8765/tenant-1"
    assert tenant.api_base == "http://127.0.0.1:8765/tenant-1"
    assert tenant.token_url == "http://127.0.0.1:8765/tenant-1/oauth/token"
    assert tenant.management_audience == "https://custom.example/api/v2/"
    plain = TenantConfig(name="x", base_url="http://127.0.0.1:1/t/", token="t")
    assert plain.management_audience == "http://127.0.0.1:1/t/api/v2/"


def test_minimal_config_uses_builtin_defaults() -> None:
    settings = load(
        """
        tenants:
          - {name: prod, domain: acme.auth0.com, token: abc}
        """,
        env={"KEYWATCH_DATA_DIR": "/var/lib/kw"},
    )
    assert settings.listen == "0.0.0.0:9464"
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9464)
    assert settings.data_dir == "/var/lib/kw"
    assert settings.state == "sqlite:////var/lib/kw/state.db"
    assert settings.sqlite_path == "/var/lib/kw/state.db"
    assert (settings.log_format, settings.log_level) == ("text", "info")
    assert settings.defaults == Defaults()
    tenant = settings.tenants[0]
    assert (tenant.interval, tenant.jitter, tenant.timeout) == (60.0, 0.1, 10.0)


def test_lease_ttl_defaults_to_15s_and_takes_a_duration() -> None:
    tenants = "tenants:\n  - {name: prod, domain: acme.auth0.com, token: abc}\n"
    assert load(tenants).lease == LeaseConfig(ttl=15.0)
    assert load("lease:\n" + tenants).lease == LeaseConfig(ttl=15.0)
    assert load("lease: {ttl: 1m}\n" + tenants).lease.ttl == 60.0


def test_metrics_export_zero_counters_unless_told_not_to() -> None:
    tenants = "tenants:\n  - {name: prod, domain: acme.auth0.com, token: abc}\n"
    assert load(tenants).metrics.zero_counters is True
    assert load("metrics:\n" + tenants).metrics.zero_counters is True
    assert load("metrics: {zero_counters: false}\n" + tenants).metrics.zero_counters is False
    problems = problems_of("metrics: {per_key: false}\n" + tenants)
    assert len(problems) == 1 and "metrics.per_key" in problems[0], problems


def test_retention_defaults_to_90d_of_events_and_30d_of_deliveries() -> None:
    tenants = "tenants:\n  - {name: prod, domain: acme.auth0.com, token: abc}\n"
    assert load(tenants).retention == RetentionConfig(events=90 * 86400.0, deliveries=30 * 86400.0)
    assert load("retention:\n" + tenants).retention == RetentionConfig()
    settings = load("retention: {events: 365d, deliveries: 1d}\n" + tenants)
    assert settings.retention == RetentionConfig(events=365 * 86400.0, deliveries=86400.0)


def test_tenants_inherit_defaults_unless_they_set_their_own() -> None:
    settings = load(
        """
        defaults: {interval: 5m, jitter: 0.2, timeout: 30s}
        tenants:
          - {name: a, domain: a.auth0.com, token: abc}
          - {name: b, domain: b.auth0.com, token: abc, interval: 10s}
          - {name: c, domain: c.auth0.com, token: abc, jitter: 0%, timeout: 1s}
        """
    )
    resolved = [(t.name, t.interval, t.jitter, t.timeout) for t in settings.tenants]
    assert resolved == [("a", 300.0, 0.2, 30.0), ("b", 10.0, 0.2, 30.0), ("c", 300.0, 0.0, 1.0)]


def test_confirm_polls_default_to_2_and_a_tenant_may_override_them() -> None:
    settings = load(
        """
        defaults: {confirm: {polls: 3}}
        tenants:
          - {name: a, domain: a.auth0.com, token: abc}
          - {name: b, domain: b.auth0.com, token: abc, confirm: {polls: 1}}
          - {name: c, domain: c.auth0.com, token: abc, confirm: }
        """
    )
    assert [t.confirm.polls for t in settings.tenants] == [3, 1, 3]
    plain = load("tenants: [{name: a, domain: a.auth0.com, token: abc}]")
    assert (plain.defaults.confirm.polls, plain.tenants[0].confirm.polls) == (2, 2)


@pytest.mark.parametrize(
    ("confirm", "problem"),
    [
        ("{polls: 0}", "defaults.confirm.polls: Input should be greater than or equal to 1"),
        ("{polls: 11}", "defaults.confirm.polls: Input should be less than or equal to 10"),
        ("{polls: two}", "defaults.confirm.polls: Input should be a valid integer"),
        ("{polls: 1.5}", "defaults.confirm.polls: Input should be a valid integer"),
        ("{poll: 2}", "defaults.confirm.poll: unknown key"),
    ],
)
def test_confirm_polls_must_be_a_small_positive_integer(confirm: str, problem: str) -> None:
    text = (
        f"defaults: {{confirm: {confirm}}}\ntenants: [{{name: a, domain: a.auth0.com, token: x}}]"
    )
    assert problems_of(text) == [f"{problem} (line 1)"]


def test_hygiene_and_reachability_have_defaults_a_tenant_may_override() -> None:
    settings = load(
        """
        defaults: {expiry_warnings: [7d, 30d, 1h], rotation_overdue_after: 90d,
                   previous_unrevoked_after: 2d, unreachable_after: 5}
        tenants:
          - {name: a, domain: a.auth0.com, token: abc}
          - {name: b, domain: b.auth0.com, token: abc, expiry_warnings: [], unreachable_after: 1,
             rotation_overdue_after: off, previous_unrevoked_after: "off"}
          - {name: c, domain: c.auth0.com, token: abc, expiry_warnings: , rotation_overdue_after: }
        """
    )
    day = 86400.0
    resolved = [
        (
            t.expiry_warnings,
            t.previous_unrevoked_after,
            t.rotation_overdue_after,
            t.unreachable_after,
        )
        for t in settings.tenants
    ]
    inherited = ((30 * day, 7 * day, 3600.0), 2 * day, 90 * day, 5)
    assert resolved == [inherited, ((), None, None, 1), inherited]
    plain = load("tenants: [{name: a, domain: a.auth0.com, token: abc}]").tenants[0]
    assert (plain.expiry_warnings, plain.previous_unrevoked_after) == ((30 * day, 7 * day), None)
    assert (plain.rotation_overdue_after, plain.unreachable_after) == (None, 3)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            "expiry_warnings: 30d",
            "expiry_warnings: expected a list of durations (e.g. [30d, 7d]), got '30d'",
        ),
        ("expiry_warnings: [30d, soon]", "expiry_warnings: item 1: not a duration: 'soon'"),
        ("expiry_warnings: [7d, 168h]", "expiry_warnings: item 1: duplicate window '168h'"),
        ("expiry_warnings: [0s]", "expiry_warnings: item 0: must be a positive duration, got '0s'"),
        ("previous_unrevoked_after: never", "previous_unrevoked_after: not a duration: 'never'"),
        ("rotation_overdue_after: -1d", "rotation_overdue_after: not a duration: '-1d'"),
        ("unreachable_after: 0", "unreachable_after: Input should be greater than or equal to 1"),
        ("unreachable_after: 3x", "unreachable_after: Input should be a valid integer"),
    ],
)
def test_hygiene_and_reachability_values_are_checked(line: str, problem: str) -> None:
    text = f"tenants:\n  - name: a\n    domain: a.auth0.com\n    token: x\n    {line}\n"
    assert problems_of(text) == [f"tenants[0].{problem} (line 5)"]


def test_publication_recheck_defaults_to_5m_is_inherited_and_may_be_every_poll() -> None:
    settings = load(
        """
        defaults: {publication_recheck: 15m}
        tenants:
          - {name: a, domain: a.auth0.com, token: abc}
          - {name: b, domain: b.auth0.com, token: abc, publication_recheck: every_poll}
          - {name: c, domain: c.auth0.com, token: abc, publication_recheck: }
        """
    )
    assert [t.publication_recheck for t in settings.tenants] == [900.0, 0.0, 900.0]
    plain = load("tenants: [{name: a, domain: a.auth0.com, token: abc}]").tenants[0]
    assert plain.publication_recheck == 300.0


@pytest.mark.parametrize(
    ("value", "shown"), [("0", "0"), ("never", "'never'"), ("-5m", "'-5m'"), ("true", "true")]
)
def test_publication_recheck_is_a_duration_or_every_poll(value: str, shown: str) -> None:
    text = "tenants:\n  - name: a\n    domain: a.auth0.com\n    token: x\n"
    text += f"    publication_recheck: {value}\n"
    assert problems_of(text) == [
        "tenants[0].publication_recheck: expected a positive duration (e.g. 5m) or every_poll, "
        f"got {shown} (line 5)"
    ]


def test_empty_values_fall_back_to_defaults() -> None:
    settings = load(
        """
        defaults:
        tenants:
          - name: prod
            domain: acme.auth0.com
            token: abc
            kids:
            interval:
        """
    )
    assert settings.defaults == Defaults()
    assert settings.tenants[0].kids == ()
    assert settings.tenants[0].interval == 60.0


@pytest.mark.parametrize(
    ("env", "expected_dir"),
    [
        ({"KEYWATCH_DATA_DIR": "/a", "STATE_DIRECTORY": "/b", "HOME": "/h"}, "/a"),
        (
            {"STATE_DIRECTORY": "/var/lib/keywatch:/var/lib/other", "HOME": "/h"},
            "/var/lib/keywatch",
        ),
        ({"HOME": "/home/kw"}, "/home/kw/.local/state/keywatch"),
    ],
)
def test_data_dir_default_comes_from_the_environment(
    env: dict[str, str], expected_dir: str
) -> None:
    settings = load("tenants: [{name: a, domain: a.auth0.com, token: abc}]\n", env=env)
    assert settings.data_dir == expected_dir
    assert settings.state == f"sqlite:///{expected_dir}/state.db"


def test_explicit_data_dir_expands_home_and_feeds_the_state_default() -> None:
    settings = load(
        "data_dir: ~/kw\ntenants: [{name: a, domain: a.auth0.com, token: abc}]\n",
        env={"HOME": "/home/kw", "KEYWATCH_DATA_DIR": "/ignored"},
    )
    assert settings.data_dir == "/home/kw/kw"
    assert settings.state == "sqlite:////home/kw/kw/state.db"


@pytest.mark.parametrize(
    ("state", "backend", "sqlite_path"),
    [
        ("sqlite:////var/lib/keywatch/state.db", "sqlite", "/var/lib/keywatch/state.db"),
        ("sqlite:///relative/state.db", "sqlite", "relative/state.db"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        ("postgresql://kw@db/keywatch", "postgresql", None),
        ("postgres://kw@db:5433/keywatch?sslmode=require", "postgresql", None),
    ],
)
def test_state_urls_accepted(state: str, backend: str, sqlite_path: str | None) -> None:
    settings = load(f'state: "{state}"\ntenants: [{{name: a, domain: a.auth0.com, token: t}}]\n')
    assert settings.state == state
    assert settings.state_backend == backend
    assert settings.sqlite_path == sqlite_path


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:0", "127.0.0.1", 0), ("localhost:9464", "localhost", 9464), ("[::]:80", "::", 80)],
)
def test_listen_forms(listen: str, host: str, port: int) -> None:
    settings = load(f'listen: "{listen}"\ntenants: [{{name: a, domain: a.auth0.com, token: t}}]\n')
    assert (settings.listen_host, settings.listen_port) == (host, port)


def test_merge_keys_share_settings_and_keep_lines() -> None:
    text = """
    common: &common
      domain: acme.auth0.com
      interval: 5 minutes
    tenants:
      - <<: *common
        name: prod
        token: abc
    """
    # The anchor itself sits under an unknown key; the merged bad value keeps its own line.
    assert problems_of(text) == [
        "common: unknown key (line 1)",
        "tenants[0].interval: not a duration: '5 minutes' (line 3)",
    ]


def test_settings_are_frozen() -> None:
    settings = load("tenants: [{name: a, domain: a.auth0.com, token: abc}]\n")
    with pytest.raises(ValidationError):
        settings.listen = "0.0.0.0:1"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.tenants[0].name = "b"  # type: ignore[misc]
    assert isinstance(settings.tenants, tuple)


def test_settings_repr_hides_secrets_and_database_password() -> None:
    settings = load(FULL, env={**ENV, "PGPASSWORD": "pg-pass-9"})
    for text in (repr(settings), str(settings), repr(settings.tenants), str(settings.tenants[0])):
        assert SECRET not in text
        assert "pg-pass-9" not in text
    assert "postgresql://kw:***@db.internal:5432/keywatch" in repr(settings)


def test_models_can_be_built_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWATCH_DATA_DIR", "/tmp/kw-direct")
    tenant = TenantConfig(name="sim", base_url="http://127.0.0.1:1/tenant-1", token="t")
    assert (tenant.interval, tenant.jitter, tenant.timeout) == (60.0, 0.1, 10.0)
    settings = Settings(tenants=(tenant,))  # type: ignore[call-arg]
    assert settings.state == "sqlite:////tmp/kw-direct/state.db"
    with pytest.raises(ValidationError) as caught:
        Settings(tenants=(tenant, tenant))  # type: ignore[call-arg]
    assert "duplicate tenant name 'sim'" in str(caught.value)


SHARED = """
defaults: {confirm: {polls: 3}}
tenants:
  - {name: a, base_url: "http://127.0.0.1:1/a", client_id: app, client_secret: "${AUTH0_SECRET}"}
  - {name: b, base_url: "http://127.0.0.1:1/b", client_id: app, client_secret: "${AUTH0_SECRET}"}
  - {name: c, base_url: "http://127.0.0.1:1/c", client_id: other, client_secret: own, jitter: 0,
     kids: [k1]}
"""


def test_tenants_hold_equal_values_once_and_stay_equal_to_fresh_models() -> None:
    a, b, c = load(SHARED).tenants
    for name in ("client_id", "client_secret", "confirm", "expiry_warnings"):
        assert getattr(a, name) is getattr(b, name), name
    assert a.model_fields_set is b.model_fields_set
    assert a.confirm is c.confirm and a.confirm.polls == 3
    assert (c.client_id, c.client_secret.get_secret_value()) == ("other", "own")
    assert (c.jitter, a.jitter) == (0, 0.1)
    assert {"name", "base_url", "client_id", "client_secret"} <= a.model_fields_set
    assert "kids" in c.model_fields_set and "kids" not in a.model_fields_set
    for tenant in (a, b, c):
        assert tenant == TenantConfig.model_validate(tenant.model_dump())
        assert tenant.model_copy().model_fields_set == tenant.model_fields_set


# --- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("2d", 172800.0),
        (" 10s ", 10.0),
        (60, 60.0),
        (0.25, 0.25),
        ("60", 60.0),
        ("2.5", 2.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5 minutes", "not a duration: '5 minutes'"),
        ("5x", "not a duration: '5x'"),
        ("", "not a duration: ''"),
        ("s", "not a duration: 's'"),
        ("1h 30m", "not a duration: '1h 30m'"),
        (True, "not a duration: true"),
        (None, "not a duration: null"),
        ([1], "not a duration: a list"),
        (0, "must be a positive duration, got 0"),
        ("0s", "must be a positive duration, got '0s'"),
        (-1.5, "must be a positive duration, got -1.5"),
        (float("inf"), "must be a positive duration, got inf"),
        (float("nan"), "must be a positive duration, got nan"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


@given(
    hours=st.integers(0, 99),
    minutes=st.integers(0, 59),
    seconds=st.integers(0, 59),
    millis=st.integers(1, 999),
)
def test_parse_duration_adds_up_its_parts(
    hours: int, minutes: int, seconds: int, millis: int
) -> None:
    text = f"{hours}h{minutes}m{seconds}s{millis}ms"
    expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(("jitter", "fraction"), [("10%", 0.1), (0.1, 0.1), ("0.5", 0.5), (0, 0.0)])
def test_jitter_forms(jitter: object, fraction: float) -> None:
    assert Defaults(jitter=jitter).jitter == pytest.approx(fraction)  # type: ignore[arg-type]
