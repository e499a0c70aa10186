"""What keywatch reads from an X.509 certificate, parsed once per certificate.

``cert_facts(pem)`` is cached by the PEM text: a tenant's certificates change only on
rotation, so a poll parses none of them after the first. ``rsa_key_sha256(n, e)`` names an
RSA public key by its numbers, the same way for a certificate's key and a JWK's ``n``/``e``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What keywatch reads from a key's X.509 certificate."""

    sha1: str  # upper-case hex SHA-1 of the DER, what Auth0 calls the thumbprint
    not_before: datetime
    not_after: datetime
    key_size: int | None
    key_type: str | None = None  # RSA, EC, or the name of another public key class
    rsa_sha256: str | None = None  # rsa_key_sha256 of an RSA public key


def rsa_key_sha256(n: int, e: int) -> str:
    """The hex SHA-256 of an RSA public key's modulus and exponent."""
    return hashlib.sha256(f"{n:x}.{e:x}".encode()).hexdigest()


@lru_cache(maxsize=8192)
def cert_facts(pem: str) -> CertFacts:
    """Parse a PEM certificate once; raises ValueError when it is not one."""
    certificate = x509.load_pem_x509_certificate(pem.replace("\r\n", "\n").encode())
    der = certificate.public_bytes(Encoding.DER)
    public_key = certificate.public_key()
    key_size = (
        public_key.key_size
        if isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
        else None
    )
    numbers = public_key.public_numbers() if isinstance(public_key, rsa.RSAPublicKey) else None
    return CertFacts(
        sha1=hashlib.sha1(der).hexdigest().upper(),  # Auth0's thumbprint is a SHA-1
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        key_size=key_size,
        key_type=_key_type(public_key),
        rsa_sha256=rsa_key_sha256(numbers.n, numbers.e) if numbers is not None else None,
    )


def _key_type(public_key: object) -> str:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "EC"
    return type(public_key).__name__.removeprefix("_").removesuffix("PublicKey") or "unknown"
