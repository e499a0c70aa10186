"""Key states, snapshots and events: the values every other module passes around.

``parse_signing_keys`` turns the JSON of ``GET /api/v2/keys/signing`` into ``KeyState``s,
raising ``MalformedResponse`` (naming the item and field) for anything the OpenAPI forbids.
Certificate facts are cached by PEM text (``monitor.certificates``): a tenant's
certificates change only on rotation, so a poll parses none of them after the first.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

from monitor.certificates import cert_facts
from monitor.errors import MalformedResponse

KEY_STATES = ("current", "next", "previous", "revoked")


class Severity(IntEnum):
    INFO = 10
    WARNING = 20
    CRITICAL = 30

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.upper()]


class EventType(StrEnum):
    KEY_ROTATED = "key.rotated"
    KEY_REVOKED = "key.revoked"
    KEY_ADDED = "key.added"
    KEY_REMOVED = "key.removed"
    KEY_STATE_CHANGED = "key.state_changed"
    KEY_CERTIFICATE_CHANGED = "key.certificate_changed"
    KEY_THUMBPRINT_MISMATCH = "key.thumbprint_mismatch"
    TENANT_NO_CURRENT_KEY = "tenant.no_current_key"
    TENANT_NO_NEXT_KEY = "tenant.no_next_key"
    TENANT_CURRENT_KEY_RESTORED = "tenant.current_key_restored"
    JWKS_MISMATCH = "jwks.mismatch"
    JWKS_CONSISTENT = "jwks.consistent"
    MIRROR_STALE = "mirror.stale"
    MIRROR_SYNCED = "mirror.synced"
    KEY_EXPIRING = "key.expiring"
    KEY_PREVIOUS_UNREVOKED = "key.previous_unrevoked"
    TENANT_ROTATION_OVERDUE = "tenant.rotation_overdue"
    TENANT_UNREACHABLE = "tenant.unreachable"
    TENANT_RECOVERED = "tenant.recovered"


DEFAULT_SEVERITY: Mapping[EventType, Severity] = {
    EventType.KEY_ROTATED: Severity.WARNING,
    EventType.KEY_REVOKED: Severity.CRITICAL,
    EventType.KEY_ADDED: Severity.INFO,
    EventType.KEY_REMOVED: Severity.WARNING,
    EventType.KEY_STATE_CHANGED: Severity.INFO,
    EventType.KEY_CERTIFICATE_CHANGED: Severity.CRITICAL,
    EventType.KEY_THUMBPRINT_MISMATCH: Severity.WARNING,
    EventType.TENANT_NO_CURRENT_KEY: Severity.CRITICAL,
    EventType.TENANT_NO_NEXT_KEY: Severity.WARNING,
    EventType.TENANT_CURRENT_KEY_RESTORED: Severity.INFO,
    EventType.JWKS_MISMATCH: Severity.CRITICAL,
    EventType.JWKS_CONSISTENT: Severity.INFO,
    EventType.MIRROR_STALE: Severity.WARNING,  # critical while the mirror lacks the current key
    EventType.MIRROR_SYNCED: Severity.INFO,
    EventType.KEY_EXPIRING: Severity.WARNING,
    EventType.KEY_PREVIOUS_UNREVOKED: Severity.WARNING,
    EventType.TENANT_ROTATION_OVERDUE: Severity.WARNING,
    EventType.TENANT_UNREACHABLE: Severity.WARNING,
    EventType.TENANT_RECOVERED: Severity.INFO,
}


@dataclass(frozen=True, slots=True)
class KeyState:
    """One signing key as the Management API reported it, plus facts from its certificate."""

    kid: str
    thumbprint: str
    fingerprint: str
    cert_sha1: str
    current: bool = False
    next: bool = False
    previous: bool = False
    revoked: bool = False
    current_since: datetime | None = None
    current_until: datetime | None = None
    revoked_at: datetime | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    key_size: int | None = None
    key_type: str | None = None
    rsa_sha256: str | None = None  # of the certificate's RSA public key (n, e); None: unknown

    @property
    def state(self) -> str:
        """The one state a person would name: revoked > current > next > previous."""
        if self.revoked:
            return "revoked"
        if self.current:
            return "current"
        if self.next:
            return "next"
        if self.previous:
            return "previous"
        return "unknown"

    @property
    def thumbprint_ok(self) -> bool:
        """True when thumbprint and fingerprint both match the SHA-1 of the certificate."""
        return (
            self.thumbprint.upper() == self.cert_sha1
            and self.fingerprint.replace(":", "").upper() == self.cert_sha1
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every key of one tenant at one moment, by kid."""

    tenant: str
    taken_at: datetime
    keys: Mapping[str, KeyState] = field(default_factory=dict)

    def kids_in(self, state: str) -> list[str]:
        return sorted(kid for kid, key in self.keys.items() if key.state == state)

    @property
    def current_kids(self) -> list[str]:
        return self.kids_in("current")

    @property
    def next_kids(self) -> list[str]:
        return self.kids_in("next")

    def same_keys(self, other: Snapshot | None) -> bool:
        if other is None:
            return False
        return self.keys is other.keys or dict(self.keys) == dict(other.keys)


