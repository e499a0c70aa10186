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
from collections import Counter
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


class Publication:
    """What one tenant publishes besides the Management API: the JWKS's max-age, the custom
    signing keys of its custom domain, its mirrors, and the count of requests to each."""

    def __init__(
        self,
        *,
        jwks: Callable[[bool], dict[str, object]],
        changed_at: Callable[[], float],
        now: Callable[[], float],
        key_source: KeySource,
        common_name: Callable[[], str],
    ) -> None:
        self._jwks = jwks
        self._changed_at = changed_at
        self._now = now
        self._key_source = key_source
        self._common_name = common_name
        self._lock = threading.Lock()
        self.jwks_max_age = DEFAULT_JWKS_MAX_AGE
        self._custom_signing_keys: list[dict[str, object]] = []
        self._mirrors: dict[str, JwksMirror] = {}
        self._served: Counter[str] = Counter()

    def add_custom_signing_key(self) -> str:
        """A customer-provided signing key, prepended to the custom domain's JWKS; its kid."""
        jwk = custom_signing_jwk(self._key_source, common_name=self._common_name(), now=self._now())
        with self._lock:
            self._custom_signing_keys.append(jwk)
        return str(jwk["kid"])

    def custom_domain_jwks_json(self, *, include_revoked: bool = False) -> dict[str, object]:
        """The custom domain's JWKS: the custom signing keys first, then Auth0's."""
        auth0_keys = self._jwks(include_revoked)["keys"]
        assert isinstance(auth0_keys, list)
        with self._lock:
            return {"keys": [*self._custom_signing_keys, *auth0_keys]}

    def add_mirror(self, name: str, *, delay: float | None) -> None:
        """A mirror of the JWKS that follows each key change after ``delay`` seconds (None:
        never), served at ``/<tenant>/__mirrors/<name>/jwks.json``."""
        check_mirror_name(name)
        check_delay(delay)
        copy = self._jwks(False)
        with self._lock:
            self._mirrors[name] = JwksMirror(name, delay, copy, taken_at=self._now())

    def mirror_jwks_json(self, name: str) -> dict[str, object] | None:
        with self._lock:
            mirror = self._mirrors.get(name)
        if mirror is None:
            return None
        return mirror.serve(
            now=self._now(), changed_at=self._changed_at(), source=lambda: self._jwks(False)
        )

    def count_request(self, endpoint: str) -> None:
        """Count one request to ``jwks``, ``custom_jwks``, ``pem``, ``cer`` or ``mirror:<name>``."""
        with self._lock:
            self._served[endpoint] += 1

    def requests_to(self, endpoint: str) -> int:
        with self._lock:
            return self._served[endpoint]

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {
                "jwks_max_age": self.jwks_max_age,
                "custom_signing_kids": [str(jwk["kid"]) for jwk in self._custom_signing_keys],
                "mirrors": [mirror.describe() for mirror in self._mirrors.values()],
                "requests": dict(self._served),
            }
