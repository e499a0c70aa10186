"""Real X.509 certificates and Auth0 ``SigningKey`` JSON for tests.

One RSA key is generated per test session (that is the slow part). Certificates are signed
with it, each with its own serial number, so each has its own thumbprint. The certificate of
a kid is cached: asking twice for the same kid gives the same certificate, as Auth0 would.

    from tests.support.certs import make_signing_key_json
    since = datetime(2024, 1, 1, tzinfo=UTC)
    body = [make_signing_key_json("kidA", current=True, current_since=since),
            make_signing_key_json("kidB", next=True)]
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

DATE_FIELDS = ("current_since", "current_until", "revoked_at")
DEFAULT_NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_VALIDITY = timedelta(days=3650)  # Auth0 tenant certificates last 10 years

DateValue = datetime | str | Mapping[str, object] | None


@cache
def session_rsa_key() -> rsa.RSAPrivateKey:
    """The one RSA-2048 key every test certificate is made with."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_certificate(
    *,
    common_name: str = "keywatch-test.example",
    serial_number: int | None = None,
    not_before: datetime = DEFAULT_NOT_BEFORE,
    not_after: datetime | None = None,
) -> x509.Certificate:
    """A self-signed certificate; a random serial number unless one is given."""
    key = session_rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial_number or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after or not_before + DEFAULT_VALIDITY)
        .sign(key, hashes.SHA256())
    )


@cache
def certificate_for_kid(kid: str) -> x509.Certificate:
    """The same certificate for the same kid, a different one for every other kid."""
    digest = hashlib.sha256(kid.encode()).digest()
    serial = int.from_bytes(digest[:19], "big") | 1  # positive, < 2**159, never 0
    return make_certificate(common_name=f"{kid[:40]}.keywatch-test.example", serial_number=serial)


def cert_pem(certificate: x509.Certificate) -> str:
    """PEM with ``\\r\\n`` line breaks and no trailing newline, as Auth0 sends it."""
    text = certificate.public_bytes(Encoding.PEM).decode()
    return "\r\n".join(text.strip().splitlines())


def pkcs7_pem(certificate: x509.Certificate) -> str:
    text = pkcs7.serialize_certificates([certificate], Encoding.PEM).decode()
    return "\r\n".join(text.strip().splitlines())


def thumbprint(certificate: x509.Certificate) -> str:
    """Upper-case hex SHA-1 of the DER, Auth0's ``thumbprint``."""
    return certificate.fingerprint(hashes.SHA1()).hex().upper()


def fingerprint(certificate: x509.Certificate) -> str:
    """The thumbprint as colon-separated pairs, Auth0's ``fingerprint``."""
    hex_digits = thumbprint(certificate)
    return ":".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


def auth0_date(moment: datetime) -> str:
    """``2020-08-12T11:54:49.954Z``: UTC with milliseconds, the format Auth0 uses."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def make_signing_key_json(
    kid: str,
    *,
    current: bool = False,
    next: bool = False,
    previous: bool = False,
    revoked: bool = False,
    certificate: x509.Certificate | None = None,
    **dates: DateValue,
) -> dict[str, object]:
    """One item of ``GET /api/v2/keys/signing``, with a real certificate and correct digests.

    ``dates`` may hold ``current_since``, ``current_until`` and ``revoked_at``: a datetime
    is written the way Auth0 writes it, a string or an object is passed through as-is (to
    test odd inputs), None leaves the field out.
    """
    unknown = sorted(set(dates) - set(DATE_FIELDS))
    if unknown:
        raise TypeError(f"unknown SigningKey date field(s): {', '.join(unknown)}")
    cert = certificate or certificate_for_kid(kid)
    body: dict[str, object] = {
        "kid": kid,
        "cert": cert_pem(cert),
        "pkcs7": pkcs7_pem(cert),
        "current": current,
        "next": next,
        "previous": previous,
        "revoked": revoked,
        "fingerprint": fingerprint(cert),
        "thumbprint": thumbprint(cert),
    }
    for name in DATE_FIELDS:
        value = dates.get(name)
        if isinstance(value, datetime):
            body[name] = auth0_date(value)
        elif value is not None:
            body[name] = value
    return body
