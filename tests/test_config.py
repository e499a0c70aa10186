"""monitor.config: YAML -> Settings, with every problem reported by key path and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.config import (
    AlertmanagerDestination,
    Defaults,
    LeaseConfig,
    PagerDutyDestination,
    Settings,
    SlackDestination,
    TenantConfig,
    WebhookDestination,
    is_secret_key,
    load_config,
    parse_config,
    parse_duration,
)
from monitor.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
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


# --- broken configurations: yaml -> the exact problem lines -------------------------------

BROKEN: list[tuple[str, str, list[str]]] = [
    (
        "unknown key, and the key it was meant to be is missing",
        """
        tenants:
          - name: prod
            domain: acme.eu.auth0.com
            client_id: abc
            client_secret: ${AUTH0_SECRET}
          - name: stage
            domain: stage.eu.auth0.com
            clinet_id: abc
            client_secret: ${AUTH0_SECRET}
        """,
        [
            "tenants[1].client_id: missing (line 6)",
            "tenants[1].clinet_id: unknown key (line 8)",
        ],
    ),
    (
        "client_id without client_secret",
        """
        listen: 127.0.0.1:9464
        tenants:
          - name: prod
            domain: acme.eu.auth0.com
            client_id: abc
        """,
        ["tenants[0].client_secret: missing (line 3)"],
    ),
    (
        "client_secret without client_id",
        """
        tenants:
          - name: prod
            domain: acme.eu.auth0.com
            client_secret: ${AUTH0_SECRET}
        """,
        ["tenants[0].client_id: missing (line 2)"],
    ),
    (
        "environment variable not set",
        """
        tenants:
          - name: prod
            domain: acme.eu.auth0.com
            client_id: abc
            client_secret: ${AUTH0_OTHER_SECRET}
        """,
        ["tenants[0].client_secret: environment variable AUTH0_OTHER_SECRET is not set (line 5)"],
    ),
    (
        "not a duration",
        """
        defaults:
          jitter: 10%
          interval: 5 minutes
        tenants:
          - {name: prod, domain: acme.eu.auth0.com, token: abc}
        """,
        ["defaults.interval: not a duration: '5 minutes' (line 3)"],
    ),
    (
        "zero and negative durations",
        """
        defaults:
          timeout: 0s
        tenants:
          - {name: prod, domain: acme.eu.auth0.com, token: abc, interval: -5}
        """,
        [
            "defaults.timeout: must be a positive duration, got '0s' (line 2)",
            "tenants[0].interval: must be a positive duration, got -5 (line 4)",
        ],
    ),
    (
        "jitter out of range and not a number",
        """
        defaults:
          jitter: 60%
        tenants:
          - {name: prod, domain: acme.eu.auth0.com, token: abc, jitter: lots}
        """,
        [
            "defaults.jitter: must be between 0 and 0.5 (0% to 50%), got '60%' (line 2)",
            "tenants[0].jitter: not a fraction or percentage: 'lots' (line 4)",
        ],
    ),
    (
        "duplicate tenant names",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
          - {name: other, domain: b.auth0.com, token: abc}
          - {name: prod, domain: c.auth0.com, token: abc}
        """,
        ["tenants[2].name: duplicate tenant name 'prod', already used by tenants[0] (line 4)"],
    ),
    (
        "duplicate YAML key",
        """
        listen: 127.0.0.1:9000
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        listen: 127.0.0.1:9001
        """,
        ["listen: duplicate key, first defined on line 1 (line 4)"],
    ),
    (
        "duplicate key inside a tenant",
        """
        tenants:
          - name: prod
            domain: a.auth0.com
            token: abc
            domain: b.auth0.com
        """,
        ["tenants[0].domain: duplicate key, first defined on line 3 (line 5)"],
    ),
    (
        "both domain and base_url",
        """
        tenants:
          - name: prod
            domain: a.auth0.com
            base_url: https://auth.example.com
            token: abc
        """,
        ["tenants[0]: domain and base_url are both set (set exactly one) (line 2)"],
    ),
    (
        "neither domain nor base_url",
        """
        tenants:
          - name: prod
            token: abc
        """,
        ["tenants[0]: missing domain or base_url (set exactly one) (line 2)"],
    ),
    (
        "both ways to authenticate",
        """
        tenants:
          - name: prod
            domain: a.auth0.com
            client_id: abc
            client_secret: ${AUTH0_SECRET}
            token: ${AUTH0_SECRET}
        """,
        ["tenants[0]: client credentials and token are both set (set exactly one) (line 2)"],
    ),
    (
        "no way to authenticate",
        """
        tenants:
          - name: prod
            domain: a.auth0.com
        """,
        ["tenants[0]: missing credentials (set client_id and client_secret, or token) (line 2)"],
    ),
    (
        "domain with a scheme, domain with a path",
        """
        tenants:
          - {name: a, domain: "https://a.auth0.com", token: abc}
          - {name: b, domain: b.auth0.com/api, token: abc}
        """,
        [
            "tenants[0].domain: must be a host name without a scheme (use base_url for a full "
            "URL), got 'https://a.auth0.com' (line 2)",
            "tenants[1].domain: must be a host name without a path (use base_url), "
            "got 'b.auth0.com/api' (line 3)",
        ],
    ),
    (
        "bad base_url",
        """
        tenants:
          - {name: a, base_url: "ftp://a.example", token: abc}
          - {name: b, base_url: "https://user:pw@b.example", token: abc}
          - {name: c, base_url: "https://c.example/x?q=1", token: abc}
        """,
        [
            "tenants[0].base_url: must be an http:// or https:// URL with a host (line 2)",
            "tenants[1].base_url: must not contain credentials (use client_secret or token) "
            "(line 3)",
            "tenants[2].base_url: must not contain a query or fragment (line 4)",
        ],
    ),
    (
        "bad listen",
        """
        listen: "9464"
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        """,
        ["listen: expected host:port (e.g. 0.0.0.0:9464 or [::1]:9464), got '9464' (line 1)"],
    ),
    (
        "lease ttl too short, and an unknown lease key",
        """
        lease:
          ttl: 500ms
          renew: 1s
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        """,
        [
            "lease.ttl: must be at least 1s, got 0.5s (line 2)",
            "lease.renew: unknown key (line 3)",
        ],
    ),
    (
        "listen port out of range, and a number instead of a string",
        """
        listen: 0.0.0.0:70000
        log_format: 1
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        """,
        [
            "listen: port must be between 0 and 65535, got '0.0.0.0:70000' (line 1)",
            "log_format: expected 'text' or 'json', got 1 (line 2)",
        ],
    ),
    (
        "unsupported state URL (the value is not echoed: it may hold a password)",
        """
        state: mysql://kw:pw@db/keywatch
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        """,
        [
            "state: unsupported scheme 'mysql': expected sqlite:///PATH, sqlite:///:memory: "
            "or postgresql://... (line 1)"
        ],
    ),
    (
        "sqlite URL without a path",
        """
        state: "sqlite://"
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        """,
        [
            "state: sqlite URL without a path: expected sqlite:///PATH, sqlite:///:memory: "
            "or postgresql://... (line 1)"
        ],
    ),
    ("empty file", "", ["the configuration is empty (at least tenants is required)"]),
    (
        "only comments",
        "# nothing yet\n",
        ["the configuration is empty (at least tenants is required)"],
    ),
    (
        "YAML syntax error",
        """
        tenants:
          - name: prod
            domain: [a.auth0.com
        """,
        [
            "YAML syntax error: expected ',' or ']', but got '<stream end>' "
            "while parsing a flow sequence that starts here (line 3, column 13)"
        ],
    ),
    (
        "two YAML documents",
        """
        tenants: []
        ---
        tenants: []
        """,
        [
            "YAML syntax error: expected a single document in the stream, "
            "but found another document (line 2, column 1)"
        ],
    ),
    (
        "top level is a list",
        """
        - name: prod
        """,
        ["the top level must be a mapping of keys, got a list (line 1)"],
    ),
    ("no tenants key", "listen: 127.0.0.1:9464\n", ["tenants: missing (line 1)"]),
    ("empty tenant list", "tenants: []\n", ["tenants: at least one tenant is required (line 1)"]),
    (
        "wrong types",
        """
        defaults: [60s]
        tenants:
          - name: prod
            domain: a.auth0.com
            token: abc
            kids: hzBnXH4CvNN6FoGMxT2OV
          - just-a-name
        """,
        [
            "defaults: expected a mapping, got a list (line 1)",
            "tenants[0].kids: expected a list, got a string (line 6)",
            "tenants[1]: expected a mapping, got a string (line 7)",
        ],
    ),
    (
        "numbers where strings are expected, and an empty or repeated kid",
        """
        tenants:
          - name: 42
            domain: a.auth0.com
            token: abc
            kids: [7, ""]
          - name: b
            domain: b.auth0.com
            token: abc
            kids: [k1, k1]
        """,
        [
            "tenants[0].name: expected a string, got an integer (quote the value) (line 2)",
            "tenants[0].kids[0]: expected a string, got an integer (quote the value) (line 5)",
            "tenants[0].kids[1]: must not be empty (line 5)",
            "tenants[1].kids: duplicate kid 'k1' (line 9)",
        ],
    ),
    (
        "bad tenant name and log level",
        """
        log_level: verbose
        tenants:
          - {name: "acme prod", domain: a.auth0.com, token: abc}
        """,
        [
            "log_level: expected 'debug', 'info', 'warning' or 'error', got 'verbose' (line 1)",
            "tenants[0].name: must be letters, digits, '_', '.' or '-' (it is the metrics label), "
            "got 'acme prod' (line 3)",
        ],
    ),
    (
        "destination of an unknown kind, and one without its url",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - {name: ops, kind: email, url: "https://mail.example/hook"}
          - name: chat
            kind: slack
            events: [key.revoked]
        """,
        [
            "destinations[0].kind: expected 'slack', 'teams', 'discord', 'googlechat', 'webhook', "
            "'alertmanager' or 'pagerduty', got 'email' (line 4)",
            "destinations[1].url: missing (line 5)",
        ],
    ),
    (
        "destination URL: plain http to a public host, no host, a fragment",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - {name: a, kind: webhook, url: "http://audit.example/hook"}
          - {name: b, kind: discord, url: "https:///api/webhooks/1/x"}
          - {name: c, kind: googlechat, url: "https://chat.googleapis.com/v1/x#frag"}
          - {name: d, kind: webhook, url: "http://127.0.0.1:8080/hook"}
          - {name: e, kind: webhook, url: "http://[::1]:8080/hook"}
          - {name: f, kind: alertmanager, urls: ["http://am.internal:9093"]}
        """,
        [
            "destinations[0].url: must be https:// (http:// is allowed only for 127.0.0.1, ::1 "
            "and localhost) (line 4)",
            "destinations[1].url: must be an https:// URL with a host (line 5)",
            "destinations[2].url: must not contain a fragment (#...) (line 6)",
        ],
    ),
    (
        "retired Office 365 connector URL for teams",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - name: teams
            kind: teams
            url: "https://acme.webhook.office.com/webhookb2/0000/IncomingWebhook/1111/2222"
        """,
        [
            "destinations[0].url: retired Office 365 connector URL; create a Workflows webhook "
            "(line 6)"
        ],
    ),
    (
        "bad Standard Webhooks secrets (never echoed)",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - name: audit
            kind: webhook
            url: https://audit.example/hook
            secrets:
              - "c2VjcmV0LXdpdGhvdXQtcHJlZml4LTAxMjM0NTY3"
              - "whsec_not base64!"
              - "whsec_c2hvcnQ="
        """,
        [
            "destinations[0].secrets[0]: must start with whsec_ (whsec_ + base64 of 24 to 64 "
            "random bytes) (line 8)",
            "destinations[0].secrets[1]: the part after whsec_ is not valid base64 (line 9)",
            "destinations[0].secrets[2]: must decode to 24 to 64 bytes, got 5 (line 10)",
        ],
    ),
    (
        "pagerduty without a routing key, alertmanager with url instead of urls",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - {name: pd, kind: pagerduty}
          - {name: am, kind: alertmanager, url: "http://am:9093"}
          - {name: am2, kind: alertmanager}
        """,
        [
            "destinations[0].routing_key: missing (line 4)",
            "destinations[1].url: alertmanager takes urls (a list of base URLs), not url (line 5)",
            "destinations[2].urls: missing (line 6)",
        ],
    ),
    (
        "options of another kind",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - name: chat
            kind: slack
            url: https://hooks.slack.com/services/T/B/x
            cloudevents: true
            routing_key: abc
            resolve_after: 1h
        """,
        [
            "destinations[0].cloudevents: only for kind webhook (line 7)",
            "destinations[0].routing_key: only for kind pagerduty (line 8)",
            "destinations[0].resolve_after: only for kind alertmanager (line 9)",
        ],
    ),
    (
        "unknown event types and tenants",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
          - {name: staging, domain: b.auth0.com, token: abc}
        destinations:
          - name: chat
            kind: slack
            url: https://hooks.slack.com/services/T/B/x
            events: [key.rotated, key.revokd, cert.expired]
            tenants: [prod, production]
        """,
        [
            "destinations[0].events[1]: unknown event type 'key.revokd' "
            "(did you mean 'key.revoked'?) (line 8)",
            "destinations[0].events[2]: unknown event type 'cert.expired' (expected one of "
            "key.rotated, key.revoked, key.added, key.removed, key.state_changed, "
            "key.certificate_changed, key.thumbprint_mismatch, tenant.no_current_key, "
            "tenant.no_next_key, tenant.current_key_restored) (line 8)",
            "destinations[0].tenants[1]: unknown tenant 'production' "
            "(tenants are: prod, staging) (line 9)",
        ],
    ),
    (
        "duplicate destination names, a bad name, events together with min_severity",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - {name: ops, kind: slack, url: "https://hooks.slack.com/services/T/B/x"}
          - {name: "ops chat", kind: slack, url: "https://hooks.slack.com/services/T/B/y"}
          - {name: ops, kind: discord, url: "https://discord.com/api/webhooks/1/x"}
          - name: loud
            kind: slack
            url: https://hooks.slack.com/services/T/B/z
            events: [key.revoked]
            min_severity: info
        """,
        [
            "destinations[1].name: must be letters, digits, '_', '.' or '-' (it is the metrics "
            "label), got 'ops chat' (line 5)",
            "destinations[2].name: duplicate destination name 'ops', already used by "
            "destinations[0] (line 6)",
            "destinations[3].min_severity: set either events or min_severity, not both "
            "(an event type has one severity) (line 11)",
        ],
    ),
    (
        "bad templates: syntax, unknown variable, sandbox escape",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - name: a
            kind: slack
            url: https://hooks.slack.com/services/T/B/x
            template: |
              Key {{ event.kid }} on {{ event.tenant }}
              {% if event.severity == "critical" %}page someone{% endfi %}
          - name: b
            kind: teams
            url: https://prod-1.westus.logic.azure.com/workflows/x
            template: "{{ event.tennant }}"
          - name: c
            kind: discord
            url: https://discord.com/api/webhooks/1/x
            template: "{{ event.__class__.__init__.__globals__ }}"
        """,
        [
            "destinations[0].template: template line 2: syntax error: Encountered unknown tag "
            "'endfi'. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. "
            "The innermost block that needs to be closed is 'if'. (line 7)",
            "destinations[1].template: template line 1: unknown variable event.tennant (line 13)",
            "destinations[2].template: template line 1: refused by the sandbox: event.__class__ "
            "(line 17)",
        ],
    ),
    (
        "wrong types and values in a destination",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - name: ops
            kind: slack
            url: https://hooks.slack.com/services/T/B/x
            min_severity: loud
            rate_limit: -1
            max_age: forever
            timeout: 0
            events: key.revoked
            colour: red
          - just-a-name
        """,
        [
            "destinations[0].min_severity: expected 'info', 'warning' or 'critical', "
            "got 'loud' (line 7)",
            "destinations[0].rate_limit: must be a positive number of messages per second, "
            "got -1.0 (line 8)",
            "destinations[0].max_age: not a duration: 'forever' (line 9)",
            "destinations[0].timeout: must be a positive duration, got 0 (line 10)",
            "destinations[0].events: expected a list, got a string (line 11)",
            "destinations[0].colour: unknown key (line 12)",
            "destinations[1]: expected a mapping, got a string (line 13)",
        ],
    ),
    (
        "an unset variable in a destination URL is reported, its name only",
        """
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        destinations:
          - {name: ops, kind: slack, url: "${SLACK_WEBHOOK_URL}"}
        """,
        ["destinations[0].url: environment variable SLACK_WEBHOOK_URL is not set (line 4)"],
    ),
    (
        "bad ${...} references",
        """
        tenants:
          - name: prod
            domain: "${AUTH0 DOMAIN}"
            token: "${AUTH0_TOKEN"
        """,
        [
            "tenants[0].domain: invalid ${...} reference (expected ${NAME} or ${NAME:-default}) "
            "(line 3)",
            "tenants[0].token: unterminated ${ (write $${ for a literal ${) (line 4)",
        ],
    ),
    (
        "empty secret from an empty default",
        """
        tenants:
          - name: prod
            domain: a.auth0.com
            token: ${AUTH0_TOKEN:-}
        """,
        ["tenants[0].token: must not be empty (line 4)"],
    ),
    (
        "a tenant merged from another is reported at its own line",
        """
        tenants:
          - &base
            name: a
            domain: a.auth0.com
            token: abc
          - <<: *base
            name: b
            client_id: x
        """,
        ["tenants[1]: client credentials and token are both set (set exactly one) (line 6)"],
    ),
    (
        "a merge key that does not merge a mapping",
        """
        tenants:
          - <<: 3
            name: prod
            domain: a.auth0.com
            token: abc
        """,
        ["tenants[0]: << must merge a mapping or a list of mappings (line 2)"],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=name) for name, text, expected in BROKEN],
)
def test_broken_config_reports_exact_problems(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    problems = problems_of(
        """
        listen: nope
        defaults:
          interval: 5 minutes
        tenants:
          - name: prod
            domain: https://acme.eu.auth0.com
            client_id: abc
            client_secret: ${MISSING}
          - name: prod
            token: abc
        colour: blue
        """
    )
    assert problems == [
        "listen: expected host:port (e.g. 0.0.0.0:9464 or [::1]:9464), got 'nope' (line 1)",
        "defaults.interval: not a duration: '5 minutes' (line 3)",
        "tenants[0].domain: must be a host name without a scheme (use base_url for a full URL), "
        "got 'https://acme.eu.auth0.com' (line 6)",
        "tenants[0].client_secret: environment variable MISSING is not set (line 8)",
        "tenants[1]: missing domain or base_url (set exactly one) (line 9)",
        "tenants[1].name: duplicate tenant name 'prod', already used by tenants[0] (line 9)",
        "colour: unknown key (line 11)",
    ]


def test_config_error_message_joins_the_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("tenants: []\nlisten: x\n", env={})
    assert str(caught.value) == (
        "tenants: at least one tenant is required (line 1); "
        "listen: expected host:port (e.g. 0.0.0.0:9464 or [::1]:9464), got 'x' (line 2)"
    )


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


def test_models_can_be_built_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWATCH_DATA_DIR", "/tmp/kw-direct")
    tenant = TenantConfig(name="sim", base_url="http://127.0.0.1:1/tenant-1", token="t")
    assert (tenant.interval, tenant.jitter, tenant.timeout) == (60.0, 0.1, 10.0)
    settings = Settings(tenants=(tenant,))  # type: ignore[call-arg]
    assert settings.state == "sqlite:////tmp/kw-direct/state.db"
    with pytest.raises(ValidationError) as caught:
        Settings(tenants=(tenant, tenant))  # type: ignore[call-arg]
    assert "duplicate tenant name 'sim'" in str(caught.value)


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


def test_settings_repr_hides_secrets_and_database_password() -> None:
    settings = load(FULL, env={**ENV, "PGPASSWORD": "pg-pass-9"})
    for text in (repr(settings), str(settings), repr(settings.tenants), str(settings.tenants[0])):
        assert SECRET not in text
        assert "pg-pass-9" not in text
    assert "postgresql://kw:***@db.internal:5432/keywatch" in repr(settings)


def test_destination_secrets_are_not_echoed_in_errors() -> None:
    text = """
    tenants:
      - {name: a, domain: a.auth0.com, token: abc}
    destinations:
      - {name: d1, kind: webhook, url: "http://public.example/${AUTH0_SECRET}"}
      - {name: d2, kind: webhook, url: "https://x.example", secrets: ["whsec_${AUTH0_SECRET}"]}
      - {name: d3, kind: pagerduty, routing_key: ["${AUTH0_SECRET}"]}
      - {name: d4, kind: alertmanager, urls: ["http://am/?k=${AUTH0_SECRET}"]}
      - {name: d5, kind: slack, url: "https://${AUTH0_SECRET}", secrets: ["${AUTH0_SECRET}"]}
      - {name: d6, kind: teams, url: "https://x.webhook.office.com/${AUTH0_SECRET}"}
    """
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml_text(text), env=ENV)
    error = caught.value
    # d5's secrets is refused as another kind's option: its value is never read.
    assert error.problems == [
        "destinations[0].url: must be https:// (http:// is allowed only for 127.0.0.1, ::1 and "
        "localhost) (line 4)",
        "destinations[1].secrets[0]: the part after whsec_ is not valid base64 (line 5)",
        "destinations[2].routing_key: expected a string, got a list (line 6)",
        "destinations[3].urls[0]: must be a base URL without a query (keywatch adds "
        "/api/v2/alerts) (line 7)",
        "destinations[4].secrets: only for kind webhook (line 8)",
        "destinations[5].url: retired Office 365 connector URL; create a Workflows webhook "
        "(line 9)",
    ]
    assert SECRET not in "\n".join([str(error), repr(error), *error.problems])


