"""monitor.config: destinations, one model per kind: what loads, and the exact problem lines."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from monitor.config import (
    AlertmanagerDestination,
    PagerDutyDestination,
    SlackDestination,
    WebhookDestination,
    parse_config,
)
from monitor.errors import ConfigError
from tests.support import REPO
from tests.support.config import ENV, SECRET, load, problems_of, yaml_text

# --- broken destinations: yaml -> the exact problem lines ----------------------------------

BROKEN: list[tuple[str, str, list[str]]] = [
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
            "tenant.no_next_key, tenant.current_key_restored, jwks.mismatch, jwks.consistent, "
            "mirror.stale, mirror.synced, key.expiring, key.previous_unrevoked, "
            "tenant.rotation_overdue, tenant.unreachable, tenant.recovered) (line 8)",
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
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [pytest.param(text, expected, id=name) for name, text, expected in BROKEN],
)
def test_broken_destinations_report_exact_problems(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


# --- valid destinations --------------------------------------------------------------------


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


# --- secrets -------------------------------------------------------------------------------


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
