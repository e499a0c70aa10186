"""confirm: when an answer is believed (the property over random glitches is in
test_detect_properties.py; these are the rules one by one)."""

from __future__ import annotations

from monitor.confirm import confirm
from monitor.model import Event, EventType, Snapshot, TenantState
from tests.support.snapshots import STEADY, key, snap

BELIEVED = TenantState.confirmed(STEADY)
GAP = snap(key("A", "previous"), key("B", "unknown"), key("C", "next"), minutes=1)


def types(events: list[Event]) -> list[str]:
    return [event.type.value for event in events]


def polled(
    state: TenantState, *answers: Snapshot, polls: int = 2
) -> tuple[TenantState, list[list[Event]]]:
    """The state after the answers, and the events of each answer in turn."""
    reported = []
    for answer in answers:
        state, events = confirm(state, answer, polls=polls)
        reported.append(events)
    return state, reported


def test_the_first_answer_is_the_baseline() -> None:
    assert confirm(None, GAP) == (TenantState(GAP), [])
    assert confirm(None, STEADY) == (TenantState(STEADY, ("B",)), [])


def test_an_unchanged_answer_keeps_the_state_and_its_time() -> None:
    later = snap(*STEADY.keys.values(), minutes=5)
    assert confirm(BELIEVED, later) == (BELIEVED, [])


def test_an_alarming_answer_waits_for_the_next_poll() -> None:
    state, events = confirm(BELIEVED, GAP)
    assert (events, state.snapshot, state.pending, state.pending_polls) == ([], STEADY, GAP, 1)
    again = snap(*GAP.keys.values(), minutes=2)
    state, events = confirm(state, again)
    assert types(events) == ["tenant.no_current_key", "key.state_changed"]
    assert (state.snapshot, state.pending, state.last_current) == (again, None, ("B",))
    state, events = confirm(state, snap(*STEADY.keys.values(), minutes=3))
    assert types(events) == ["tenant.current_key_restored"]
    assert events[0].kid == "B"


def test_a_glitch_that_ends_raises_nothing_and_clears_the_pending_answer() -> None:
    assert polled(BELIEVED, GAP, snap(*STEADY.keys.values(), minutes=2)) == (BELIEVED, [[], []])


def test_two_different_glitches_in_a_row_confirm_neither() -> None:
    empty = snap(minutes=2)
    _, reported = polled(BELIEVED, GAP, empty, snap(*STEADY.keys.values(), minutes=3))
    assert reported == [[], [], []]


def test_polls_1_believes_every_answer_at_once() -> None:
    _, [events] = polled(BELIEVED, GAP, polls=1)
    assert types(events) == ["tenant.no_current_key", "key.state_changed"]


def test_polls_3_needs_three_answers_in_a_row() -> None:
    answers = [snap(*GAP.keys.values(), minutes=minute) for minute in (1, 2, 3)]
    _, reported = polled(BELIEVED, *answers, polls=3)
    assert [types(events) for events in reported[:2]] == [[], []]
    assert "tenant.no_current_key" in types(reported[2])


def test_a_plain_rotation_is_believed_at_once() -> None:
    rotated = snap(key("A", "previous"), key("B", "previous"), key("C"), key("D", "next"))
    state, events = confirm(BELIEVED, rotated)
    assert types(events) == ["key.rotated", "key.added"]
    assert state == TenantState(rotated, ("C",))


def test_swapped_flags_are_no_rotation() -> None:
    swapped = snap(key("A", "previous"), key("B", "next"), key("C", "current"), minutes=1)
    assert polled(BELIEVED, swapped, STEADY) == (BELIEVED, [[], []])


def test_several_rotations_between_two_polls_wait_for_the_next_poll() -> None:
    twice = snap(
        key("A", "previous"), key("B", "previous"), key("C", "previous"), key("D"), key("E", "next")
    )
    _, (first, second) = polled(BELIEVED, twice, snap(*twice.keys.values(), minutes=2))
    assert first == []
    assert [(e.type, e.old_kid, e.new_kid) for e in second[:1]] == [
        (EventType.KEY_ROTATED, "B", "D")
    ]


def test_a_revocation_is_raised_at_once_even_from_an_alarming_answer() -> None:
    revoked_in_a_gap = snap(key("A", "revoked"), key("B", "unknown"), key("C", "next"), minutes=1)
    state, events = confirm(BELIEVED, revoked_in_a_gap)
    assert types(events) == ["key.revoked"]
    assert state.pending == revoked_in_a_gap
    revoked = snap(key("A", "revoked"), key("B"), key("C", "next"), minutes=2)
    state, again = confirm(state, revoked)
    assert [e.id for e in again] == [e.id for e in events]  # the store drops the repeat
    assert state.pending is None


def test_a_thumbprint_mismatch_is_raised_once_when_confirmed() -> None:
    wrong = snap(key("A", "previous"), key("B", thumbprint="00"), key("C", "next"), minutes=1)
    later = [snap(*wrong.keys.values(), minutes=minute) for minute in (2, 3, 4)]
    state, reported = polled(BELIEVED, wrong, *later)
    assert [types(events) for events in reported] == [[], ["key.thumbprint_mismatch"], [], []]
    assert state.pending is None


def test_a_removal_of_an_unwatched_kid_still_waits_and_is_filtered() -> None:
    removed = snap(key("B"), key("C", "next"), minutes=1)
    state, events = confirm(BELIEVED, removed, kids=["B"])
    assert (events, state.pending) == ([], removed)
    state, events = confirm(state, snap(*removed.keys.values(), minutes=2), kids=["B"])
    assert events == [] and state.pending is None
