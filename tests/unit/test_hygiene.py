"""Expiry and rotation hygiene (monitor.hygiene): pure functions of a state and a moment."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from monitor.clock import span
from monitor.hygiene import DAY, HygienePolicy, check, findings, narrowest_window
from monitor.model import (
    Event,
    EventType,
    TenantState,
    confirmation_to_json,
    tenant_state_from_json,
)
from tests.support.snapshots import T0, key, snap

EXPIRING = snap(
    key("A", "previous"),
    key("B", not_after=T0 + timedelta(days=40)),
    key("C", "next", not_after=T0 + timedelta(days=400)),
)


DEFAULT_POLICY = HygienePolicy()


def poll_at(
    state: TenantState, days: float, policy: HygienePolicy = DEFAULT_POLICY
) -> tuple[TenantState, list[Event]]:
    return check(state, alerted=state.alerted, now=T0 + timedelta(days=days), policy=policy)


def test_each_window_fires_once_and_nothing_outside_them() -> None:
    state = TenantState.confirmed(EXPIRING)
    raised: list[tuple[float, Event]] = []
    for day in range(45):
        state, events = poll_at(state, day)
        raised += [(day, event) for event in events]
    assert [(day, e.type, e.kid, e.details["window"]) for day, e in raised] == [
        (10, EventType.KEY_EXPIRING, "B", "30d"),
        (33, EventType.KEY_EXPIRING, "B", "7d"),
    ]
    assert raised[0][1].details["not_after"] == "2025-04-10T12:00:00Z"
    assert raised[0][1].details["expires_in"] == "30d"


def test_a_key_first_seen_inside_the_narrow_window_raises_only_that_one() -> None:
    state, events = poll_at(TenantState.confirmed(EXPIRING), 35)
    assert [(e.kid, e.details["window"]) for e in events] == [("B", "7d")]
    _, again = poll_at(state, 36)
    assert again == []


def test_an_expired_certificate_still_warns_once() -> None:
    _, events = poll_at(TenantState.confirmed(EXPIRING), 41)
    assert [(e.kid, e.details["expires_in"]) for e in events] == [("B", "0s (expired)")]


def test_previous_revoked_keys_and_no_windows_are_never_expiring() -> None:
    old = snap(
        key("A", "previous", not_after=T0),
        key("R", "revoked", not_after=T0),
        key("B", not_after=T0 + timedelta(days=400)),
    )
    assert findings(old, now=T0, policy=HygienePolicy()) == []
    assert findings(EXPIRING, now=T0 + timedelta(days=39), policy=HygienePolicy(())) == []


def test_a_new_certificate_under_the_same_kid_warns_again() -> None:
    state, [first] = poll_at(TenantState.confirmed(EXPIRING), 35)
    renewed = snap(
        key("A", "previous"),
        key("B", cert="B2", not_after=T0 + timedelta(days=40)),
        key("C", "next"),
    )
    _, [second] = poll_at(TenantState(renewed, alerted=state.alerted), 35)
    assert first.id != second.id


def test_what_was_raised_survives_the_store_round_trip() -> None:
    state, events = poll_at(TenantState.confirmed(EXPIRING), 35)
    assert events
    stored = tenant_state_from_json(state.snapshot, confirmation_to_json(state))
    assert stored == state
    assert poll_at(stored, 35)[1] == []


def test_the_ids_do_not_depend_on_when_the_condition_was_seen() -> None:
    _, [early] = poll_at(TenantState.confirmed(EXPIRING), 34)
    _, [late] = poll_at(TenantState.confirmed(EXPIRING), 38)
    assert early.id == late.id  # a replica or a restart that sees it later makes no new event


# --- previous unrevoked and rotation overdue -------------------------------------------------

AGING = snap(
    key("A", "previous", current_until=T0 - timedelta(days=3)),
    key("B", current_since=T0 - timedelta(days=3), not_after=T0 + timedelta(days=900)),
    key("C", "next", not_after=T0 + timedelta(days=900)),
)


def test_previous_unrevoked_and_rotation_overdue_are_off_by_default() -> None:
    assert findings(AGING, now=T0 + timedelta(days=365), policy=HygienePolicy()) == []


def test_previous_unrevoked_fires_once_past_its_age() -> None:
    policy = HygienePolicy(previous_unrevoked_after=7 * DAY)
    state = TenantState.confirmed(AGING)
    state, early = poll_at(state, 3.9, policy)
    state, due = poll_at(state, 4, policy)
    state, later = poll_at(state, 20, policy)
    assert early == [] and later == []
    [event] = due
    assert (event.type, event.kid, event.details["age"], event.details["limit"]) == (
        EventType.KEY_PREVIOUS_UNREVOKED,
        "A",
        "7d",
        "7d",
    )


def test_rotation_overdue_fires_once_per_current_key() -> None:
    policy = HygienePolicy(rotation_overdue_after=90 * DAY)
    state, early = poll_at(TenantState.confirmed(AGING), 86, policy)
    state, [overdue] = poll_at(state, 87, policy)
    assert early == [] and poll_at(state, 100, policy)[1] == []
    assert (overdue.type, overdue.kid, overdue.details["age"]) == (
        EventType.TENANT_ROTATION_OVERDUE,
        "B",
        "90d",
    )
    rotated = snap(
        key("A", "previous", current_until=T0 + timedelta(days=100)),
        key("B", "previous", current_until=T0 + timedelta(days=100)),
        key("C", current_since=T0 + timedelta(days=100)),
    )
    assert poll_at(TenantState(rotated, alerted=state.alerted), 101, policy)[1] == []


def test_keys_without_dates_are_not_judged() -> None:
    undated = snap(key("A", "previous"), key("B"), key("C", "next"))
    policy = HygienePolicy((), previous_unrevoked_after=1.0, rotation_overdue_after=1.0)
    assert findings(undated, now=T0 + timedelta(days=999), policy=policy) == []


def test_watched_kids_limit_the_per_key_findings() -> None:
    policy = HygienePolicy(previous_unrevoked_after=DAY, rotation_overdue_after=DAY)
    found = findings(AGING, now=T0 + timedelta(days=899), policy=policy, kids=["C"])
    assert sorted((e.type.value, e.kid) for e in found) == [
        ("key.expiring", "C"),
        ("tenant.rotation_overdue", "B"),
    ]


# --- property: polled at random moments, each window fires once, in order ---------------------

windows = st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=4, unique=True).map(
    lambda days: tuple(sorted((d * DAY for d in days), reverse=True))
)
moments = st.lists(st.floats(min_value=0, max_value=80), min_size=1, max_size=30).map(sorted)


@given(windows=windows, moments=moments)
def test_polled_at_any_moments_each_window_fires_at_most_once(
    windows: tuple[float, ...], moments: list[float]
) -> None:
    policy = HygienePolicy(expiry_warnings=windows)
    not_after = EXPIRING.keys["B"].not_after
    assert not_after is not None
    state = TenantState.confirmed(EXPIRING)
    fired: list[float] = []
    inside: list[float] = []
    for day in moments:
        now = T0 + timedelta(days=day)
        state, events = check(state, alerted=state.alerted, now=now, policy=policy)
        window = narrowest_window((not_after - now).total_seconds(), windows)
        assert len(events) <= 1
        if window is None:
            assert events == []
            continue
        inside.append(window)
        if events:
            [event] = events
            assert (event.kid, event.details["window"]) == ("B", span(window, tenths_below=0))
            fired.append(window)
    # each window the polls saw fires exactly once, at the first poll inside it, widest first
    assert fired == sorted(set(inside), reverse=True)