@dataclass(frozen=True, slots=True)
class EpisodeState:
    """What survives a restart of one published target's watch (``monitor.publication``): the
    disagreeing streak, the open episode, episodes since ``anchor``, a mirror behind since."""

    streak: int = 0
    open_id: str | None = None
    open_severity: Severity | None = None
    anchor: datetime | None = None
    episodes: int = 0
    behind_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class TenantState:
    """What detection keeps of a tenant between polls (see ``monitor.confirm``).

    ``snapshot`` is the last *confirmed* answer: the next events are computed against it.
    ``last_current`` holds the current kids last confirmed, kept through a gap with no current
    key, so the gap's end is told apart from a rotation. ``pending`` is an alarming answer not
    yet believed, seen in ``pending_polls`` consecutive polls. ``alerted`` holds the ids of the
    standing hygiene findings already raised, so each is raised once. ``publication`` holds the
    episode state of each published target (by ``monitor.publication.target_key``).
    """

    snapshot: Snapshot
    last_current: tuple[str, ...] = ()
    pending: Snapshot | None = None
    pending_polls: int = 0
    alerted: frozenset[str] = frozenset()  # ids of the hygiene findings raised (monitor.hygiene)
    publication: Mapping[str, EpisodeState] = field(default_factory=dict)

    @classmethod
    def confirmed(cls, snapshot: Snapshot, last_current: tuple[str, ...] = ()) -> TenantState:
        """``snapshot`` believed, nothing pending."""
        return cls(snapshot, tuple(snapshot.current_kids) or last_current)

    @property
    def tenant(self) -> str:
        return self.snapshot.tenant

    @property
    def seen(self) -> Snapshot:
        """The last answer, believed or not: what the metrics show."""
        return self.pending or self.snapshot


