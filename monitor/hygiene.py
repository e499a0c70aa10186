"""Expiry and rotation hygiene: standing conditions of a tenant's keys at a moment. No I/O.

``findings(snapshot, now, policy)`` lists every condition that holds at ``now`` for the
confirmed snapshot, each as an event with a deterministic id:

- ``key.expiring``: the certificate of a current or next key ends within a warning window
  (default 30 and 7 days). Only the narrowest window the key is inside is a finding, so a key
  first seen 5 days before its end raises the 7-day warning only, never the 30-day one too.
  The id is (kid, certificate, window): a new certificate under the same kid starts over.
- ``key.previous_unrevoked``: a previous key not revoked ``previous_unrevoked_after`` after it
  stopped being current (Auth0's ``current_until``; a key without one is not judged). Off by
  default.
- ``tenant.rotation_overdue``: the current key has been current (``current_since``) longer than
  ``rotation_overdue_after``. Off by default.

``check(state, alerted=..., now=..., policy=...)`` raises the findings whose ids are not in
``alerted`` (the findings raised before, kept in ``TenantState.alerted`` and so in the store)
and returns the state with ``alerted`` set to the findings of now: each finding is raised once
while it holds, and a restart or another replica reading the stored state raises nothing again
(a repeat would also be recognised by its id in the store). The first poll of a tenant raises
what already holds, once each.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from monitor.clock import span, utc
from monitor.model import Event, EventType, KeyState, Snapshot, TenantState, make_event

DAY = 86400.0
DEFAULT_EXPIRY_WARNINGS = (30 * DAY, 7 * DAY)


@dataclass(frozen=True, slots=True)
class HygienePolicy:
    """What to judge; durations in seconds, ``None`` for a check that is off."""

    expiry_warnings: tuple[float, ...] = DEFAULT_EXPIRY_WARNINGS
    previous_unrevoked_after: float | None = None
    rotation_overdue_after: float | None = None


def check(
    state: TenantState,
    *,
    alerted: frozenset[str],
    now: datetime,
    policy: HygienePolicy,
    kids: Collection[str] = (),
) -> tuple[TenantState, list[Event]]:
    """The state with ``alerted`` updated, and the findings not raised before."""
    found = findings(state.snapshot, now=now, policy=policy, kids=kids)
    new = [event for event in found if event.id not in alerted]
    now_alerted = frozenset(event.id for event in found)
    if now_alerted == state.alerted:  # no finding, most often: no copy
        return state, new
    return replace(state, alerted=now_alerted), new


def findings(
    snapshot: Snapshot, *, now: datetime, policy: HygienePolicy, kids: Collection[str] = ()
) -> list[Event]:
    """Every condition that holds at ``now``; ``kids``, when not empty, limits the per-key
    findings (expiry, previous unrevoked) to those kids."""
    watched = frozenset(kids)
    events: list[Event] = []
    for kid in sorted(snapshot.keys):
        key = snapshot.keys[kid]
        if watched and kid not in watched:
            continue
        expiring = _expiring(snapshot.tenant, key, now, policy.expiry_warnings)
        unrevoked = _previous_unrevoked(snapshot.tenant, key, now, policy.previous_unrevoked_after)
        events += [event for event in (expiring, unrevoked) if event is not None]
    for kid in snapshot.current_kids:
        overdue = _rotation_overdue(
            snapshot.tenant, snapshot.keys[kid], now, policy.rotation_overdue_after
        )
        if overdue is not None:
            events.append(overdue)
    return events


def narrowest_window(remaining: float, windows: Collection[float]) -> float | None:
    """The smallest window ``remaining`` seconds are inside, or None."""
    inside = [window for window in windows if remaining <= window]
    return min(inside) if inside else None


def _expiring(
    tenant: str, key: KeyState, now: datetime, windows: Collection[float]
) -> Event | None:
    if key.not_after is None or not (key.current or key.next) or key.revoked:
        return None
    remaining = (utc(key.not_after) - utc(now)).total_seconds()
    window = narrowest_window(remaining, windows)
    if window is None:
        return None
    return make_event(
        tenant,
        EventType.KEY_EXPIRING,
        now,
        _material(kid=key.kid, cert=key.cert_sha1, window=window),
        kid=key.kid,
        details={
            "state": key.state,
            "not_after": _display(key.not_after),
            "expires_in": span(remaining, tenths_below=0) if remaining > 0 else "0s (expired)",
            "window": span(window, tenths_below=0),
            "thumbprint": key.thumbprint,
        },
    )


def _previous_unrevoked(
    tenant: str, key: KeyState, now: datetime, limit: float | None
) -> Event | None:
    if limit is None or key.state != "previous" or key.current_until is None:
        return None
    return _too_old(
        tenant, key, now, limit, EventType.KEY_PREVIOUS_UNREVOKED, "until", key.current_until
    )


def _rotation_overdue(
    tenant: str, key: KeyState, now: datetime, limit: float | None
) -> Event | None:
    if limit is None or key.current_since is None:
        return None
    return _too_old(
        tenant, key, now, limit, EventType.TENANT_ROTATION_OVERDUE, "since", key.current_since
    )


def _too_old(
    tenant: str,
    key: KeyState,
    now: datetime,
    limit: float,
    event_type: EventType,
    which: str,
    moment: datetime,
) -> Event | None:
    """The event for ``key`` when ``moment`` (its ``current_until`` or ``current_since``, named
    by ``which`` in the id and the details) lies ``limit`` seconds or more before ``now``."""
    age = _seconds_since(moment, now)
    if age < limit:
        return None
    return make_event(
        tenant,
        event_type,
        now,
        _material(kid=key.kid, **{which: _instant(moment)}),
        kid=key.kid,
        details={
            f"current_{which}": _display(moment),
            "age": span(age, tenths_below=0),
            "limit": span(limit, tenths_below=0),
            "thumbprint": key.thumbprint,
        },
    )


def _seconds_since(moment: datetime, now: datetime) -> float:
    return (utc(now) - utc(moment)) / timedelta(seconds=1)


def _material(**parts: object) -> list[str]:
    return [json.dumps(parts, sort_keys=True, separators=(",", ":"))]


def _instant(moment: datetime) -> str:
    return utc(moment).isoformat(timespec="microseconds")


def _display(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
