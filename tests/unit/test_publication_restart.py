"""Publication episodes across a restart or a change of leader: the stored part of a watch
(``kept``, in ``TenantState.publication``) is enough to go on with the same ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from monitor.model import (
    EpisodeState,
    Event,
    EventType,
    Severity,
    TenantState,
    confirmation_to_json,
    event_id,
    tenant_state_from_json,
)
from monitor.publication import (
    Check,
    Finding,
    Target,
    TargetKind,
    Watch,
    judge,
    kept,
    resumed,
    target_key,
)
from tests.support.snapshots import snap

T0 = datetime(2026, 5, 1, tzinfo=UTC)
JWKS = Target(TargetKind.JWKS, "https://acme.test/.well-known/jwks.json", "jwks")
MIRROR = Target(TargetKind.MIRROR, "https://gw.test/jwks", "https://gw.test/jwks")
BAD = frozenset({Finding(Check.NEXT_MISSING, "C")})


def fetch(
    watch: Watch, disagrees: bool, index: int, target: Target = JWKS
) -> tuple[Watch, list[Event]]:
    return judge(watch, BAD if disagrees else frozenset(), tenant="acme", target=target,
                 anchor=T0, observed_at=T0 + timedelta(seconds=10 * index),
                 changed_at=T0, polls=2)  # fmt: skip


def restarted(watch: Watch) -> Watch:
    """What a new process (or leader) goes on from: the watch's stored part, through JSON."""
    stored = TenantState(snapshot=snap(), publication={target_key(JWKS): kept(watch)})
    loaded = tenant_state_from_json(stored.snapshot, confirmation_to_json(stored))
    return resumed(loaded.publication.get(target_key(JWKS), EpisodeState()))


def test_the_episode_state_survives_the_store_round_trip() -> None:
    watch = Watch()
    for index in range(2):
        watch, _ = fetch(watch, True, index, MIRROR)
    assert watch.open_id is not None and watch.behind_since == T0
    state = TenantState(snapshot=snap(), publication={target_key(MIRROR): kept(watch)})
    loaded = tenant_state_from_json(state.snapshot, confirmation_to_json(state))
    assert loaded == state
    assert loaded.publication[target_key(MIRROR)].open_severity is Severity.WARNING
    assert kept(resumed(kept(watch))) == kept(watch)


def test_a_store_written_before_publication_state_existed_loads_empty() -> None:
    state = TenantState.confirmed(snap())
    text = confirmation_to_json(state).replace(',"publication":{}', "")
    assert "publication" not in text
    assert tenant_state_from_json(state.snapshot, text).publication == {}


def test_a_new_episode_after_a_restart_gets_a_new_id() -> None:
    watch, first = Watch(), []
    for index, disagrees in enumerate((True, True, False)):
        watch, found = fetch(watch, disagrees, index)
        first += found
    watch = restarted(watch)
    second = []
    for index, disagrees in enumerate((True, True), start=3):
        watch, found = fetch(watch, disagrees, index)
        second += found
    [opening, closing] = first
    [reopening] = second
    assert reopening.type is EventType.JWKS_MISMATCH
    assert reopening.id not in {opening.id, closing.id}  # the store would have dropped it


def test_a_restart_mid_episode_raises_the_same_id_and_nothing_twice() -> None:
    watch, _ = fetch(Watch(), True, 0)
    _, [opening] = fetch(watch, True, 1)
    # the opening's commit did not happen: the stored state is the one before it
    _, [again] = fetch(restarted(watch), True, 1)
    assert again.id == opening.id
    # the opening was committed with its state: the episode goes on, raising nothing
    opened, _ = fetch(watch, True, 1)
    still, found = fetch(restarted(opened), True, 2)
    assert found == [] and still.open_id == opening.id


def test_an_episode_that_ended_while_stopped_raises_its_recovery_after_the_restart() -> None:
    watch, _ = fetch(Watch(), True, 0)
    watch, [opening] = fetch(watch, True, 1)
    _, [recovery] = fetch(restarted(watch), False, 7)
    assert recovery.type is EventType.JWKS_CONSISTENT
    assert recovery.id == event_id("acme", EventType.JWKS_CONSISTENT, opening.id)


def test_steady_agreement_stores_nothing() -> None:
    watch = Watch()
    for index in range(3):
        watch, _ = fetch(watch, False, index)
    assert kept(watch) == EpisodeState()


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=30))
def test_restarts_anywhere_change_no_event(answers: list[tuple[bool, bool]]) -> None:
    """(disagrees, restart before this fetch): the same events, ids and severities as a
    process that never stopped."""
    for target in (JWKS, MIRROR):
        steady, interrupted = Watch(), Watch()
        expected: list[tuple[str, Severity]] = []
        seen: list[tuple[str, Severity]] = []
        for index, (disagrees, restart) in enumerate(answers):
            steady, found = fetch(steady, disagrees, index, target)
            expected += [(event.id, event.severity) for event in found]
            if restart:
                interrupted = resumed(kept(interrupted))
            interrupted, found = fetch(interrupted, disagrees, index, target)
            seen += [(event.id, event.severity) for event in found]
        assert seen == expected
