"""Key material of a simulated tenant: RSA keys, self-signed certificates, JWKs, RS256 JWTs.

Everything is real: certificates parse with any X.509 library, tokens verify with any JOSE
library. RSA key generation is the slow part (tens of milliseconds), so a ``KeyPool`` can hand
out pregenerated keys; every signing key still gets its own freshly signed certificate with a
random serial number, so thumbprints stay unique.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import string
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

KID_ALPHABET = string.ascii_letters + string.digits
KID_LENGTH = 21
RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
CERT_VALIDITY_YEARS = 10
MAX_COMMON_NAME_LENGTH = 64  # X.520 upper bound; cryptography enforces it

KeySource = Callable[[], rsa.RSAPrivateKey]


def new_kid() -> str:
    """A random 21-character ``[A-Za-z0-9]`` key id, the shape of modern Auth0 kids."""
    return "".join(secrets.choice(KID_ALPHABET) for _ in range(KID_LENGTH))


def generate_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)


class KeyPool:
    """``size`` RSA keys, generated on first need and then handed out round-robin.

    Thread-safe; one pool can be shared by many tenants and many simulators.
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"key pool size must be a positive integer, got {size!r}")
        self.size = size
        self._keys: list[rsa.RSAPrivateKey] = []
        self._handed_out = 0
        self._lock = threading.Lock()

    def take(self) -> rsa.RSAPrivateKey:
        with self._lock:
            index = self._handed_out % self.size
            self._handed_out += 1
            if index == len(self._keys):
                self._keys.append(generate_rsa_key())
            return self._keys[index]

    def fill(self) -> None:
        """Generate every key now instead of on first need."""
        with self._lock:
            while len(self._keys) < self.size:
                self._keys.append(generate_rsa_key())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def _crlf_pem(pem: bytes) -> str:
    """Auth0 separates PEM lines with CRLF and has no trailing line break."""
    return pem.decode("ascii").strip().replace("\n", "\r\n")


def _years_later(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """One signing key's private key and certificate, in every encoding the API emits."""

    kid: str
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    der: bytes
    cert_pem: str
    pkcs7_pem: str
    sha1: bytes

    @property
    def thumbprint(self) -> str:
        return self.sha1.hex().upper()

    @property
    def fingerprint(self) -> str:
        return ":".join(f"{byte:02X}" for byte in self.sha1)

    def jwk(self) -> dict[str, object]:
        """The public JWK as Auth0's ``/.well-known/jwks.json`` publishes it."""
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "n": b64url(_int_bytes(numbers.n)),
            "e": b64url(_int_bytes(numbers.e)),
            "kid": self.kid,
            "x5t": b64url(self.sha1),
            "x5c": [base64.b64encode(self.der).decode("ascii")],
            "alg": "RS256",
        }


def make_key_material(
    private_key: rsa.RSAPrivateKey, *, common_name: str, issued_at: float, kid: str | None = None
) -> KeyMaterial:
    """A self-signed 10-year certificate for ``private_key`` with a fresh random serial."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name[:MAX_COMMON_NAME_LENGTH])]
    )
    not_before = datetime.fromtimestamp(int(issued_at), UTC)
    public_key = private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(_years_later(not_before, CERT_VALIDITY_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    return KeyMaterial(
        kid=kid or new_kid(),
        private_key=private_key,
        certificate=certificate,
        der=der,
        cert_pem=_crlf_pem(certificate.public_bytes(serialization.Encoding.PEM)),
        pkcs7_pem=_crlf_pem(
            pkcs7.serialize_certificates([certificate], serialization.Encoding.PEM)
        ),
        sha1=hashlib.sha1(der).digest(),  # Auth0 thumbprints are SHA-1
    )


# --- RS256 JWTs -----------------------------------------------------------------------------


def _json_segment(value: Mapping[str, object]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def encode_rs256(claims: Mapping[str, object], *, kid: str, private_key: rsa.RSAPrivateKey) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": kid}
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}".encode("ascii")
    signature = private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"


@dataclass(frozen=True, slots=True)
class DecodedJwt:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def decode_jwt(token: str) -> DecodedJwt:
    """Split and decode a compact JWS without verifying it; ValueError when it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a JWT has three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("a JWT part is not base64url-encoded JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT header and claims must be JSON objects")
    return DecodedJwt(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def rs256_signature_valid(jwt: DecodedJwt, public_key: rsa.RSAPublicKey) -> bool:
    try:
        public_key.verify(jwt.signature, jwt.signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True
