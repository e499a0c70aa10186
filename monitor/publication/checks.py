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
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from monitor.certificates import rsa_key_sha256
from monitor.errors import MalformedResponse
from monitor.model import KeyState, Snapshot, b64url


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
    Check.KEY_MISMATCH: "n/e differ from the public key of the Management API certificate",
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
    (``""`` when it is not a certificate, None without ``x5c``); ``rsa_sha256`` names the
    key of its ``n``/``e`` (``rsa_key_sha256``; ``""`` when they are not base64url numbers,
    None without them)."""

    kid: str
    x5t: str | None = None
    cert_sha1: str | None = None
    rsa_sha256: str | None = None


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
    x5t, chain = raw.get("x5t"), raw.get("x5c")
    n, e = raw.get("n"), raw.get("e")
    return PublishedKey(
        kid=str(raw["kid"]),
        x5t=x5t if isinstance(x5t, str) else None,
        cert_sha1=_x5c_sha1(chain[0]) if isinstance(chain, list) and chain else None,
        rsa_sha256=_rsa_sha256(n, e) if isinstance(n, str) and isinstance(e, str) else None,
    )


def _x5c_sha1(entry: object) -> str:
    return _certificate_sha1(entry) if isinstance(entry, str) else ""


@lru_cache(maxsize=4096)
def _certificate_sha1(entry: str) -> str:
    """A published certificate is parsed once, not on every poll."""
    try:
        der = base64.b64decode(entry, validate=True)
        x509.load_der_x509_certificate(der)
    except (ValueError, binascii.Error):
        return ""
    return hashlib.sha1(der).hexdigest().upper()


def _rsa_sha256(n: str, e: str) -> str:
    try:
        return rsa_key_sha256(_b64url_int(n), _b64url_int(e))
    except (ValueError, binascii.Error):
        return ""


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


_NO_FINDINGS: frozenset[Finding] = frozenset()
"""An agreeing fetch's findings: one object, kept by every tenant's watch (``frozenset(())``
would be a new 216-byte set each time)."""


def _findings(found: Iterable[Finding]) -> frozenset[Finding]:
    return frozenset(found) or _NO_FINDINGS


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
    ``n``/``e`` agreeing with its Management API certificate (compared with it directly, so a
    JWK without ``x5c`` is checked too), no unknown kid (unless allowed)."""
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
        if _key_differs(key, known):
            findings.add(Finding(Check.KEY_MISMATCH, key.kid))
    return _findings(findings)


def _key_differs(key: PublishedKey, known: KeyState) -> bool:
    """``n``/``e`` published that are not the Management API certificate's RSA key (a key
    stored before keywatch recorded it, ``rsa_sha256`` None, is not compared)."""
    if key.rsa_sha256 is None:
        return False
    if known.key_type is not None and known.key_type != "RSA":
        return True
    return known.rsa_sha256 is not None and key.rsa_sha256 != known.rsa_sha256


def check_mirror(snapshot: Snapshot, published: Collection[PublishedKey]) -> frozenset[Finding]:
    """A mirror must serve the current and next keys and no revoked key."""
    return _findings(_presence(snapshot, [key.kid for key in published]))


def check_certificate(snapshot: Snapshot, cert_sha1: str) -> frozenset[Finding]:
    """``/pem`` or ``/cer`` must serve the current key's certificate."""
    current = [snapshot.keys[kid] for kid in snapshot.current_kids]
    if not current or any(key.cert_sha1 == cert_sha1 for key in current):
        return _NO_FINDINGS
    return _findings(Finding(Check.CERT_MISMATCH, key.kid) for key in current)