@dataclass(frozen=True, slots=True)
class Event:
    """A change worth telling someone about. ``id`` is deterministic (see ``event_id``)."""

    id: str
    tenant: str
    type: EventType
    severity: Severity
    detected_at: datetime
    kid: str | None = None
    old_kid: str | None = None
    new_kid: str | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """One human line, used by logs and as the plain-text fallback of notifications."""
        if self.type is EventType.KEY_ROTATED and self.old_kid:
            return f"signing key rotated on {self.tenant}: {self.old_kid} -> {self.new_kid}"
        if self.type is EventType.KEY_ROTATED:
            return f"signing key rotated on {self.tenant} to {self.new_kid}"
        if self.type is EventType.TENANT_CURRENT_KEY_RESTORED:
            return f"current signing key {self.kid} on {self.tenant} is flagged current again"
        if self.type is EventType.KEY_THUMBPRINT_MISMATCH:
            return (
                f"signing key {self.kid} on {self.tenant}: reported thumbprint does not match "
                "its certificate"
            )
        if self.type is EventType.KEY_REVOKED:
            return f"signing key {self.kid} revoked on {self.tenant}"
        if self.type is EventType.KEY_STATE_CHANGED:
            old, new = self.details.get("old_state"), self.details.get("new_state")
            return f"signing key {self.kid} on {self.tenant} moved {old} -> {new}"
        if self.type in _PUBLICATION_SUMMARIES:
            where = f"{self.details.get('source', '')} {self.details.get('url', '')}".strip()
            return f"{_PUBLICATION_SUMMARIES[self.type]} on {self.tenant}: {where}"
        hygiene = self._hygiene_summary()
        if hygiene:
            return hygiene
        if self.kid:
            return f"{self.type.value} on {self.tenant}: {self.kid}"
        return f"{self.type.value} on {self.tenant}"

    def _hygiene_summary(self) -> str | None:
        """The lines of the expiry, hygiene and reachability events (``monitor.hygiene``,
        ``monitor.reachability``), from their details."""
        facts = self.details
        if self.type is EventType.KEY_EXPIRING:
            return (
                f"certificate of signing key {self.kid} on {self.tenant} expires at "
                f"{facts.get('not_after')} (in {facts.get('expires_in')})"
            )
        if self.type is EventType.KEY_PREVIOUS_UNREVOKED:
            return (
                f"previous signing key {self.kid} on {self.tenant} still not revoked "
                f"{facts.get('age')} after the rotation"
            )
        if self.type is EventType.TENANT_ROTATION_OVERDUE:
            age = facts.get("age")
            return f"current signing key {self.kid} on {self.tenant} not rotated for {age}"
        if self.type is EventType.TENANT_UNREACHABLE:
            return (
                f"{self.tenant} unreachable: {facts.get('failures')} polls failed in a row "
                f"({facts.get('reason')})"
            )
        if self.type is EventType.TENANT_RECOVERED:
            return f"{self.tenant} reachable again after {facts.get('downtime')}"
        return None


_PUBLICATION_SUMMARIES: Mapping[EventType, str] = {
    EventType.JWKS_MISMATCH: "published keys disagree with the Management API",
    EventType.JWKS_CONSISTENT: "published keys agree with the Management API again",
    EventType.MIRROR_STALE: "JWKS mirror is stale",
    EventType.MIRROR_SYNCED: "JWKS mirror is in sync again",
}


def event_id(tenant: str, event_type: EventType, *transition: str | None) -> str:
    """Hash of (tenant, type, kids and state transition): re-detecting gives the same id."""
    material = "|".join([tenant, event_type.value, *(part or "" for part in transition)])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def make_event(
    tenant: str,
    event_type: EventType,
    detected_at: datetime,
    transition: Iterable[str | None],
    *,
    kid: str | None = None,
    old_kid: str | None = None,
    new_kid: str | None = None,
    details: Mapping[str, str] | None = None,
) -> Event:
    return Event(
        id=event_id(tenant, event_type, *transition),
        tenant=tenant,
        type=event_type,
        severity=DEFAULT_SEVERITY[event_type],
        detected_at=detected_at,
        kid=kid,
        old_kid=old_kid,
        new_kid=new_kid,
        details=dict(details or {}),
    )


# --- parsing the Management API -------------------------------------------------------------


