"""Fault injection: the next N responses of a target fail, stall or come back malformed.

Targets: ``api`` (every ``/api/v2`` request), ``token`` (``POST /oauth/token``), ``jwks``
(``/.well-known/jwks.json``, the custom domain's too), ``pem`` and ``cer`` (the certificate
endpoints). Each kind of fault keeps a FIFO of rules; a rule with
``count=None`` stays until cleared (a token-endpoint outage, for example).

Order within one request: a pending delay is served first, then a pending status fault
replaces the response. A malformed fault is used up by the next *successful* read (list,
get-one, JWKS, token) and replaces its body.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

TARGETS = ("api", "token", "jwks", "pem", "cer")

MALFORMED_KINDS: Mapping[str, str] = {
    "html": "an HTML error page with status 200",
    "truncated": "the JSON body cut in half",
    "wrong_type": "list: an object instead of the array; one key: `current` as a string; "
    "JWKS: `keys` as an object; token: `expires_in` as a string",
    "flag_string": 'every boolean flag as a string (`"true"`)',
    "missing_field": "the first key without `thumbprint` (JWKS: without `kid`; token: "
    "without `access_token`)",
    "bad_cert": "the first key's certificate is not a certificate",
    "bad_thumbprint": "the first key's thumbprint and fingerprint do not match its certificate",
    "empty": "an empty key list (one key: `{}`)",
    "no_current": "no key flagged current (JWKS: the current key is missing)",
    "no_next": "JWKS only: the next key is not published yet",
    "stale": "JWKS: revoked keys are still published, as from a stale cache; /pem and /cer: "
    "a previous key's certificate",
}
TOKEN_MALFORMED_KINDS = frozenset({"html", "truncated", "wrong_type", "missing_field"})
JWKS_ONLY_KINDS = frozenset({"stale", "no_next"})
CERT_KINDS = frozenset({"html", "bad_cert", "stale"})
"""What a malformed fault may do to ``/pem`` and ``/cer``."""

MAX_DELAY_SECONDS = 300.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StatusFault:
    status: int
    retry_after: float | None = None


@dataclass(slots=True)
class _Rule(Generic[T]):
    value: T
    remaining: int | None  # None: until cleared


class _RuleQueue(Generic[T]):
    def __init__(self) -> None:
        self._rules: deque[_Rule[T]] = deque()

    def add(self, value: T, count: int | None) -> None:
        self._rules.append(_Rule(value, count))

    def take(self) -> T | None:
        if not self._rules:
            return None
        rule = self._rules[0]
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._rules.popleft()
        return rule.value

    def clear(self) -> None:
        self._rules.clear()

    def describe(self, render: Callable[[T], dict[str, object]]) -> list[dict[str, object]]:
        return [{**render(rule.value), "remaining": rule.remaining} for rule in self._rules]


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown fault target {target!r}; choose one of {', '.join(TARGETS)}")


def _check_count(count: int | None) -> None:
    if count is None:
        return
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"fault count must be a positive integer or null, got {count!r}")


def _check_kind(kind: str, target: str) -> None:
    if kind not in MALFORMED_KINDS:
        raise ValueError(
            f"unknown malformed kind {kind!r}; choose one of {', '.join(MALFORMED_KINDS)}"
        )
    if target == "token" and kind not in TOKEN_MALFORMED_KINDS:
        allowed = ", ".join(sorted(TOKEN_MALFORMED_KINDS))
        raise ValueError(
            f"malformed kind {kind!r} does not apply to the token endpoint; use {allowed}"
        )
    if target in ("pem", "cer"):
        if kind not in CERT_KINDS:
            allowed = ", ".join(sorted(CERT_KINDS))
            raise ValueError(f"malformed kind {kind!r} does not apply to /{target}; use {allowed}")
        return
    if kind in JWKS_ONLY_KINDS and target != "jwks":
        raise ValueError(f"malformed kind {kind!r} applies to target 'jwks' only")


class FaultPlan:
    """Pending faults of one tenant. Thread-safe: tests add faults while the server serves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = {target: _RuleQueue[StatusFault]() for target in TARGETS}
        self._delay = {target: _RuleQueue[float]() for target in TARGETS}
        self._malformed = {target: _RuleQueue[str]() for target in TARGETS}

    def add_status(
        self, target: str, count: int | None, status: int, retry_after: float | None = None
    ) -> None:
        _check_target(target)
        _check_count(count)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"fault status must be an HTTP error status 400-599, got {status!r}")
        if retry_after is not None and not 0 <= retry_after <= MAX_DELAY_SECONDS:
            raise ValueError(f"retry_after must be 0-{MAX_DELAY_SECONDS:g} seconds")
        with self._lock:
            self._status[target].add(StatusFault(status, retry_after), count)

    def add_delay(self, target: str, count: int | None, seconds: float) -> None:
        _check_target(target)
        _check_count(count)
        if not 0 <= seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay must be 0-{MAX_DELAY_SECONDS:g} seconds, got {seconds!r}")
        with self._lock:
            self._delay[target].add(float(seconds), count)

    def add_malformed(self, target: str, count: int | None, kind: str) -> None:
        _check_target(target)
        _check_count(count)
        _check_kind(kind, target)
        with self._lock:
            self._malformed[target].add(kind, count)

    def take_status(self, target: str) -> StatusFault | None:
        with self._lock:
            return self._status[target].take()

    def take_delay(self, target: str) -> float:
        with self._lock:
            return self._delay[target].take() or 0.0

    def take_malformed(self, target: str) -> str | None:
        with self._lock:
            return self._malformed[target].take()

    def clear(self, target: str | None = None, *, status_only: bool = False) -> None:
        targets = TARGETS if target is None else (target,)
        with self._lock:
            for name in targets:
                _check_target(name)
                self._status[name].clear()
                if not status_only:
                    self._delay[name].clear()
                    self._malformed[name].clear()

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {
                target: {
                    "status": self._status[target].describe(
                        lambda fault: {"status": fault.status, "retry_after": fault.retry_after}
                    ),
                    "slow": self._delay[target].describe(lambda delay: {"delay": delay}),
                    "malformed": self._malformed[target].describe(lambda kind: {"kind": kind}),
                }
                for target in TARGETS
            }


