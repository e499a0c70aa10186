"""Whether keywatch can read a tenant: consecutive failed polls, as outages. No I/O.

``after_failure`` and ``after_success`` move a tenant's ``Reachability`` (kept in the store, so
a restart or a new leader continues the count) and say what to raise:

- ``tenant.unreachable`` when the ``threshold``-th poll in a row fails (default 3), with the
  last failure's reason; once per outage, however long it lasts;
- ``tenant.recovered`` at the first successful poll after an outage that was raised; a run of
  failures shorter than the threshold ends silently.

Both ids are the tenant, the type and the time the outage's first failed poll started: the same
outage seen again (a failed commit, a restart) gives the same ids, a new outage new ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime

from monitor.clock import span, utc
from monitor.model import Event, EventType, make_event

DEFAULT_UNREACHABLE_AFTER = 3
MAX_ERROR_TEXT = 300


@dataclass(frozen=True, slots=True)
class Reachability:
    """One tenant's run of failed polls; ``failures == 0`` is a reachable tenant."""

    tenant: str
    failures: int = 0
    since: datetime | None = None  # when the first failed poll of the run started
    reason: str | None = None  # the last failure's reason (``SourceError.reason``)
    announced: bool = False  # tenant.unreachable was raised for this run

    @property
    def healthy(self) -> bool:
        return self.failures == 0


def after_failure(
    state: Reachability, *, reason: str, error: str, at: datetime, threshold: int
) -> tuple[Reachability, list[Event]]:
    """One more failed poll (started ``at``); raises tenant.unreachable at the threshold."""
    since = state.since if state.since is not None else at
    failed = replace(state, failures=state.failures + 1, since=since, reason=reason)
    if failed.announced or failed.failures < threshold:
        return failed, []
    event = make_event(
        state.tenant,
        EventType.TENANT_UNREACHABLE,
        at,
        [_instant(since)],
        details={
            "reason": reason,
            "error": error[:MAX_ERROR_TEXT] or reason,
            "failures": str(failed.failures),
            "down_since": _display(since),
        },
    )
    return replace(failed, announced=True), [event]


def after_success(state: Reachability, *, at: datetime) -> tuple[Reachability, list[Event]]:
    """A successful poll: the run ends; tenant.recovered when its outage was raised."""
    if state.healthy:
        return state, []
    healthy = Reachability(state.tenant)
    if not state.announced or state.since is None:
        return healthy, []
    event = make_event(
        state.tenant,
        EventType.TENANT_RECOVERED,
        at,
        [_instant(state.since)],
        details={
            "down_since": _display(state.since),
            "downtime": span((utc(at) - utc(state.since)).total_seconds(), tenths_below=0),
            "failures": str(state.failures),
            "reason": state.reason or "unknown",
        },
    )
    return healthy, [event]


def reachability_to_json(state: Reachability) -> str:
    return json.dumps(
        {
            "failures": state.failures,
            "since": state.since.isoformat() if state.since else None,
            "reason": state.reason,
            "announced": state.announced,
        },
        separators=(",", ":"),
    )


def reachability_from_json(tenant: str, text: str) -> Reachability:
    data = json.loads(text)
    since = data.get("since")
    return Reachability(
        tenant=tenant,
        failures=int(data["failures"]),
        since=datetime.fromisoformat(since) if isinstance(since, str) else None,
        reason=data.get("reason"),
        announced=bool(data.get("announced")),
    )


def _instant(moment: datetime) -> str:
    return utc(moment).isoformat(timespec="microseconds")


def _display(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")
