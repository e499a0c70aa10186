"""The pure publication checks and episodes: findings from a JWKS, events from findings."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from monitor.certificates import cert_facts
from monitor.errors import MalformedResponse
from monitor.model import EventType, KeyState, Severity, Snapshot, b64url
from monitor.publication import (
    Check,
    Finding,
    Target,
    TargetKind,
    Watch,
    check_certificate,
    check_jwks,
    check_mirror,
    judge,
    parse_jwks,
    pem_sha1,
)

T0 = datetime(2026, 5, 1, tzinfo=UTC)
JWKS = Target(TargetKind.JWKS, "https://acme.test/.well-known/jwks.json", "jwks")
MIRROR = Target(TargetKind.MIRROR, "https://gw.test/jwks", "https://gw.test/jwks")


def certificate(name: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return cert, key


CERTS = {kid: certificate(kid) for kid in ("A", "B", "C")}


def sha1(kid: str) -> str:
    return hashlib.sha1(CERTS[kid][0].public_bytes(Encoding.DER)).hexdigest().upper()


def key(kid: str, state: str) -> KeyState:
    """As ``parse_signing_key`` reads it from the Management API's PEM certificate."""
    facts = cert_facts(CERTS[kid][0].public_bytes(Encoding.PEM).decode())
    return KeyState(kid=kid, thumbprint=sha1(kid), fingerprint=sha1(kid), cert_sha1=sha1(kid),
                    key_type=facts.key_type, rsa_sha256=facts.rsa_sha256,
                    **{state: True})  # fmt: skip


SNAPSHOT = Snapshot("acme", T0, {"A": key("A", "revoked"), "B": key("B", "current"),
                                 "C": key("C", "next")})  # fmt: skip


def jwk(kid: str, *, cert_of: str | None = None, x5t: str | None = None) -> dict[str, object]:
    cert, private = CERTS[cert_of or kid]
    numbers = private.public_key().public_numbers()
    der = cert.public_bytes(Encoding.DER)
    return {
        "kid": kid,
        "kty": "RSA",
        "n": b64url(numbers.n.to_bytes(128, "big")),
        "e": b64url(numbers.e.to_bytes(3, "big")),
        "x5t": x5t or b64url(hashlib.sha1(der).digest()),
        "x5c": [base64.b64encode(der).decode()],
    }


def findings_of(*keys: dict[str, object], allow: tuple[str, ...] = ()) -> set[Finding]:
    return set(check_jwks(SNAPSHOT, parse_jwks({"keys": list(keys)}), allow_extra_kids=allow))


def test_a_faithful_jwks_has_no_finding() -> None:
    assert findings_of(jwk("B"), jwk("C")) == set()


def test_each_check_fires() -> None:
    assert findings_of(jwk("B")) == {Finding(Check.NEXT_MISSING, "C")}
    assert findings_of(jwk("C")) == {Finding(Check.CURRENT_MISSING, "B")}
    assert findings_of(jwk("A"), jwk("B"), jwk("C")) == {Finding(Check.REVOKED_PUBLISHED, "A")}
    assert findings_of(jwk("B", x5t="AAAA"), jwk("C")) == {Finding(Check.X5T_MISMATCH, "B")}
    wrong_cert = jwk("B", cert_of="C") | {
        "x5t": b64url(bytes.fromhex(sha1("B"))),
        "n": jwk("B")["n"],
    }
    assert findings_of(wrong_cert, jwk("C")) == {Finding(Check.X5C_MISMATCH, "B")}
    wrong_key = jwk("B") | {"n": jwk("C")["n"]}
    assert findings_of(wrong_key, jwk("C")) == {Finding(Check.KEY_MISMATCH, "B")}
    assert findings_of(jwk("X", cert_of="A"), jwk("B"), jwk("C")) == {
        Finding(Check.UNKNOWN_KID, "X")
    }
    assert findings_of(jwk("X", cert_of="A"), jwk("B"), jwk("C"), allow=("X",)) == set()


def test_n_e_are_compared_with_the_management_api_certificate_without_x5c() -> None:
    bare = {name: value for name, value in jwk("B").items() if name not in ("x5c", "x5t")}
    assert findings_of(bare, jwk("C")) == set()
    assert findings_of(bare | {"n": jwk("C")["n"]}, jwk("C")) == {Finding(Check.KEY_MISMATCH, "B")}
    assert findings_of(bare | {"e": "AQ"}, jwk("C")) == {Finding(Check.KEY_MISMATCH, "B")}
    assert findings_of(bare | {"n": "not base64!"}, jwk("C")) == {Finding(Check.KEY_MISMATCH, "B")}
    # n/e agreeing with x5c[0] is not enough: they must be the Management API certificate's
    other = jwk("B", cert_of="C") | {"x5t": b64url(bytes.fromhex(sha1("B")))}
    assert findings_of(other, jwk("C")) == {
        Finding(Check.X5C_MISMATCH, "B"),
        Finding(Check.KEY_MISMATCH, "B"),
    }


def test_n_e_of_a_key_stored_before_its_rsa_key_was_recorded_are_not_compared() -> None:
    stored = Snapshot(
        "acme", T0, {**SNAPSHOT.keys, "B": replace(SNAPSHOT.keys["B"], rsa_sha256=None)}
    )
    other_key = jwk("B") | {"n": jwk("C")["n"]}
    assert (
        check_jwks(stored, parse_jwks({"keys": [other_key, jwk("C")]}), allow_extra_kids=())
        == set()
    )


