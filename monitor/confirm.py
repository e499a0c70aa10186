"""Confirmation: when an answer from Auth0 is believed. Pure, like ``monitor.detect``.

``confirm(state, observed, polls=N)`` takes what the store keeps of a tenant (``TenantState``:
the last confirmed snapshot, the current kids last confirmed, a pending answer), the answer of
this poll, and returns the new state and the events to raise.

An answer is believed at once when it is consistent: every event it yields against the
confirmed snapshot is one a real change makes (a plain ``key.rotated``: the next key promoted,
``key.added``, ``key.revoked``, ``key.certificate_changed``, ``tenant.current_key_restored``)
and it shows no
inconsistency (``detect.anomalies``: no current key, no next key, several of either, a key
flagged two ways, a thumbprint or fingerprint that disagrees with the certificate) that the
confirmed snapshot did not show already. Any other answer is alarming: it becomes ``pending``
and is believed only when the same keys come back in ``polls`` consecutive polls; the
confirmed snapshot stays the baseline until then, so a glitch that ends changes nothing. A
revocation is raised at once even from an alarming answer (a revoked flag is never a
glitch); its id is the kid, so raising it again on confirmation is a no-op in the store.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from monitor.detect import NEEDS_CONFIRMATION, anomalies, diff
from monitor.model import Event, EventType, Snapshot, TenantState

DEFAULT_CONFIRM_POLLS = 2


def confirm(
    state: TenantState | None,
    observed: Snapshot,
    *,
    polls: int = DEFAULT_CONFIRM_POLLS,
    kids: Collection[str] = (),
) -> tuple[TenantState, list[Event]]:
    """The tenant's new state and the events of this poll (``kids`` filters per-key events as
    in ``detect.diff``). ``state is None`` is the baseline: believed, no events."""
    if state is None:
        return TenantState.confirmed(observed), []
    confirmed = state.snapshot
    if observed.tenant == confirmed.tenant and observed.same_keys(confirmed):
        # Nothing changed (the same keys yield no event and no new anomaly; the steady state
        # needs no diff), and a pending answer that did not come back is dropped. The
        # confirmed snapshot keeps its taken_at, part of some event ids.
        return TenantState(confirmed, state.last_current), []
    every_event = diff(confirmed, observed, last_current=state.last_current)
    events = (
        diff(confirmed, observed, kids=kids, last_current=state.last_current)
        if kids
        else every_event
    )
    if _alarming(confirmed, observed, every_event):
        seen = _consecutive(state, observed)
        if seen < polls:
            pending = TenantState(confirmed, state.last_current, observed, seen)
            return pending, [event for event in events if event.type is EventType.KEY_REVOKED]
    return TenantState.confirmed(observed, state.last_current), events


def _alarming(confirmed: Snapshot, observed: Snapshot, events: Sequence[Event]) -> bool:
    if any(event.type in NEEDS_CONFIRMATION for event in events):
        return True
    if any(event.type is EventType.KEY_ROTATED for event in events):
        if not _plain_rotation(confirmed, observed):
            return True
    return not anomalies(observed) <= anomalies(confirmed)


def _plain_rotation(confirmed: Snapshot, observed: Snapshot) -> bool:
    """Auth0 rotates by promoting the next key: a plain rotation makes current a key that was
    next in the confirmed snapshot. Anything else (current and next flags swapped, or several
    rotations between two polls, which one such glitch imitates) waits for confirmation."""
    before = confirmed.keys
    return all(kid in before and before[kid].next for kid in observed.current_kids)


def _consecutive(state: TenantState, observed: Snapshot) -> int:
    """Polls in a row that gave this answer, this one included."""
    if state.pending is not None and observed.same_keys(state.pending):
        return state.pending_polls + 1
    return 1
