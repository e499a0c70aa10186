from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from monitor.detect import diff, is_suspicious, problems, role
from monitor.model import Event, EventType, KeyState, Severity, Snapshot
from tests.support.snapshots import STEADY, T0, TENANT, key, sha1_of, snap


def summary(events: list[Event]) -> list[tuple[str, str | None]]:
    """(type, who) per event, in order: who is the kid, old->new for a rotation, None for a
    tenant invariant."""
    rows: list[tuple[str, str | None]] = []
    for event in events:
        if event.type.value.startswith("tenant."):
            who = None
        elif event.kid:
            who = event.kid
        else:
            who = f"{event.old_kid}->{event.new_kid}"
        rows.append((event.type.value, who))
    return rows


SHA1_B = sha1_of("B")


# --- baseline and no change -----------------------------------------------------------------


def test_baseline_raises_no_events_even_when_broken() -> None:
    assert diff(None, STEADY) == []
    assert diff(None, snap()) == []
    assert diff(None, snap(key("A", "revoked"))) == []


def test_equal_snapshots_yield_nothing_even_at_another_time() -> None:
    assert diff(STEADY, STEADY) == []
    assert diff(STEADY, replace(STEADY, taken_at=T0 + timedelta(hours=5))) == []
    broken = snap(key("A", "previous"))
    assert diff(broken, replace(broken, taken_at=T0 + timedelta(hours=1))) == []


def test_dates_moving_without_flags_moving_is_no_event() -> None:
    later = snap(
        key("A", "previous", current_until=T0),
        key("B", "current", current_since=T0),
        key("C", "next"),
        minutes=1,
    )
    assert diff(STEADY, later) == []


def test_snapshots_of_different_tenants_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="'prod', 'staging'"):
        diff(STEADY, snap(key("B"), tenant="staging"))


# --- one table row per event type ----------------------------------------------------------

