"""monitor.config: the outgoing HTTP options (``proxy``, ``ca_file``: global, per tenant, per
destination) and how each tenant's and destination's route is resolved."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.daemon import secrets_of
from tests.support.config import load, problems_of
from tests.support.tls import make_pki

TENANT = "tenants: [{name: prod, domain: acme.eu.auth0.com, token: tok-abcdefgh}]\n"
HOOK = "destinations: [{name: hook, kind: webhook, url: 'https://hooks.example/x'}]\n"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ftp://proxy:3128", "must be http://host:port or https://host:port (or direct)"),
        ("http://proxy", "must name the proxy's port (http://host:port)"),
        ("http://proxy:3128/path", "must be a proxy address without a path, query or fragment"),
        ("http://proxy:99999", "not a valid URL (bad host or port)"),
        ("http://user:pw-s3cret@proxy:x", "not a valid URL (bad host or port)"),
    ],
)
def test_a_bad_proxy_is_named_without_echoing_it(value: str, problem: str) -> None:
    [line] = problems_of(f"proxy: '{value}'\n{TENANT}")
    assert line == f"proxy: {problem} (line 1)"
    assert "s3cret" not in line


def test_a_ca_file_must_exist_and_hold_pem_certificates(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    text = (
        f"ca_file: '{missing}'\n"
        "tenants: [{name: prod, domain: acme.eu.auth0.com, token: tok-abc,"
        f" ca_file: '{not_pem}'}}]\n"
    )
    assert problems_of(text) == [
        f"ca_file: no such file: {missing} (line 1)",
        f"tenants[0].ca_file: {not_pem}: not a PEM file of CA certificates (line 2)",
    ]


def test_routes_use_their_own_proxy_and_ca_file_else_the_global_ones(tmp_path: Path) -> None:
    ca_file = str(make_pki(tmp_path).ca_file)
    settings = load(
        "proxy: 'http://user:pw@proxy.internal:3128'\n"
        "tenants:\n"
        "  - {name: prod, domain: acme.eu.auth0.com, token: tok-abc}\n"
        "  - {name: lab, domain: lab.eu.auth0.com, token: tok-abc, proxy: 'http://lab:8080'}\n"
        "destinations:\n"
        "  - {name: hook, kind: webhook, url: 'https://hooks.example/x', proxy: direct,"
        f" ca_file: '{ca_file}'}}\n"
        "  - {name: chat, kind: slack, url: 'https://hooks.slack.com/services/x'}\n"
    )
    prod, lab = settings.tenants
    hook, chat = settings.destinations
    assert settings.route_of(prod) == ("http://user:pw@proxy.internal:3128", None)
    assert settings.route_of(lab) == ("http://lab:8080", None)
    assert settings.route_of(hook) == (None, ca_file)
    assert settings.route_of(chat) == ("http://user:pw@proxy.internal:3128", None)
    assert "pw" not in repr(settings)


def test_the_proxy_password_is_a_secret_for_the_logs() -> None:
    settings = load(f"proxy: 'http://user:pw-s3cret@proxy.internal:3128'\n{TENANT}{HOOK}")
    assert "pw-s3cret" in secrets_of(settings)


# --- the listener: web ------------------------------------------------------------------------

GOOD_HASH = "$2b$04$" + "a" * 53


def test_web_problems_are_named_without_echoing_hashes(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    text = (
        "web:\n"
        f"  tls_key_file: '{pki.key_file}'\n"
        "  basic_auth_users: {prometheus: '$2b$12$tooshort-s3cret', ok: '" + GOOD_HASH + "'}\n"
        "  auth_exempt: [/metrics]\n"
        f"{TENANT}"
    )
    lines = problems_of(text)
    assert lines == [
        "web.basic_auth_users.prometheus: not a bcrypt hash ($2b$<cost>$ and 53 characters; "
        "make one with htpasswd -nBC 12 USER, or python -c 'import bcrypt; "
        'print(bcrypt.hashpw(b"PASSWORD", bcrypt.gensalt()).decode())\') (line 3)',
        "web.auth_exempt[0]: only /healthz and /readyz may be exempt, got '/metrics' (line 4)",
    ]  # the TLS pair is checked once the fields are valid
    assert not any("s3cret" in line for line in lines)


@pytest.mark.parametrize(
    ("web", "problem"),
    [
        ("{tls_key_file: KEY}", "web.tls_cert_file: missing: tls_key_file is set"),
        ("{tls_cert_file: CERT}", "web.tls_key_file: missing: tls_cert_file is set"),
        (
            "{tls_cert_file: CA, tls_key_file: KEY}",
            "web.tls_cert_file: is not a PEM certificate whose private key is in tls_key_file",
        ),
        ("{tls_cert_file: MISSING, tls_key_file: KEY}", "web.tls_cert_file: no such file: MISSING"),
    ],
)
def test_tls_files_must_come_in_a_readable_matching_pair(
    tmp_path: Path, web: str, problem: str
) -> None:
    pki = make_pki(tmp_path)
    missing = str(tmp_path / "missing.pem")
    paths = {"KEY": pki.key_file, "CERT": pki.cert_file, "CA": pki.ca_file, "MISSING": missing}
    for name, path in paths.items():
        web = web.replace(name, f"'{path}'")
        problem = problem.replace(name, str(path))
    [line] = problems_of(f"web: {web}\n{TENANT}")
    assert line == f"{problem} (line 1)"


def test_a_valid_web_section(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    settings = load(
        f"web: {{tls_cert_file: '{pki.cert_file}', tls_key_file: '{pki.key_file}',"
        f" basic_auth_users: {{prometheus: '{GOOD_HASH}'}}, auth_exempt: [/healthz]}}\n{TENANT}"
    )
    assert settings.web.tls and settings.web.scheme == "https"
    assert settings.web.auth_exempt == ("/healthz",)
    assert GOOD_HASH not in repr(settings)
