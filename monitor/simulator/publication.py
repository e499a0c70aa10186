"""What a simulated tenant publishes besides its JWKS: the certificate endpoints, custom
signing keys on its custom domain, and mirrors (a user's gateway serving a copy of the JWKS).

- ``/pem`` and ``/cer``: the current key's certificate, PEM (``\\r\\n`` lines) and DER.
- Custom signing keys (Auth0: Enterprise, custom domain only) are *prepended* to the Auth0
  keys in the custom domain's JWKS, never in the canonical domain's, and never in
  ``/api/v2/keys/signing``.
- ``JwksMirror``: a copy of the tenant's JWKS that takes up the tenant's current JWKS
  ``delay`` seconds after the tenant's keys last changed, or never (``delay=None``): the
  stale gateway cache of the real world.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.simulator.crypto import KeySource, make_key_material, new_kid

_MIRROR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
DEFAULT_JWKS_MAX_AGE = 15  # Auth0's Cache-Control: public, max-age=15, ...


def jwks_cache_control(max_age: int) -> str:
    return f"public, max-age={max_age}, stale-while-revalidate=15, stale-if-error=86400"


@dataclass(slots=True)
class JwksMirror:
    """A copy of a JWKS that follows its source ``delay`` seconds after each change."""

    name: str
    delay: float | None
    copy: dict[str, object]
    taken_at: float
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(
        self, *, now: float, changed_at: float, source: Callable[[], dict[str, object]]
    ) -> dict[str, object]:
        with self._lock:
            due = self.delay is not None and changed_at > self.taken_at
            if due and self.delay is not None and now - changed_at >= self.delay:
                self.copy, self.taken_at = source(), now
            return self.copy

    def describe(self) -> dict[str, object]:
        keys = self.copy.get("keys")
        kids = (
            [key.get("kid") for key in keys if isinstance(key, dict)]
            if isinstance(keys, list)
            else []
        )
        return {"name": self.name, "delay": self.delay, "kids": kids}


def check_mirror_name(name: str) -> str:
    if not isinstance(name, str) or not _MIRROR_NAME.fullmatch(name):
        raise ValueError(f"mirror name {name!r} must be 1-63 characters of [A-Za-z0-9._-]")
    return name


def check_delay(delay: float | None) -> float | None:
    if delay is not None and (isinstance(delay, bool) or not 0 <= delay <= 86400 * 365):
        raise ValueError(f"mirror delay must be 0 or more seconds, or null (never), got {delay!r}")
    return delay


def custom_signing_jwk(key_source: KeySource, *, common_name: str, now: float) -> dict[str, object]:
    """A customer-provided signing key as Auth0 prepends it: an RSA JWK with its own kid."""
    material = make_key_material(
        key_source(), common_name=common_name, issued_at=now, kid=f"custom-{new_kid()}"
    )
    return material.jwk()
