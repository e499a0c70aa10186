"""monitor.config: a broken configuration gives every problem at once, each with its key
path and line (settings, tenants, YAML, interpolation; destinations are in
test_config_destinations.py)."""

from __future__ import annotations

import pytest

from monitor.config import parse_config
from monitor.errors import ConfigError
from tests.support.config import problems_of

# --- broken configurations: yaml -> the exact problem lines --------------------------------

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
        "retention too short, not a duration, and an unknown retention key",
        """
        retention:
          events: 12h
          deliveries: forever
          dead: 1d
        tenants:
          - {name: prod, domain: a.auth0.com, token: abc}
        """,
        [
            "retention.events: must be at least 1d, got 12h (line 2)",
            "retention.deliveries: not a duration: 'forever' (line 3)",
            "retention.dead: unknown key (line 4)",
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