def test_n_e_published_for_a_certificate_that_is_not_rsa_are_a_mismatch() -> None:
    not_rsa = {**SNAPSHOT.keys, "B": replace(SNAPSHOT.keys["B"], key_type="EC", rsa_sha256=None)}
    found = check_jwks(Snapshot("acme", T0, not_rsa), parse_jwks({"keys": [jwk("B"), jwk("C")]}),
                       allow_extra_kids=())  # fmt: skip
    assert found == {Finding(Check.KEY_MISMATCH, "B")}


def test_legacy_x5t_of_the_hex_text_is_accepted() -> None:
    assert findings_of(jwk("B", x5t=b64url(sha1("B").encode())), jwk("C")) == set()


def test_mirrors_and_certificates() -> None:
    keys = parse_jwks({"keys": [jwk("A"), jwk("B")]})
    assert check_mirror(SNAPSHOT, keys) == {
        Finding(Check.NEXT_MISSING, "C"),
        Finding(Check.REVOKED_PUBLISHED, "A"),
    }
    assert check_certificate(SNAPSHOT, sha1("B")) == frozenset()
    assert check_certificate(SNAPSHOT, sha1("A")) == {Finding(Check.CERT_MISMATCH, "B")}
    pem = CERTS["B"][0].public_bytes(Encoding.PEM).decode().replace("\n", "\r\n")
    assert pem_sha1(pem) == sha1("B")


@pytest.mark.parametrize("body", [[], {"keys": {}}, {"keys": [{"kty": "RSA"}]}, {"keys": [1]}])
def test_a_body_that_is_not_a_jwks_is_malformed(body: object) -> None:
    with pytest.raises(MalformedResponse):
        parse_jwks(body)


def run(target: Target, answers: list[bool], polls: int = 2) -> list[tuple[int, EventType]]:
    """(fetch index, event type) for a sequence of fetches, True = disagreeing."""
    watch, events = Watch(), []
    bad = frozenset({Finding(Check.NEXT_MISSING, "C")})
    for index, disagrees in enumerate(answers):
        watch, found = judge(watch, bad if disagrees else frozenset(), tenant="acme",
                             target=target, anchor=T0, observed_at=T0 + timedelta(seconds=index),
                             polls=polls)  # fmt: skip
        events += [(index, event.type) for event in found]
    return events


def test_one_odd_answer_never_pages_and_an_episode_pages_once() -> None:
    assert run(JWKS, [False, True, False, True, False]) == []
    assert run(JWKS, [True, True, True, True, False, False]) == [
        (1, EventType.JWKS_MISMATCH),
        (4, EventType.JWKS_CONSISTENT),
    ]


def test_ids_are_deterministic_and_episodes_distinct() -> None:
    def ids() -> list[str]:
        watch, found_ids = Watch(), []
        for disagrees in (True, True, False, True, True):
            findings = frozenset({Finding(Check.NEXT_MISSING, "C")}) if disagrees else frozenset()
            watch, found = judge(watch, findings, tenant="acme", target=JWKS, anchor=T0,
                                 observed_at=T0, polls=2)  # fmt: skip
            found_ids += [event.id for event in found]
        return found_ids

    first = ids()
    assert first == ids()
    assert len(set(first)) == 3  # mismatch, consistent, a second mismatch


def test_a_mirror_turns_critical_once_it_lacks_the_current_key() -> None:
    watch = Watch()
    severities = []
    for findings in (
        {Finding(Check.NEXT_MISSING, "C")},
        {Finding(Check.NEXT_MISSING, "C")},
        {Finding(Check.CURRENT_MISSING, "B")},
        {Finding(Check.CURRENT_MISSING, "B")},
    ):
        watch, found = judge(watch, frozenset(findings), tenant="acme", target=MIRROR,
                             anchor=T0, observed_at=T0, polls=2)  # fmt: skip
        severities += [event.severity for event in found]
    assert severities == [Severity.WARNING, Severity.CRITICAL]


def test_mirror_lag_runs_from_the_change_it_follows() -> None:
    bad = frozenset({Finding(Check.NEXT_MISSING, "C")})
    watch, _ = judge(Watch(), frozenset(), tenant="acme", target=MIRROR, anchor=T0,
                     observed_at=T0)  # fmt: skip
    change = T0 + timedelta(seconds=60)
    watch, _ = judge(watch, bad, tenant="acme", target=MIRROR, anchor=change,
                     observed_at=change + timedelta(seconds=5), changed_at=change)  # fmt: skip
    assert watch.lag == 5
    watch, _ = judge(watch, frozenset(), tenant="acme", target=MIRROR, anchor=change,
                            observed_at=change + timedelta(seconds=42), polls=1)  # fmt: skip
    assert watch.lag == 42
    assert watch.in_sync is True


@given(st.lists(st.booleans(), max_size=40), st.integers(min_value=1, max_value=4))
def test_events_follow_episodes(answers: list[bool], polls: int) -> None:
    events = run(JWKS, answers, polls)
    kinds = [kind for _, kind in events]
    # openings and recoveries alternate, starting with an opening
    assert kinds == [
        EventType.JWKS_MISMATCH if i % 2 == 0 else EventType.JWKS_CONSISTENT
        for i in range(len(kinds))
    ]
    for index, kind in events:
        if kind is EventType.JWKS_MISMATCH:  # only after `polls` disagreeing fetches in a row
            assert all(answers[index - polls + 1 : index + 1])
            assert index - polls + 1 >= 0
        else:
            assert not answers[index]
    expected_openings = 0
    streak, open_ = 0, False
    for disagrees in answers:
        streak = streak + 1 if disagrees else 0
        if streak >= polls and not open_:
            expected_openings, open_ = expected_openings + 1, True
        if not disagrees:
            open_ = False
    assert kinds.count(EventType.JWKS_MISMATCH) == expected_openings