CASES: dict[str, tuple[Snapshot, list[tuple[str, str | None]]]] = {
    "rotation": (
        snap(key("A", "previous"), key("B", "previous"), key("C", "current"), key("D", "next")),
        [("key.rotated", "B->C"), ("key.added", "D")],
    ),
    "rotation_and_revoke_of_the_demoted_key": (
        snap(key("A", "previous"), key("B", "revoked"), key("C", "current"), key("D", "next")),
        [("key.rotated", "B->C"), ("key.revoked", "B"), ("key.added", "D")],
    ),
    "two_rotations_between_polls_collapse": (
        snap(
            key("A", "previous"),
            key("B", "previous"),
            key("C", "previous"),
            key("D", "current"),
            key("E", "next"),
        ),
        [("key.rotated", "B->D"), ("key.added", "D"), ("key.added", "E")],
    ),
    "revoke_previous": (
        snap(key("A", "revoked"), key("B", "current"), key("C", "next")),
        [("key.revoked", "A")],
    ),
    "kid_first_seen_already_revoked_is_revoked_only": (
        snap(key("A", "previous"), key("B", "current"), key("C", "next"), key("Z", "revoked")),
        [("key.revoked", "Z")],
    ),
    "key_added": (
        snap(key("A", "previous"), key("B", "current"), key("C", "next"), key("X", "previous")),
        [("key.added", "X")],
    ),
    "key_removed": (
        snap(key("B", "current"), key("C", "next")),
        [("key.removed", "A")],
    ),
    "previous_drops_its_flag": (
        snap(key("A", "unknown"), key("B", "current"), key("C", "next")),
        [("key.state_changed", "A")],
    ),
    "certificate_changed": (
        snap(key("A", "previous"), key("B", "current", cert="other"), key("C", "next")),
        [("key.certificate_changed", "B")],
    ),
    "no_current_key": (
        snap(key("A", "previous"), key("B", "previous"), key("C", "next")),
        [("tenant.no_current_key", None), ("key.state_changed", "B")],
    ),
    "no_next_key": (
        snap(key("A", "previous"), key("B", "current")),
        [("tenant.no_next_key", None), ("key.removed", "C")],
    ),
    "empty_list": (
        snap(),
        [
            ("tenant.no_current_key", None),
            ("tenant.no_next_key", None),
            ("key.removed", "A"),
            ("key.removed", "B"),
            ("key.removed", "C"),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_transition_from_steady_state(name: str) -> None:
    new, expected = CASES[name]
    events = diff(STEADY, replace(new, taken_at=T0 + timedelta(minutes=1)))
    assert summary(events) == expected
    assert all(event.detected_at == T0 + timedelta(minutes=1) for event in events)
    assert all(event.tenant == TENANT for event in events)


def test_rotation_details_and_severity() -> None:
    old = snap(key("A", "current"), key("B", "next"))
    new = snap(
        key("A", "previous", current_until=T0),
        key("B", "current", current_since=T0 + timedelta(seconds=30, microseconds=5)),
        key("C", "next"),
        minutes=1,
    )
    [rotated, added] = diff(old, new)
    assert rotated.type is EventType.KEY_ROTATED
    assert rotated.severity is Severity.WARNING
    assert (rotated.kid, rotated.old_kid, rotated.new_kid) == (None, "A", "B")
    assert rotated.details == {
        "old_thumbprint": sha1_of("A"),
        "new_thumbprint": sha1_of("B"),
        "current_since": "2025-03-01T12:00:30Z",
    }
    assert rotated.summary == "signing key rotated on prod: A -> B"
    assert added.details == {"state": "next", "thumbprint": sha1_of("C")}
    assert added.severity is Severity.INFO


def test_several_current_kids_use_the_sorted_set() -> None:
    old = snap(key("B", "current"), key("A", "current"), key("C", "next"))
    new = snap(key("A", "previous"), key("B", "current"), key("C", "next"), minutes=1)
    [rotated] = diff(old, new)
    assert (rotated.old_kid, rotated.new_kid) == ("A,B", "B")
    assert rotated.details["old_thumbprint"] == f"{sha1_of('A')},{sha1_of('B')}"


def test_the_same_key_flagged_current_again_is_a_restoration_not_a_rotation() -> None:
    gap = snap(key("A", "previous"), key("B", "unknown"), key("C", "next"))
    events = diff(gap, STEADY, last_current=["B"])
    assert summary(events) == [("tenant.current_key_restored", None)]
    [restored] = events
    assert restored.kid == "B" and restored.severity is Severity.INFO
    assert restored.details["last_kids"] == "B"
    assert restored.summary == "current signing key B on prod is flagged current again"


def test_a_gap_that_ends_with_another_key_is_a_rotation_from_the_last_current_key() -> None:
    gap = snap(key("A", "previous"), key("B", "previous"), key("C", "next"))
    recovered = snap(
        key("A", "previous"), key("B", "previous"), key("C", "current"), key("D", "next"), minutes=1
    )
    events = diff(gap, recovered, last_current=["B"])
    assert summary(events) == [
        ("key.rotated", "B->C"),
        ("tenant.current_key_restored", None),
        ("key.added", "D"),
    ]
    assert events[0].details["old_thumbprint"] == SHA1_B
    assert events[0].summary == "signing key rotated on prod: B -> C"


def test_a_gap_of_unknown_origin_ends_without_a_rotation() -> None:
    broken = snap(key("A", "previous"), key("C", "next"))
    recovered = snap(key("A", "previous"), key("C", "current"), key("D", "next"), minutes=1)
    events = diff(broken, recovered)
    assert summary(events) == [("tenant.current_key_restored", None), ("key.added", "D")]
    assert events[0].kid == "C" and "last_kids" not in events[0].details


def test_revocation_details() -> None:
    revoked_at = datetime(2025, 3, 1, 13, 0, 0, 123000, tzinfo=timezone(timedelta(hours=1)))
    new = snap(
        key("A", "revoked", revoked_at=revoked_at), key("B", "current"), key("C", "next"), minutes=1
    )
    [event] = diff(STEADY, new)
    assert event.severity is Severity.CRITICAL
    assert event.details == {
        "old_state": "previous",
        "thumbprint": sha1_of("A"),
        "revoked_at": "2025-03-01T12:00:00Z",
    }
    [unseen] = diff(STEADY, snap(*STEADY.keys.values(), key("Z", "revoked"), minutes=1))
    assert unseen.details["old_state"] == "unseen"


def test_revoked_key_leaving_the_list_is_removed_not_revoked_again() -> None:
    old = snap(key("A", "revoked"), key("B", "current"), key("C", "next"))
    new = snap(key("B", "current"), key("C", "next"), minutes=1)
    [event] = diff(old, new)
    assert (event.type, event.kid, event.details["old_state"]) == (
        EventType.KEY_REMOVED,
        "A",
        "revoked",
    )


def test_unrevoking_is_reported_as_a_state_change() -> None:
    old = snap(key("A", "revoked"), key("B", "current"), key("C", "next"))
    new = snap(key("A", "previous"), key("B", "current"), key("C", "next"), minutes=1)
    [event] = diff(old, new)
    assert event.type is EventType.KEY_STATE_CHANGED
    assert event.details == {"old_state": "revoked", "new_state": "previous"}


def test_state_change_details_and_flag_conflicts() -> None:
    new = snap(key("A", "previous"), key("B", "current+previous"), key("C", "next"), minutes=1)
    [event] = diff(STEADY, new)
    assert event.details == {"old_state": "current", "new_state": "current+previous"}
    assert event.summary == "signing key B on prod moved current -> current+previous"


def test_rotation_does_not_hide_moves_it_does_not_explain() -> None:
    # the rotation explains B (current -> previous) and C (next -> current) but not A losing
    # its previous flag, nor a current key going back to next
    new = snap(key("A", "unknown"), key("B", "previous"), key("C", "current"), key("D", "next"))
    assert summary(diff(STEADY, new)) == [
        ("key.rotated", "B->C"),
        ("key.state_changed", "A"),
        ("key.added", "D"),
    ]
    backwards = snap(key("A", "previous"), key("B", "next"), key("C", "current"))
    assert summary(diff(STEADY, backwards)) == [
        ("key.rotated", "B->C"),
        ("key.state_changed", "B"),
    ]


def test_certificate_change_details_and_alongside_a_state_change() -> None:
    new = snap(
        key("A", "previous"), key("B", "current"), key("C", "previous", cert="new"), minutes=1
    )
    events = diff(STEADY, new)
    assert summary(events) == [
        ("tenant.no_next_key", None),
        ("key.state_changed", "C"),
        ("key.certificate_changed", "C"),
    ]
    assert events[2].details == {
        "old_thumbprint": sha1_of("C"),
        "new_thumbprint": sha1_of("new"),
        "old_cert_sha1": sha1_of("C"),
        "new_cert_sha1": sha1_of("new"),
    }
    assert events[2].severity is Severity.CRITICAL


def test_a_thumbprint_that_disagrees_with_the_certificate_is_a_finding_not_a_change() -> None:
    b = STEADY.keys["B"]
    wrong = replace(b, thumbprint="00" * 20)
    other = snap(key("A", "previous"), wrong, key("C", "next"), minutes=1)
    [finding] = diff(STEADY, other)
    assert summary([finding]) == [("key.thumbprint_mismatch", "B")]
    assert finding.severity is Severity.WARNING
    assert finding.details == {
        "thumbprint": "00" * 20,
        "fingerprint": b.fingerprint,
        "cert_sha1": SHA1_B,
        "state": "current",
    }
    assert diff(other, snap(*other.keys.values(), minutes=2)) == []  # once per episode
    assert diff(other, STEADY) == []  # the end of the episode changes nothing
    lower = snap(
        key("A", "previous"), replace(b, thumbprint=b.thumbprint.lower()), key("C", "next")
    )
    assert diff(STEADY, lower) == []


def test_a_second_mismatch_episode_is_a_new_event() -> None:
    b = STEADY.keys["B"]
    wrong = snap(key("A", "previous"), replace(b, fingerprint="00"), key("C", "next"), minutes=1)
    healed = snap(*STEADY.keys.values(), minutes=2)
    again = snap(*wrong.keys.values(), minutes=3)
    [first] = diff(STEADY, wrong)
    [second] = diff(healed, again)
    assert first.type is second.type is EventType.KEY_THUMBPRINT_MISMATCH
    assert first.id != second.id


def test_certificate_changed_means_a_new_der_sha1_under_the_same_kid() -> None:
    swapped = snap(key("A", "previous"), key("B", "current", cert="B2"), key("C", "next"))
    [event] = diff(STEADY, swapped)
    assert summary([event]) == [("key.certificate_changed", "B")]
    assert (event.details["old_cert_sha1"], event.details["new_cert_sha1"]) == (
        SHA1_B,
        sha1_of("B2"),
    )


def test_invariant_events_are_edge_triggered() -> None:
    broken = snap(key("A", "previous"), key("B", "previous"), key("C", "next"), minutes=1)
    [no_current, _] = diff(STEADY, broken)
    assert no_current.severity is Severity.CRITICAL
    assert no_current.details == {"last_kids": "B", "keys": "A:previous,B:previous,C:next"}
    still_broken = snap(key("A", "previous"), key("C", "next"), minutes=2)
    assert summary(diff(broken, still_broken)) == [("key.removed", "B")]
    [no_next, _] = diff(STEADY, snap(key("A", "previous"), key("B", "current")))
    assert no_next.severity is Severity.WARNING


# --- the kids filter -----------------------------------------------------------------------


def test_kids_filter_limits_per_key_events_not_tenant_events() -> None:
    new = snap(key("A", "revoked"), key("C", "current"), key("D", "next"), key("E", "previous"))
    everything = diff(STEADY, new)
    assert summary(everything) == [
        ("key.rotated", "B->C"),
        ("key.revoked", "A"),
        ("key.removed", "B"),
        ("key.added", "D"),
        ("key.added", "E"),
    ]
    assert summary(diff(STEADY, new, kids=["E", "B"])) == [
        ("key.rotated", "B->C"),
        ("key.removed", "B"),
        ("key.added", "E"),
    ]
    assert summary(diff(STEADY, new, kids={"nobody"})) == [("key.rotated", "B->C")]
    assert summary(diff(STEADY, snap(key("A", "previous")), kids=("Q",))) == [
        ("tenant.no_current_key", None),
        ("tenant.no_next_key", None),
    ]
    filtered = diff(STEADY, new, kids=["E", "B"])
    assert [e.id for e in filtered] == [e.id for e in everything if e.kid in (None, "E", "B")]


# --- ids -----------------------------------------------------------------------------------


def all_case_events() -> list[Event]:
    return [event for new, _ in CASES.values() for event in diff(STEADY, new)]


def test_ids_are_deterministic_across_calls_and_detection_times() -> None:
    for new, _ in CASES.values():
        first = diff(STEADY, new)
        again = diff(STEADY, replace(new, taken_at=new.taken_at + timedelta(days=3)))
        assert [e.id for e in first] == [e.id for e in again]
        assert len(first) == len({e.id for e in first})


def test_ids_are_distinct_across_transitions() -> None:
    # the same transition seen from two rows shares its id; different transitions never do.
    # A kid appears once in its life: first seen as next or as current is the same appearance.
    def transition(e: Event) -> tuple[object, ...]:
        details = {
            k: v for k, v in e.details.items() if (e.type.value, k) != ("key.added", "state")
        }
        return (e.type, e.kid, e.old_kid, e.new_kid, tuple(sorted(details.items())))

    pairs = {(transition(e), e.id) for e in all_case_events()}
    transitions = {what for what, _ in pairs}
    assert len(transitions) > 10
    assert len(transitions) == len({event_id for _, event_id in pairs}) == len(pairs)


def test_ids_depend_on_the_tenant() -> None:
    one = diff(STEADY, CASES["rotation"][0])
    other = diff(replace(STEADY, tenant="staging"), replace(CASES["rotation"][0], tenant="staging"))
    assert one[0].id != other[0].id


def test_second_breakage_after_recovery_gets_a_new_id() -> None:
    healthy = snap(key("A", "current"), key("B", "next"))
    broken = snap(key("A", "current"), minutes=1)
    recovered = snap(key("A", "current"), key("B", "next"), minutes=2)
    broken_again = snap(key("A", "current"), minutes=3)
    [first, _] = diff(healthy, broken)
    [second, _] = diff(recovered, broken_again)
    assert first.type is second.type is EventType.TENANT_NO_NEXT_KEY
    assert first.id != second.id
    # ... but detecting the same breakage again (a failed commit, a restart) keeps the id
    [retried, _] = diff(healthy, replace(broken, taken_at=T0 + timedelta(minutes=5)))
    assert retried.id == first.id


def test_old_snapshot_time_is_read_in_utc_whatever_the_zone() -> None:
    healthy = snap(key("A", "current"), key("B", "next"))
    shifted = replace(healthy, taken_at=T0.astimezone(timezone(timedelta(hours=-5))))
    broken = snap(key("A", "current"), minutes=1)
    assert [e.id for e in diff(healthy, broken)] == [e.id for e in diff(shifted, broken)]


def test_flapping_rotation_gets_a_new_id_when_current_since_moves() -> None:
    a_then_b = diff(
        snap(key("A", "current"), key("B", "next")),
        snap(key("A", "next"), key("B", "current", current_since=T0)),
    )
    b_again = diff(
        snap(key("A", "current", current_since=T0), key("B", "next")),
        snap(key("A", "next"), key("B", "current", current_since=T0 + timedelta(hours=1))),
    )
    assert a_then_b[0].new_kid == b_again[0].new_kid == "B"
    assert a_then_b[0].id != b_again[0].id


# --- role, problems, is_suspicious ---------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("current", "current"),
        ("next", "next"),
        ("previous", "previous"),
        ("unknown", "unknown"),
        ("current+previous", "current+previous"),
        ("previous+revoked", "revoked"),
    ],
)
def test_role(state: str, expected: str) -> None:
    assert role(key("K", state)) == expected


def test_problems_of_a_healthy_tenant() -> None:
    assert problems(STEADY) == []


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ((), ["no signing keys listed"]),
        ((key("A", "previous"), key("C", "next")), ["no current key"]),
        ((key("B"),), ["no next key"]),
        (
            (key("B"), key("A"), key("C", "next")),
            ["more than one current key: A, B"],
        ),
        (
            (key("B"), key("C", "next"), key("D", "next")),
            ["more than one next key: C, D"],
        ),
        (
            (key("B", thumbprint="AB" * 20), key("C", "next")),
            [f"key B: thumbprint {'AB' * 20} does not match its certificate (SHA-1 {SHA1_B})"],
        ),
        (
            (key("B", fingerprint="AB:CD"), key("C", "next")),
            [f"key B: fingerprint AB:CD does not match its certificate (SHA-1 {SHA1_B})"],
        ),
        (
            (key("B"), key("C", "next"), key("R", "revoked+current")),
            ["key R: revoked but still flagged current"],
        ),
        (
            (key("B", "current+next"),),
            ["no next key", "key B: flagged current and next at once"],
        ),
        (
            (key("B", not_after=T0), key("C", "next", not_after=T0 + timedelta(days=1))),
            ["key B (current): certificate expired at 2025-03-01T12:00:00Z"],
        ),
        (
            (key("B"), key("C", "next"), key("R", "revoked", not_after=T0 - timedelta(days=9))),
            [],
        ),
    ],
)
def test_problems(keys: tuple[KeyState, ...], expected: list[str]) -> None:
    assert problems(snap(*keys)) == expected


def test_thumbprint_case_is_not_a_problem() -> None:
    b = key("B")
    assert problems(snap(replace(b, thumbprint=b.thumbprint.lower()), key("C", "next"))) == []


@pytest.mark.parametrize(
    ("keys", "suspicious"),
    [
        ((), True),
        ((key("A", "previous"), key("C", "next")), True),
        ((key("A", "revoked+current"), key("C", "next")), True),
        ((key("B"),), False),
        (tuple(STEADY.keys.values()), False),
    ],
)
def test_is_suspicious(keys: tuple[KeyState, ...], suspicious: bool) -> None:
    assert is_suspicious(snap(*keys)) is suspicious