DESTINATIONS = """
tenants:
  - {name: prod, domain: a.auth0.com, token: abc}
  - {name: staging, domain: b.auth0.com, token: abc}
destinations:
  - {name: ops, kind: slack, url: "${SLACK_URL}"}
  - name: audit
    kind: webhook
    url: http://localhost:8080/hook
    secrets: ["${HOOK_SECRET}"]
    cloudevents: true
    events: [key.revoked, key.rotated]
    tenants: [staging]
    rate_limit: 0.5
    max_age: 3d
    timeout: 2s
    template: "{{ event.summary }}"
  - {name: am, kind: alertmanager, urls: ["http://am-0:9093/", "https://am-1/prefix"],
     resolve_after: 2h, min_severity: CRITICAL}
  - {name: pd, kind: pagerduty, routing_key: "${PD_KEY}"}
"""
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_destinations_load_into_typed_configs() -> None:
    env = {"SLACK_URL": "https://hooks.slack.com/services/T/B/x", "HOOK_SECRET": HOOK_SECRET}
    settings = load(DESTINATIONS, env={**env, "PD_KEY": "pd-routing-key"})
    ops, audit, am, pd = settings.destinations
    assert isinstance(ops, SlackDestination) and isinstance(audit, WebhookDestination)
    assert isinstance(am, AlertmanagerDestination) and isinstance(pd, PagerDutyDestination)
    assert (ops.kind, ops.target_url, ops.events, ops.tenants) == (
        "slack",
        "https://hooks.slack.com/services/T/B/x",
        (),
        (),
    )
    assert (ops.min_severity, ops.rate_limit, ops.max_age, ops.timeout) == (
        "warning",
        None,
        7 * 86400.0,
        10.0,
    )
    assert ops.template is None and "secrets" not in SlackDestination.model_fields
    assert audit.target_url == "http://localhost:8080/hook"
    assert [secret.get_secret_value() for secret in audit.secrets] == [HOOK_SECRET]
    assert audit.cloudevents is True
    assert audit.events == ("key.revoked", "key.rotated")
    assert audit.tenants == ("staging",)
    assert (audit.rate_limit, audit.max_age, audit.timeout) == (0.5, 259200.0, 2.0)
    assert audit.template == "{{ event.summary }}"
    assert "url" not in AlertmanagerDestination.model_fields and am.target_url == ""
    assert [url.get_secret_value() for url in am.urls] == [
        "http://am-0:9093",
        "https://am-1/prefix",
    ]
    assert (am.resolve_after, am.min_severity) == (7200.0, "critical")
    assert pd.target_url == "https://events.pagerduty.com/v2/enqueue"
    assert pd.routing_key is not None and pd.routing_key.get_secret_value() == "pd-routing-key"
    for text in (repr(settings), str(settings.destinations)):
        assert "hooks.slack.com" not in text and HOOK_SECRET not in text
        assert "pd-routing-key" not in text and "am-0" not in text


