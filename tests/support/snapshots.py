"""Snapshots and keys for the detection tests: a key's thumbprint and fingerprint match its
(fake) certificate unless a test says otherwise."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from monitor.model import Event, KeyState, Snapshot
from monitor.reachability import Reachability, after_failure

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TENANT = "prod"


def sha1_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest().upper()


def key(
    kid: str, state: str = "current", *, cert: str | None = None, **changes: object
) -> KeyState:
    """A key whose thumbprint and fingerprint match its (fake) certificate."""
    sha1 = sha1_of(cert or kid)
    flags = {name: name in state.split("+") for name in ("current", "next", "previous", "revoked")}
    made = KeyState(
        kid=kid,
        thumbprint=sha1,
        fingerprint=":".join(sha1[i : i + 2] for i in range(0, 40, 2)),
        cert_sha1=sha1,
        **flags,  # type: ignore[arg-type]
    )
    return replace(made, **changes)  # type: ignore[arg-type]


def snap(*keys: KeyState, minutes: int = 0, tenant: str = TENANT) -> Snapshot:
    return Snapshot(
        tenant=tenant, taken_at=T0 + timedelta(minutes=minutes), keys={k.kid: k for k in keys}
    )


STEADY = snap(key("A", "previous"), key("B", "current"), key("C", "next"))


def outage(failures: int, tenant: str = TENANT) -> tuple[Reachability, list[Event]]:
    """The tenant's run after ``failures`` timed-out polls a minute apart from ``T0`` (it is
    announced unreachable at the second), and the events it raised."""
    state, raised = Reachability(tenant), []
    for minute in range(failures):
        state, events = after_failure(
            state,
            reason="timeout",
            error="timed out",
            at=T0 + timedelta(minutes=minute),
            threshold=2,
        )
        raised += events
    return state, raised
