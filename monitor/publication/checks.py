"""What is published, read into values and compared with the Management API's snapshot.

``parse_jwks`` reads a JWKS document (raising ``MalformedResponse`` for one that is not a
JWKS), ``check_jwks`` / ``check_mirror`` / ``check_certificate`` compare what is published with
the tenant's confirmed ``Snapshot`` and return ``Finding``s: one (check, kid) pair per thing
that is wrong, none when the publication agrees. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from monitor.errors import MalformedResponse
from monitor.model import Snapshot, b64url


class Check(StrEnum):
    """What one finding says is wrong."""

    CURRENT_MISSING = "current_missing"
    NEXT_MISSING = "next_missing"
    REVOKED_PUBLISHED = "revoked_published"
    UNKNOWN_KID = "unknown_kid"
    X5T_MISMATCH = "x5t_mismatch"
    X5C_MISMATCH = "x5c_mismatch"
    KEY_MISMATCH = "key_mismatch"
    CERT_MISMATCH = "cert_mismatch"


_DER = Encoding.DER

CHECK_TEXT: Mapping[Check, str] = {
    Check.CURRENT_MISSING: "the current key is not published",
    Check.NEXT_MISSING: "the next key is not published",
    Check.REVOKED_PUBLISHED: "a revoked key is still published",
    Check.UNKNOWN_KID: "a kid unknown to the Management API is published",
    Check.X5T_MISMATCH: "x5t differs from the Management API certificate's SHA-1",
    Check.X5C_MISMATCH: "x5c[0] is not the Management API certificate",
    Check.KEY_MISMATCH: "n/e differ from the public key of the certificate",
    Check.CERT_MISMATCH: "the certificate served is not the current key's",
}

CRITICAL_CHECKS = frozenset({Check.CURRENT_MISSING})
"""A mirror lacking the current key cannot verify new tokens: its staleness is critical."""


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    check: Check
    kid: str

    def render(self) -> str:
        return f"{self.check.value}:{self.kid}"


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """One JWK as published. ``cert_sha1`` is the upper-case hex SHA-1 of ``x5c[0]``'s DER
    (``""`` when it is not a certificate, None without ``x5c``); ``key_matches_cert`` says
    whether ``n``/``e`` are that certificate's public key (None when there is nothing to
    compare)."""

    kid: str
    x5t: str | None = None
    cert_sha1: str | None = None
    key_matches_cert: bool | None = None


# --- reading -----------------------------------------------------------------------------------


def parse_jwks(body: object, where: str = "jwks") -> tuple[PublishedKey, ...]:
    """The keys of a JWKS document; ``MalformedResponse`` when it is not one."""
    if not isinstance(body, Mapping) or not isinstance(body.get("keys"), list):
        raise MalformedResponse(f"{where}: expected an object with a 'keys' array")
    keys: list[PublishedKey] = []
    for index, raw in enumerate(body["keys"]):
        if not isinstance(raw, Mapping) or not isinstance(raw.get("kid"), str) or not raw["kid"]:
            raise MalformedResponse(f"{where}.keys[{index}].kid: missing or not a string")
        keys.append(_published_key(raw))
    return tuple(keys)


def _published_key(raw: Mapping[str, object]) -> PublishedKey:
    x5t = raw.get("x5t")
    chain = raw.get("x5c")
    if not isinstance(chain, list) or not chain:
        return PublishedKey(str(raw["kid"]), x5t if isinstance(x5t, str) else None)
    certificate = _certificate(chain[0])
    if certificate is None:
        return PublishedKey(str(raw["kid"]), x5t if isinstance(x5t, str) else None, "")
    der_hash = hashlib.sha1(certificate.public_bytes(_DER)).hexdigest().upper()
    return PublishedKey(
        kid=str(raw["kid"]),
        x5t=x5t if isinstance(x5t, str) else None,
        cert_sha1=der_hash,
        key_matches_cert=_key_matches(raw, certificate),
    )


def _certificate(entry: object) -> x509.Certificate | None:
    if not isinstance(entry, str):
        return None
    try:
        return x509.load_der_x509_certificate(base64.b64decode(entry, validate=True))
    except (ValueError, binascii.Error):
        return None


def _key_matches(raw: Mapping[str, object], certificate: x509.Certificate) -> bool | None:
    n, e = raw.get("n"), raw.get("e")
    if not isinstance(n, str) or not isinstance(e, str):
        return None
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    numbers = public_key.public_numbers()
    try:
        return _b64url_int(n) == numbers.n and _b64url_int(e) == numbers.e
    except (ValueError, binascii.Error):
        return False


def _b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def der_sha1(der: bytes) -> str:
    """The upper-case hex SHA-1 of a DER certificate (``/cer``); ``MalformedResponse`` when
    it is not one."""
    try:
        x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise MalformedResponse("cer: not a DER X.509 certificate") from exc
    return hashlib.sha1(der).hexdigest().upper()


def pem_sha1(text: str) -> str:
    """The upper-case hex SHA-1 of the first certificate of a PEM document (``/pem``)."""
    try:
        certificate = x509.load_pem_x509_certificate(text.replace("\r\n", "\n").encode())
    except ValueError as exc:
        raise MalformedResponse("pem: not a PEM X.509 certificate") from exc
    return hashlib.sha1(certificate.public_bytes(_DER)).hexdigest().upper()


# --- comparing ---------------------------------------------------------------------------------


def expected_publication(snapshot: Snapshot) -> tuple[frozenset[str], ...]:
    """What a JWKS must show of the tenant: (current kids, next kids, revoked kids)."""
    return (
        frozenset(snapshot.current_kids),
        frozenset(snapshot.next_kids),
        frozenset(snapshot.kids_in("revoked")),
    )


def _presence(snapshot: Snapshot, published: Collection[str]) -> set[Finding]:
    current, upcoming, revoked = expected_publication(snapshot)
    findings = {Finding(Check.CURRENT_MISSING, kid) for kid in current - set(published)}
    findings |= {Finding(Check.NEXT_MISSING, kid) for kid in upcoming - set(published)}
    findings |= {Finding(Check.REVOKED_PUBLISHED, kid) for kid in revoked & set(published)}
    return findings


def _thumbprints(cert_sha1: str) -> set[str]:
    """The x5t forms Auth0 publishes: base64url of the SHA-1 (modern keys) or of its
    upper-case hex text (legacy keys)."""
    return {b64url(bytes.fromhex(cert_sha1)), b64url(cert_sha1.encode())}


def check_jwks(
    snapshot: Snapshot, published: Collection[PublishedKey], *, allow_extra_kids: Collection[str]
) -> frozenset[Finding]:
    """Current and next published, revoked not, every known key's ``x5t``, ``x5c[0]`` and
    ``n``/``e`` agreeing with its Management API certificate, no unknown kid (unless allowed)."""
    findings = _presence(snapshot, [key.kid for key in published])
    for key in published:
        known = snapshot.keys.get(key.kid)
        if known is None:
            if key.kid not in allow_extra_kids:
                findings.add(Finding(Check.UNKNOWN_KID, key.kid))
            continue
        if key.x5t is not None and key.x5t not in _thumbprints(known.cert_sha1):
            findings.add(Finding(Check.X5T_MISMATCH, key.kid))
        if key.cert_sha1 is not None and key.cert_sha1 != known.cert_sha1:
            findings.add(Finding(Check.X5C_MISMATCH, key.kid))
        if key.key_matches_cert is False:
            findings.add(Finding(Check.KEY_MISMATCH, key.kid))
    return frozenset(findings)


def check_mirror(snapshot: Snapshot, published: Collection[PublishedKey]) -> frozenset[Finding]:
    """A mirror must serve the current and next keys and no revoked key."""
    return frozenset(_presence(snapshot, [key.kid for key in published]))


def check_certificate(snapshot: Snapshot, cert_sha1: str) -> frozenset[Finding]:
    """``/pem`` or ``/cer`` must serve the current key's certificate."""
    current = [snapshot.keys[kid] for kid in snapshot.current_kids]
    if not current or any(key.cert_sha1 == cert_sha1 for key in current):
        return frozenset()
    return frozenset(Finding(Check.CERT_MISMATCH, key.kid) for key in current)
