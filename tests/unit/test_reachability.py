"""Unreachable tenants (monitor.reachability): runs of failed polls as outages. Pure."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from monitor.model import Event, EventType
from monitor.reachability import (
    Reachability,
    after_failure,
    after_success,
    reachability_from_json,
    reachability_to_json,
)
from tests.support.snapshots import T0, TENANT


def run(outcomes: str, *, threshold: int = 3) -> tuple[Reachability, list[Event]]:
    """Polls one minute apart: ``x`` fails, ``.`` succeeds."""
    state, raised = Reachability(TENANT), []
    for minute, outcome in enumerate(outcomes):
        at = T0 + timedelta(minutes=minute)
        if outcome == "x":
            state, events = after_failure(
                state, reason="http_5xx", error="HTTP 503 from the API", at=at, threshold=threshold
            )
        else:
            state, events = after_success(state, at=at)
        raised += events
    return state, raised


def test_the_third_failure_in_a_row_raises_unreachable_once() -> None:
    state, [event] = run("xxxxxx")
    assert event.type is EventType.TENANT_UNREACHABLE
    assert event.detected_at == T0 + timedelta(minutes=2)
    assert dict(event.details) == {
        "reason": "http_5xx",
        "error": "HTTP 503 from the API",
        "failures": "3",
        "down_since": "2025-03-01T12:00:00Z",
    }
    assert (state.failures, state.announced) == (6, True)


def test_success_after_an_outage_raises_recovered_once() -> None:
    state, [down, up] = run("xxxx..")
    assert (down.type, up.type) == (EventType.TENANT_UNREACHABLE, EventType.TENANT_RECOVERED)
    assert up.details["downtime"] == "4m" and up.details["failures"] == "4"
    assert state == Reachability(TENANT)


def test_fewer_failures_than_the_threshold_raise_nothing() -> None:
    state, events = run("xx.xx.x")
    assert events == []
    assert (state.failures, state.since) == (1, T0 + timedelta(minutes=6))


def test_two_outages_have_their_own_ids() -> None:
    _, events = run("xxx.xxx.")
    assert [e.type.value for e in events] == [
        "tenant.unreachable",
        "tenant.recovered",
        "tenant.unreachable",
        "tenant.recovered",
    ]
    assert len({e.id for e in events}) == 4


def test_a_restart_mid_outage_continues_the_count_from_the_store() -> None:
    state, _ = run("xx")
    stored = reachability_from_json(TENANT, reachability_to_json(state))
    assert stored == state
    _, [event] = after_failure(stored, reason="timeout", error="", at=T0, threshold=3)
    assert event.details["error"] == "timeout"  # an empty message falls back to the reason
    assert event.id == run("xxx")[1][0].id  # same outage, same id, whichever process saw it


def test_threshold_one_raises_at_the_first_failure() -> None:
    assert [e.type for e in run("x.", threshold=1)[1]] == [
        EventType.TENANT_UNREACHABLE,
        EventType.TENANT_RECOVERED,
    ]


@given(outcomes=st.text(alphabet="x.", max_size=40), threshold=st.integers(1, 5))
def test_each_outage_raises_exactly_one_unreachable_and_one_recovered(
    outcomes: str, threshold: int
) -> None:
    _, events = run(outcomes, threshold=threshold)
    runs = [len(part) for part in outcomes.split(".")]
    closed, last = runs[:-1], runs[-1]
    outages = sum(1 for length in closed if length >= threshold)
    expected = ["tenant.unreachable", "tenant.recovered"] * outages
    if last >= threshold:
        expected.append("tenant.unreachable")
    assert [e.type.value for e in events] == expected
    assert len({e.id for e in events}) == len(events)