def parse_auth0_date(value: object, where: str) -> datetime | None:
    """An Auth0 ``SigningKeysDate``: an ISO-8601 string, or an object wrapping one."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        for name in ("date", "value", "$date", "iso"):
            if name in value:
                return parse_auth0_date(value[name], where)
        return None  # the OpenAPI allows an opaque object; keywatch cannot read a date from it
    if not isinstance(value, str):
        raise MalformedResponse(f"{where}: expected a date string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise MalformedResponse(f"{where}: not an ISO-8601 date: {value[:40]!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_REQUIRED_STRINGS = ("kid", "cert", "fingerprint", "thumbprint")
_FLAGS = ("current", "next", "previous", "revoked")
_DATES = ("current_since", "current_until", "revoked_at")


def parse_signing_key(raw: object, where: str) -> KeyState:
    """One item of the list (or the GET-one body); ``where`` names it in errors."""
    if not isinstance(raw, Mapping):
        raise MalformedResponse(f"{where}: expected an object, got {type(raw).__name__}")
    for name in _REQUIRED_STRINGS:
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            problem = "missing" if value is None else f"expected a string, got {_kind(value)}"
            raise MalformedResponse(f"{where}.{name}: {problem}")
    flags: dict[str, bool] = {}
    for name in _FLAGS:
        value = raw.get(name, False)
        if value is None:
            value = False
        if not isinstance(value, bool):
            raise MalformedResponse(f"{where}.{name}: expected a boolean, got {_kind(value)}")
        flags[name] = value
    dates = {name: parse_auth0_date(raw.get(name), f"{where}.{name}") for name in _DATES}
    try:
        facts = cert_facts(raw["cert"])
    except ValueError as exc:
        raise MalformedResponse(f"{where}.cert: not a PEM X.509 certificate") from exc
    return KeyState(
        kid=raw["kid"],
        thumbprint=raw["thumbprint"],
        fingerprint=raw["fingerprint"],
        cert_sha1=facts.sha1,
        not_before=facts.not_before,
        not_after=facts.not_after,
        key_size=facts.key_size,
        key_type=facts.key_type,
        rsa_sha256=facts.rsa_sha256,
        current=flags["current"],
        next=flags["next"],
        previous=flags["previous"],
        revoked=flags["revoked"],
        current_since=dates["current_since"],
        current_until=dates["current_until"],
        revoked_at=dates["revoked_at"],
    )


MAX_KEYS_PER_TENANT = 500
"""The most signing keys one tenant's answer may list (revoked keys stay listed, one per
rotation: 500 is decades of monthly rotations). More is refused as malformed, not stored."""


def parse_signing_keys(raw: object) -> list[KeyState]:
    """The body of ``GET /api/v2/keys/signing``: a JSON array of SigningKey objects."""
    if not isinstance(raw, list):
        raise MalformedResponse(f"keys/signing: expected a JSON array, got {_kind(raw)}")
    if len(raw) > MAX_KEYS_PER_TENANT:
        raise MalformedResponse(
            f"keys/signing: {len(raw)} keys, more than the {MAX_KEYS_PER_TENANT} keywatch "
            "accepts for one tenant"
        )
    keys = [parse_signing_key(item, f"keys/signing[{index}]") for index, item in enumerate(raw)]
    seen: set[str] = set()
    for index, key in enumerate(keys):
        if key.kid in seen:
            raise MalformedResponse(f"keys/signing[{index}].kid: duplicate kid {key.kid!r}")
        seen.add(key.kid)
    return keys


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# --- serialisation for the store ------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _from_iso(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def key_to_dict(key: KeyState) -> dict[str, object]:
    return {
        "kid": key.kid,
        "thumbprint": key.thumbprint,
        "fingerprint": key.fingerprint,
        "cert_sha1": key.cert_sha1,
        "current": key.current,
        "next": key.next,
        "previous": key.previous,
        "revoked": key.revoked,
        "current_since": _iso(key.current_since),
        "current_until": _iso(key.current_until),
        "revoked_at": _iso(key.revoked_at),
        "not_before": _iso(key.not_before),
        "not_after": _iso(key.not_after),
        "key_size": key.key_size,
        "key_type": key.key_type,
        "rsa_sha256": key.rsa_sha256,
    }


def key_from_dict(data: Mapping[str, Any]) -> KeyState:
    return KeyState(
        kid=str(data["kid"]),
        thumbprint=str(data["thumbprint"]),
        fingerprint=str(data["fingerprint"]),
        cert_sha1=str(data["cert_sha1"]),
        current=bool(data["current"]),
        next=bool(data["next"]),
        previous=bool(data["previous"]),
        revoked=bool(data["revoked"]),
        current_since=_from_iso(data.get("current_since")),
        current_until=_from_iso(data.get("current_until")),
        revoked_at=_from_iso(data.get("revoked_at")),
        not_before=_from_iso(data.get("not_before")),
        not_after=_from_iso(data.get("not_after")),
        key_size=data.get("key_size"),
        key_type=data.get("key_type"),
        rsa_sha256=data.get("rsa_sha256"),
    )


def _snapshot_to_dict(snapshot: Snapshot) -> dict[str, object]:
    return {
        "tenant": snapshot.tenant,
        "taken_at": snapshot.taken_at.isoformat(),
        "keys": [key_to_dict(snapshot.keys[kid]) for kid in sorted(snapshot.keys)],
    }


def _snapshot_from_dict(data: Mapping[str, Any]) -> Snapshot:
    keys = [key_from_dict(item) for item in data["keys"]]
    return Snapshot(
        tenant=data["tenant"],
        taken_at=datetime.fromisoformat(data["taken_at"]),
        keys={key.kid: key for key in keys},
    )


def snapshot_to_json(snapshot: Snapshot) -> str:
    return json.dumps(_snapshot_to_dict(snapshot), separators=(",", ":"))


def snapshot_from_json(text: str) -> Snapshot:
    return _snapshot_from_dict(json.loads(text))


def confirmation_to_json(state: TenantState) -> str:
    """What a ``TenantState`` holds beyond its snapshot."""
    return json.dumps(
        {
            "last_current": list(state.last_current),
            "pending": _snapshot_to_dict(state.pending) if state.pending else None,
            "pending_polls": state.pending_polls,
            "alerted": sorted(state.alerted),
            "publication": {key: _episode_to_dict(e) for key, e in state.publication.items()},
        },
        separators=(",", ":"),
    )


def tenant_state_from_json(snapshot: Snapshot, confirmation: str | None) -> TenantState:
    """The state stored as ``snapshot`` and ``confirmation_to_json``; ``None`` (a store written
    before confirmation existed) is the snapshot believed, nothing pending."""
    if confirmation is None:
        return TenantState.confirmed(snapshot)
    data = json.loads(confirmation)
    pending = data.get("pending")
    return TenantState(
        snapshot=snapshot,
        last_current=tuple(str(kid) for kid in data.get("last_current") or ()),
        pending=_snapshot_from_dict(pending) if pending else None,
        pending_polls=int(data.get("pending_polls") or 0),
        alerted=frozenset(str(item) for item in data.get("alerted") or ()),
        publication={k: _episode_from_dict(v) for k, v in (data.get("publication") or {}).items()},
    )


def _episode_to_dict(episode: EpisodeState) -> dict[str, object]:
    return {
        "streak": episode.streak,
        "open_id": episode.open_id,
        "open_severity": episode.open_severity.label if episode.open_severity else None,
        "anchor": _iso(episode.anchor),
        "episodes": episode.episodes,
        "behind_since": _iso(episode.behind_since),
    }


def _episode_from_dict(data: Mapping[str, Any]) -> EpisodeState:
    severity = data.get("open_severity")
    return EpisodeState(
        streak=int(data.get("streak") or 0),
        open_id=data.get("open_id"),
        open_severity=Severity.parse(severity) if severity else None,
        anchor=_from_iso(data.get("anchor")),
        episodes=int(data.get("episodes") or 0),
        behind_since=_from_iso(data.get("behind_since")),
    )


def event_to_json(event: Event) -> str:
    return json.dumps(
        {
            "id": event.id,
            "tenant": event.tenant,
            "type": event.type.value,
            "severity": event.severity.label,
            "detected_at": event.detected_at.isoformat(),
            "kid": event.kid,
            "old_kid": event.old_kid,
            "new_kid": event.new_kid,
            "details": dict(event.details),
        },
        separators=(",", ":"),
    )


def event_from_json(text: str) -> Event:
    data = json.loads(text)
    return Event(
        id=data["id"],
        tenant=data["tenant"],
        type=EventType(data["type"]),
        severity=Severity.parse(data["severity"]),
        detected_at=datetime.fromisoformat(data["detected_at"]),
        kid=data.get("kid"),
        old_kid=data.get("old_kid"),
        new_kid=data.get("new_kid"),
        details=dict(data.get("details") or {}),
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