def test_no_destinations_is_an_empty_tuple() -> None:
    settings = load("tenants: [{name: a, domain: a.auth0.com, token: t}]\ndestinations:\n")
    assert settings.destinations == ()


def test_destinations_can_be_built_directly() -> None:
    from monitor.config import TeamsDestination, WebhookDestination

    config = WebhookDestination(name="x", kind="webhook", url="https://x.example/h")  # type: ignore[arg-type]
    assert config.target_url == "https://x.example/h"
    with pytest.raises(ValidationError) as caught:
        TeamsDestination(name="x", kind="teams", url="https://webhook.office.com/x")  # type: ignore[arg-type]
    assert "retired Office 365 connector URL" in str(caught.value)
    assert "webhook.office.com/x" not in str(caught.value)


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


def test_example_destinations_load_when_uncommented() -> None:
    lines = (REPO / "config" / "example.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# destinations:")
    block = [line.removeprefix("# ").removeprefix("#") for line in lines[start:]]
    text = "tenants: [{name: prod, domain: a.auth0.com, token: abc}]\n" + "\n".join(block)
    env = {
        name: "https://hooks.example/secret-path"
        for name in (
            "SLACK_WEBHOOK_URL",
            "TEAMS_WORKFLOW_URL",
            "DISCORD_WEBHOOK_URL",
            "GOOGLE_CHAT_WEBHOOK_URL",
        )
    }
    env |= {"WEBHOOK_SECRET": HOOK_SECRET, "PAGERDUTY_ROUTING_KEY": "pd-key"}
    settings = parse_config(text, env=env)
    assert [d.kind for d in settings.destinations] == [
        "slack",
        "teams",
        "discord",
        "googlechat",
        "webhook",
        "alertmanager",
        "pagerduty",
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
