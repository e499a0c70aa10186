"""A simulated tenant's signing keys: current, next, previous and revoked, and how they move.

``KeyRing`` holds the keys and their lifecycle (rotate, revoke, the last three revoked keys
listed) and renders them as the Management API and the JWKS endpoint show them. It shares the
tenant's lock and clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import rsa

from monitor.simulator.crypto import KeyMaterial, KeySource, make_key_material
from monitor.simulator.errors import RevokeNotAllowed, UnknownSigningKey

MAX_LISTED_REVOKED_KEYS = 3  # the dashboard's "last three revoked keys"


def iso_millis(epoch: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ``, the date format of the Management API."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(eq=False, slots=True)
class SigningKey:
    """One key of a tenant: its material plus the lifecycle flags and dates."""

    material: KeyMaterial
    current: bool = False
    next: bool = False
    previous: bool = False
    revoked: bool = False
    current_since: float | None = None
    current_until: float | None = None
    revoked_at: float | None = None

    @property
    def kid(self) -> str:
        return self.material.kid

    @property
    def state(self) -> str:
        for name in ("revoked", "current", "next", "previous"):
            if getattr(self, name):
                return name
        return "unknown"

    def to_json(self) -> dict[str, object]:
        """The ``SigningKeys`` object: explicit booleans, dates only when set."""
        body: dict[str, object] = {
            "kid": self.kid,
            "cert": self.material.cert_pem,
            "pkcs7": self.material.pkcs7_pem,
            "current": self.current,
            "next": self.next,
            "previous": self.previous,
        }
        for name in ("current_since", "current_until"):
            value = getattr(self, name)
            if value is not None:
                body[name] = iso_millis(value)
        body["fingerprint"] = self.material.fingerprint
        body["thumbprint"] = self.material.thumbprint
        body["revoked"] = self.revoked
        if self.revoked_at is not None:
            body["revoked_at"] = iso_millis(self.revoked_at)
        return body


class KeyRing:
    """The keys of one tenant. They are created on first use, so that the certificates' CN
    (``common_name()``) can be the host the server is bound to when the server starts first."""

    def __init__(
        self,
        *,
        lock: threading.RLock,
        now: Callable[[], float],
        key_source: KeySource,
        common_name: Callable[[], str],
    ) -> None:
        self._lock = lock
        self._now = now
        self._key_source = key_source
        self._common_name = common_name
        self._keys: list[SigningKey] = []
        self.changed_at = 0.0
        """When the keys last changed (created, rotated, revoked): what mirrors follow."""

    @property
    def ready(self) -> bool:
        return bool(self._keys)

    def ensure(self) -> None:
        """Create the initial current and next keys now if they do not exist yet."""
        with self._lock:
            self._ensure_locked()

    def _ensure_locked(self) -> None:
        if self._keys:
            return
        now = self._now()
        self._keys = [
            SigningKey(self._new_material(now), current=True, current_since=now),
            SigningKey(self._new_material(now), next=True),
        ]
        self.changed_at = now

    def _new_material(self, now: float) -> KeyMaterial:
        return make_key_material(self._key_source(), common_name=self._common_name(), issued_at=now)

    def _keys_in(self, state: str) -> list[SigningKey]:
        with self._lock:
            self._ensure_locked()
            return [key for key in self._keys if key.state == state]

    def kids_in(self, state: str) -> list[str]:
        """The kids of the keys in ``state``, oldest first."""
        return [key.kid for key in self._keys_in(state)]

    def material_in(self, state: str) -> list[KeyMaterial]:
        """The key material of the keys in ``state``, oldest first."""
        return [key.material for key in self._keys_in(state)]

    def signer(self) -> KeyMaterial:
        """The current key, which signs the tokens the tenant issues."""
        return self._keys_in("current")[0].material

    def keys_json(self) -> list[dict[str, object]]:
        """The body of ``GET /api/v2/keys/signing``."""
        with self._lock:
            self._ensure_locked()
            return [key.to_json() for key in self._keys]

    def key_json(self, kid: str) -> dict[str, object]:
        """The body of ``GET /api/v2/keys/signing/{kid}``; raises ``UnknownSigningKey``."""
        with self._lock:
            return self._find(kid).to_json()

    def jwks_json(self, *, include_revoked: bool = False) -> dict[str, object]:
        """``/.well-known/jwks.json``: current, next, then previous keys (newest first)."""
        with self._lock:
            self._ensure_locked()
            order = {"current": 0, "next": 1, "previous": 2, "revoked": 3}
            keys = [key for key in self._keys if include_revoked or not key.revoked]
            ranked = sorted(
                enumerate(keys), key=lambda pair: (order.get(pair[1].state, 4), -pair[0])
            )
            return {"keys": [key.material.jwk() for _, key in ranked]}

    def verification_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The public key of a non-revoked key, else None."""
        with self._lock:
            try:
                key = self._find(kid)
            except UnknownSigningKey:
                return None
            return None if key.revoked else key.material.private_key.public_key()

    def _find(self, kid: str) -> SigningKey:
        self._ensure_locked()
        for key in self._keys:
            if key.kid == kid:
                return key
        raise UnknownSigningKey(kid)

    def rotate(self) -> str:
        """Current -> previous, next -> current, a new next key; returns the new next kid."""
        with self._lock:
            self._ensure_locked()
            now = self._now()
            material = self._new_material(now)  # before any change: if it fails, nothing moved
            for key in self._keys:
                if key.current:
                    key.current, key.previous, key.current_until = False, True, now
            for key in self._keys:
                if key.next:
                    key.next, key.current, key.current_since = False, True, now
            self._keys.append(SigningKey(material, next=True))
            self.changed_at = now
            return material.kid

    def revoke(self, kid: str) -> None:
        """Revoke a previous key; ``UnknownSigningKey`` or ``RevokeNotAllowed`` otherwise."""
        with self._lock:
            key = self._find(kid)
            if not key.previous or key.revoked:
                raise RevokeNotAllowed(kid, key.state)
            key.previous, key.revoked, key.revoked_at = False, True, self._now()
            self.changed_at = key.revoked_at
            self._forget_old_revoked_keys()

    def _forget_old_revoked_keys(self) -> None:
        revoked = [key for key in self._keys if key.revoked]
        revoked.sort(key=lambda key: key.revoked_at or 0.0)
        for key in revoked[:-MAX_LISTED_REVOKED_KEYS]:
            self._keys.remove(key)