# --- rendering malformed bodies -------------------------------------------------------------

HTML_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    "<body><h1>Bad Gateway</h1><p>The upstream server returned an invalid response.</p>"
    "</body></html>\n"
)
NOT_A_CERTIFICATE = (
    "-----BEGIN CERTIFICATE-----\r\nTm90IGEgY2VydGlmaWNhdGU=\r\n-----END CERTIFICATE-----"
)
WRONG_SHA1 = "0" * 40

JSON_MEDIA_TYPE = "application/json; charset=utf-8"
HTML_MEDIA_TYPE = "text/html; charset=utf-8"


def _items(payload: Any) -> list[dict[str, Any]]:
    """The key-like objects inside a list body, a JWKS or a single key."""
    if isinstance(payload, list):
        return [item for item in payload if isinstance(item, dict)]
    if isinstance(payload, dict) and isinstance(payload.get("keys"), list):
        return [item for item in payload["keys"] if isinstance(item, dict)]
    if isinstance(payload, dict):
        return [payload]
    return []


def _is_jwks(payload: Any) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("keys"), list)


def _is_token(payload: Any) -> bool:
    return isinstance(payload, dict) and "access_token" in payload


def _wrong_type(payload: Any) -> Any:
    if isinstance(payload, list):
        return {"keys": payload}
    if _is_jwks(payload):
        return {
            "keys": {
                item.get("kid", str(index)): item for index, item in enumerate(payload["keys"])
            }
        }
    if _is_token(payload):
        return {**payload, "expires_in": str(payload.get("expires_in"))}
    return {**payload, "current": str(payload.get("current", False)).lower()}


def _flag_string(payload: Any) -> Any:
    for item in _items(payload):
        for flag in ("current", "next", "previous", "revoked"):
            if isinstance(item.get(flag), bool):
                item[flag] = str(item[flag]).lower()
    return payload


def _missing_field(payload: Any) -> Any:
    if _is_token(payload):
        del payload["access_token"]
        return payload
    field = "kid" if _is_jwks(payload) else "thumbprint"
    for item in _items(payload)[:1]:
        item.pop(field, None)
    return payload


def _bad_cert(payload: Any) -> Any:
    for item in _items(payload)[:1]:
        if "x5c" in item:
            item["x5c"] = ["Tm90IGEgY2VydGlmaWNhdGU="]
        else:
            item["cert"] = NOT_A_CERTIFICATE
    return payload


def _bad_thumbprint(payload: Any) -> Any:
    for item in _items(payload)[:1]:
        if "x5t" in item:
            item["x5t"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA"
        else:
            item["thumbprint"] = WRONG_SHA1
            item["fingerprint"] = ":".join(WRONG_SHA1[i : i + 2] for i in range(0, 40, 2))
    return payload


def _empty(payload: Any) -> Any:
    if isinstance(payload, list):
        return []
    if _is_jwks(payload):
        return {"keys": []}
    return {}


def _no_current(payload: Any) -> Any:
    for item in _items(payload):
        if "current" in item:
            item["current"] = False
    return payload


_MUTATORS: Mapping[str, Callable[[Any], Any]] = {
    "wrong_type": _wrong_type,
    "flag_string": _flag_string,
    "missing_field": _missing_field,
    "bad_cert": _bad_cert,
    "bad_thumbprint": _bad_thumbprint,
    "empty": _empty,
    "no_current": _no_current,
    "no_next": lambda payload: payload,  # a JWKS only, handled by render_malformed
    "stale": lambda payload: payload,  # the tenant already built the stale JWKS
}


def render_malformed(
    kind: str, payload: Any, *, current_kid: str | None = None, next_kid: str | None = None
) -> tuple[bytes, str]:
    """The body and media type replacing ``payload`` for a malformed fault of ``kind``.

    ``current_kid`` and ``next_kid`` let ``no_current`` and ``no_next`` drop a key from a
    JWKS, which has no flags.
    """
    if kind == "html":
        return HTML_ERROR_PAGE.encode(), HTML_MEDIA_TYPE
    if kind == "truncated":
        text = json.dumps(payload, separators=(",", ":"))
        return text[: max(1, len(text) // 2)].encode(), JSON_MEDIA_TYPE
    if kind in ("no_current", "no_next") and _is_jwks(payload):
        dropped = current_kid if kind == "no_current" else next_kid
        mutated: Any = {"keys": [key for key in payload["keys"] if key.get("kid") != dropped]}
    else:
        mutated = _MUTATORS[kind](copy.deepcopy(payload))
    return json.dumps(mutated, separators=(",", ":")).encode(), JSON_MEDIA_TYPE
