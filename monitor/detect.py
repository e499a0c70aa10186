"""Change detection: what changed between two snapshots of one tenant, as events. No I/O.

``diff(old, new)`` compares the last confirmed snapshot of a tenant with a new poll
(``monitor.confirm`` decides when an answer is believed):

- ``old is None`` is the baseline: no events at all.
- tenant level (never filtered by ``kids``): ``key.rotated`` when the current kid changed from
  one real kid to another (``last_current`` names the kid current before a gap with no current
  key); ``tenant.no_current_key`` / ``tenant.no_next_key`` when the invariant held in ``old``
  and is broken in ``new`` (edge-triggered: once per breakage); ``tenant.current_key_restored``
  when a gap with no current key ends.
- per kid: ``key.added``, ``key.removed``, ``key.revoked`` (a kid first seen already revoked is
  reported as revoked only), ``key.state_changed`` for flag moves that no rotation, revocation
  or restoration explains, ``key.certificate_changed`` for a new certificate (DER SHA-1) under
  the same kid, ``key.thumbprint_mismatch`` when the reported thumbprint or fingerprint stops
  matching the certificate (a finding, not a change: once per episode).

Event ids are deterministic, so detecting the same change again (a failed commit, a restart)
yields the same ids and the store ignores the repeat. One-way lifecycle steps of a kid
(rotated to, revoked, added, removed, certificate replaced) are identified by content alone.
Conditions that can come and go (``key.state_changed``, ``key.thumbprint_mismatch`` and the
tenant invariants) also carry the time of ``old``, so a second breakage after a recovery is a
new event. This relies on ``old`` being the confirmed snapshot the store kept, passed back
unmodified.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from monitor.clock import utc
from monitor.model import Event, EventType, KeyState, Snapshot, make_event

NEEDS_CONFIRMATION = frozenset(
    {
        EventType.KEY_REMOVED,
        EventType.KEY_STATE_CHANGED,
        EventType.KEY_THUMBPRINT_MISMATCH,
        EventType.TENANT_NO_CURRENT_KEY,
        EventType.TENANT_NO_NEXT_KEY,
    }
)
"""Events that a brief inconsistent answer can produce: ``monitor.confirm`` raises them only
once the answer persists."""

# --- describing keys ------------------------------------------------------------------------


def role(key: KeyState) -> str:
    """The key's flags in one word: ``revoked`` wins; otherwise the set flags joined by ``+``
    (``current``, ``next``, ``previous``; ``current+previous`` for a conflict) or ``unknown``.

    Unlike ``KeyState.state`` it shows every flag, so a flag that moves is never hidden.
    """
    if key.revoked:
        return "revoked"
    flags = [
        name
        for name, is_set in (
            ("current", key.current),
            ("next", key.next),
            ("previous", key.previous),
        )
        if is_set
    ]
    return "+".join(flags) or "unknown"


def _keys_by_role(snapshot: Snapshot) -> str:
    """``kid:role`` of every key, sorted: the whole state of a tenant in one string."""
    return ",".join(f"{kid}:{role(snapshot.keys[kid])}" for kid in sorted(snapshot.keys))


def _instant(moment: datetime) -> str:
    """Id material: one canonical string per instant, whatever zone the store handed back."""
    return utc(moment).isoformat(timespec="microseconds")


def _display(moment: datetime) -> str:
    """A datetime for people and payloads: UTC to the second."""
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _joined(values: Sequence[str]) -> str | None:
    return ",".join(values) or None


def _transition(**parts: object) -> list[str]:
    """Id material for ``make_event``: canonical JSON, so no kid can blur two parts together."""
    return [json.dumps(parts, sort_keys=True, separators=(",", ":"))]


def _certificate_differs(before: KeyState, after: KeyState) -> bool:
    return before.cert_sha1 != after.cert_sha1


# --- the change between two snapshots -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Change:
    old: Snapshot
    new: Snapshot
    last_current: tuple[str, ...] = ()

    @property
    def old_current(self) -> list[str]:
        """The current kids before ``new``: those of ``old``, or of the last snapshot that had
        one when ``old`` is a gap."""
        return self.old.current_kids or list(self.last_current)

    @property
    def tenant(self) -> str:
        return self.new.tenant

    @property
    def detected_at(self) -> datetime:
        return self.new.taken_at

    @property
    def rotated(self) -> bool:
        old_current = self.old_current
        return bool(self.new.current_kids and old_current) and old_current != self.new.current_kids

    @property
    def restored(self) -> bool:
        """A gap with no current key ended (with the same key or another)."""
        return not self.old.current_kids and bool(self.new.current_kids)

    def explained(self, kid: str, old_role: str, new_role: str) -> bool:
        """True for the flag moves a rotation makes: next -> current -> previous (possibly
        several rotations between two polls: next -> previous), and for the key a restoration
        flags current again."""
        if self.restored and kid in self.new.current_kids:
            return True  # named by tenant.current_key_restored
        if not self.rotated:
            return False
        was_current = kid in self.old_current
        is_current = kid in self.new.current_kids
        if is_current and not was_current:
            return True  # named as new_kid by key.rotated
        if was_current and not is_current:
            return new_role == "previous"
        return old_role == "next" and new_role == "previous"

    def event(
        self,
        event_type: EventType,
        transition: list[str],
        *,
        kid: str | None = None,
        old_kid: str | None = None,
        new_kid: str | None = None,
        details: dict[str, str] | None = None,
    ) -> Event:
        return make_event(
            self.tenant,
            event_type,
            self.detected_at,
            transition,
            kid=kid,
            old_kid=old_kid,
            new_kid=new_kid,
            details=details,
        )


def diff(
    old: Snapshot | None,
    new: Snapshot,
    *,
    kids: Collection[str] = (),
    last_current: Sequence[str] = (),
) -> list[Event]:
    """Events for what changed from ``old`` (the last confirmed snapshot) to ``new``.

    ``kids``, when not empty, limits the per-key events to those kids. ``last_current`` names
    the current kids last confirmed, for an ``old`` with none. Order: key.rotated,
    tenant.current_key_restored, tenant.no_current_key, tenant.no_next_key, then per kid
    (sorted): the lifecycle event (added / removed / revoked / state_changed) before
    key.certificate_changed and key.thumbprint_mismatch.
    """
    if old is None:
        return []
    if old.tenant != new.tenant:
        raise ValueError(f"diff: snapshots of different tenants: {old.tenant!r}, {new.tenant!r}")
    change = _Change(old, new, tuple(last_current))
    tenant_events = [
        _rotation(change),
        _restored(change),
        _no_current_key(change),
        _no_next_key(change),
    ]
    events = [event for event in tenant_events if event is not None]
    watched = frozenset(kids)
    for kid in sorted(old.keys.keys() | new.keys.keys()):
        if not watched or kid in watched:
            events.extend(_key_events(change, kid, old.keys.get(kid), new.keys.get(kid)))
    return events


def _rotation(change: _Change) -> Event | None:
    if not change.rotated:
        return None
    old_kids, new_kids = change.old_current, change.new.current_kids
    new_keys = [change.new.keys[kid] for kid in new_kids]
    details = {"new_thumbprint": ",".join(key.thumbprint for key in new_keys)}
    old_keys = [change.old.keys[kid] for kid in old_kids if kid in change.old.keys]
    if old_keys:
        details["old_thumbprint"] = ",".join(key.thumbprint for key in old_keys)
    since_moments = [key.current_since for key in new_keys if key.current_since]
    if since_moments:
        details["current_since"] = ",".join(_display(moment) for moment in since_moments)
    since = [_instant(moment) for moment in since_moments]
    return change.event(
        EventType.KEY_ROTATED,
        # current_since tells a second rotation to the same kid (a flap) from the first
        _transition(old=old_kids, new=new_kids, since=since),
        old_kid=_joined(old_kids),
        new_kid=_joined(new_kids),
        details=details,
    )


def _restored(change: _Change) -> Event | None:
    if not change.restored:
        return None
    new_kids = change.new.current_kids
    details = {"keys": _keys_by_role(change.new)}
    if change.last_current:
        details["last_kids"] = ",".join(change.last_current)
    return change.event(
        EventType.TENANT_CURRENT_KEY_RESTORED,
        _transition(gap_since=_instant(change.old.taken_at), new=new_kids),
        kid=",".join(new_kids),
        details=details,
    )


def _no_current_key(change: _Change) -> Event | None:
    if not change.old.current_kids or change.new.current_kids:
        return None
    return _invariant_broken(
        change, EventType.TENANT_NO_CURRENT_KEY, last_kids=change.old.current_kids
    )


def _no_next_key(change: _Change) -> Event | None:
    if not change.old.next_kids or change.new.next_kids:
        return None
    return _invariant_broken(change, EventType.TENANT_NO_NEXT_KEY, last_kids=change.old.next_kids)


def _invariant_broken(change: _Change, event_type: EventType, *, last_kids: list[str]) -> Event:
    keys = _keys_by_role(change.new)
    return change.event(
        event_type,
        _transition(held_at=_instant(change.old.taken_at), old=_keys_by_role(change.old), new=keys),
        details={"last_kids": ",".join(last_kids), "keys": keys},
    )


def _key_events(
    change: _Change, kid: str, before: KeyState | None, after: KeyState | None
) -> list[Event]:
    if after is None:
        assert before is not None  # kid comes from the union of both snapshots
        return [_removed(change, before)]
    if before is None:
        first = _revoked(change, after, old_role=None) if after.revoked else _added(change, after)
        return [first] if after.thumbprint_ok else [first, _thumbprint_mismatch(change, after)]
    events: list[Event] = []
    old_role, new_role = role(before), role(after)
    if new_role == "revoked" and old_role != "revoked":
        events.append(_revoked(change, after, old_role=old_role))
    elif old_role != new_role and not change.explained(kid, old_role, new_role):
        events.append(_state_changed(change, kid, old_role, new_role))
    if _certificate_differs(before, after):
        events.append(_certificate_changed(change, before, after))
    if before.thumbprint_ok and not after.thumbprint_ok:
        events.append(_thumbprint_mismatch(change, after))
    return events


def _added(change: _Change, key: KeyState) -> Event:
    return change.event(
        EventType.KEY_ADDED,
        _transition(kid=key.kid, cert=key.cert_sha1),
        kid=key.kid,
        details={"state": role(key), "thumbprint": key.thumbprint},
    )


def _removed(change: _Change, key: KeyState) -> Event:
    return change.event(
        EventType.KEY_REMOVED,
        _transition(kid=key.kid, cert=key.cert_sha1),
        kid=key.kid,
        details={"old_state": role(key), "thumbprint": key.thumbprint},
    )


def _revoked(change: _Change, key: KeyState, *, old_role: str | None) -> Event:
    # Revocation is final, so the kid alone identifies it: one event per kid, ever.
    details = {"old_state": old_role or "unseen", "thumbprint": key.thumbprint}
    if key.revoked_at:
        details["revoked_at"] = _display(key.revoked_at)
    return change.event(
        EventType.KEY_REVOKED, _transition(kid=key.kid), kid=key.kid, details=details
    )


def _state_changed(change: _Change, kid: str, old_role: str, new_role: str) -> Event:
    return change.event(
        EventType.KEY_STATE_CHANGED,
        _transition(kid=kid, old=old_role, new=new_role, since=_instant(change.old.taken_at)),
        kid=kid,
        details={"old_state": old_role, "new_state": new_role},
    )


def _certificate_changed(change: _Change, before: KeyState, after: KeyState) -> Event:
    return change.event(
        EventType.KEY_CERTIFICATE_CHANGED,
        _transition(kid=after.kid, old=before.cert_sha1, new=after.cert_sha1),
        kid=after.kid,
        details={
            "old_thumbprint": before.thumbprint,
            "new_thumbprint": after.thumbprint,
            "old_cert_sha1": before.cert_sha1,
            "new_cert_sha1": after.cert_sha1,
        },
    )


def _thumbprint_mismatch(change: _Change, key: KeyState) -> Event:
    return change.event(
        EventType.KEY_THUMBPRINT_MISMATCH,
        _transition(
            kid=key.kid,
            cert=key.cert_sha1,
            thumbprint=key.thumbprint,
            fingerprint=key.fingerprint,
            since=_instant(change.old.taken_at),
        ),
        kid=key.kid,
        details={
            "thumbprint": key.thumbprint,
            "fingerprint": key.fingerprint,
            "cert_sha1": key.cert_sha1,
            "state": role(key),
        },
    )


# --- checks on one snapshot -----------------------------------------------------------------


def anomalies(snapshot: Snapshot) -> frozenset[str]:
    """What is inconsistent in one answer (``problems`` without certificate expiry, which is a
    fact, not a misreport): an answer with a new one is believed only once confirmed."""
    if not snapshot.keys:
        return frozenset({"no signing keys listed"})
    lines = [*_count_problems("current", snapshot.current_kids)]
    lines += _count_problems("next", snapshot.next_kids)
    for kid in sorted(snapshot.keys):
        lines += _key_anomalies(snapshot.keys[kid])
    return frozenset(lines)


def is_suspicious(snapshot: Snapshot) -> bool:
    """An answer the poller fetches once more before believing: no keys, or no current key."""
    return not snapshot.keys or not snapshot.current_kids


def problems(snapshot: Snapshot) -> list[str]:
    """What is wrong with a tenant's keys right now, one human line each (no tenant prefix).

    Certificate expiry is judged at ``snapshot.taken_at``.
    """
    if not snapshot.keys:
        return ["no signing keys listed"]
    lines = [*_count_problems("current", snapshot.current_kids)]
    lines += _count_problems("next", snapshot.next_kids)
    for kid in sorted(snapshot.keys):
        lines += _key_anomalies(snapshot.keys[kid])
        lines += _expiry_problems(snapshot.keys[kid], now=snapshot.taken_at)
    return lines


def _count_problems(state: str, kids: list[str]) -> list[str]:
    if not kids:
        return [f"no {state} key"]
    if len(kids) > 1:
        return [f"more than one {state} key: {', '.join(kids)}"]
    return []


def _key_anomalies(key: KeyState) -> list[str]:
    lines: list[str] = []
    if key.thumbprint.upper() != key.cert_sha1:
        lines.append(
            f"key {key.kid}: thumbprint {key.thumbprint} does not match its certificate "
            f"(SHA-1 {key.cert_sha1})"
        )
    if key.fingerprint.replace(":", "").upper() != key.cert_sha1:
        lines.append(
            f"key {key.kid}: fingerprint {key.fingerprint} does not match its certificate "
            f"(SHA-1 {key.cert_sha1})"
        )
    active = [name for name, is_set in (("current", key.current), ("next", key.next)) if is_set]
    if key.revoked and active:
        lines.append(f"key {key.kid}: revoked but still flagged {' and '.join(active)}")
    elif "+" in role(key):
        lines.append(f"key {key.kid}: flagged {role(key).replace('+', ' and ')} at once")
    return lines


def _expiry_problems(key: KeyState, *, now: datetime) -> list[str]:
    if not key.revoked and key.not_after is not None and key.not_after <= now:
        return [f"key {key.kid} ({key.state}): certificate expired at {_display(key.not_after)}"]
    return []
