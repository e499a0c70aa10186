"""When what is published becomes an event: one episode of disagreement, one pair of events.

``judge(watch, findings, ...)`` takes what keywatch keeps of one published target (a JWKS URL,
``/pem``, ``/cer`` or a mirror: a ``Watch``), the findings of a fresh fetch of it, and returns
the new ``Watch`` and the events. The discipline is ``monitor.confirm``'s: disagreement is
believed only when ``polls`` consecutive fetches show it (a single odd answer never pages);
agreement is believed at once. Each episode raises its opening event once (``jwks.mismatch``,
or ``mirror.stale``, raised again only when a stale mirror gets worse: critical once it lacks
the current key) and its closing event once (``jwks.consistent``, ``mirror.synced``).

Ids are deterministic: an opening event hashes the tenant, the target, the time of the
confirmed snapshot it was compared with (``anchor``) and the number of episodes opened since
that snapshot; a closing event hashes the id of the event it closes. The part of a ``Watch``
those ids and the lag depend on (``kept``: an ``EpisodeState``) is stored with the tenant's
state in the poll's commit, and a restart or a new leader goes on from it (``resumed``): an
episode that ended meanwhile raises its recovery, a new one gets a new id.

A mirror's propagation lag is measured here too: from the source change it had to follow
(``changed_at``: when keywatch saw the tenant's keys change) to its first fetch that agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from monitor.model import EpisodeState, Event, EventType, Severity, event_id
from monitor.publication.checks import CHECK_TEXT, CRITICAL_CHECKS, Finding


class TargetKind(StrEnum):
    JWKS = "jwks"
    PEM = "pem"
    CER = "cer"
    MIRROR = "mirror"


@dataclass(frozen=True, slots=True)
class Target:
    """One published thing keywatch fetches; ``url`` is shown without credentials, ``label``
    names it in metrics (``jwks``, ``jwks:<host>`` for a custom domain, ``pem``, ``cer``, the
    mirror's URL)."""

    kind: TargetKind
    url: str
    label: str = ""

    @property
    def is_mirror(self) -> bool:
        return self.kind is TargetKind.MIRROR


_OPENING: Mapping[bool, EventType] = {False: EventType.JWKS_MISMATCH, True: EventType.MIRROR_STALE}
_CLOSING: Mapping[bool, EventType] = {
    False: EventType.JWKS_CONSISTENT,
    True: EventType.MIRROR_SYNCED,
}


@dataclass(frozen=True, slots=True)
class Watch:
    """What keywatch keeps of one target between fetches: ``kept`` of it in the store, the
    rest (the last findings, the last agreeing fetch, the lag) in memory."""

    findings: frozenset[Finding] | None = None  # of the last fetch; None: never fetched
    streak: int = 0  # consecutive fetches that disagreed
    open_id: str | None = None  # the opening event of the episode in progress
    open_severity: Severity | None = None
    anchor: datetime | None = None
    episodes: int = 0  # episodes opened since ``anchor``
    synced_at: datetime | None = None  # the last fetch that agreed
    behind_since: datetime | None = None  # mirrors: the change not followed yet
    lag: float | None = None  # mirrors: seconds behind now, or the last propagation lag

    @property
    def in_sync(self) -> bool | None:
        return None if self.findings is None else not self.findings


def target_key(target: Target) -> str:
    """The name of ``target``'s episode state in ``TenantState.publication``."""
    return f"{target.kind.value} {target.url}"


def kept(watch: Watch) -> EpisodeState:
    """What survives a restart; the anchor only matters once an episode was opened since it."""
    return EpisodeState(
        streak=watch.streak,
        open_id=watch.open_id,
        open_severity=watch.open_severity,
        anchor=watch.anchor if watch.episodes else None,
        episodes=watch.episodes,
        behind_since=watch.behind_since,
    )


def resumed(episode: EpisodeState) -> Watch:
    """A watch going on from a stored ``EpisodeState`` (nothing fetched yet by this process)."""
    return Watch(
        streak=episode.streak,
        open_id=episode.open_id,
        open_severity=episode.open_severity,
        anchor=episode.anchor,
        episodes=episode.episodes,
        behind_since=episode.behind_since,
    )


def judge(
    watch: Watch,
    findings: frozenset[Finding],
    *,
    tenant: str,
    target: Target,
    anchor: datetime,
    observed_at: datetime,
    changed_at: datetime | None = None,
    polls: int = 2,
) -> tuple[Watch, list[Event]]:
    """The new watch and the events of one fresh fetch whose comparison gave ``findings``."""
    if watch.anchor != anchor:
        watch = replace(watch, anchor=anchor, episodes=0)
    watch = _track_lag(watch, findings, observed_at=observed_at, changed_at=changed_at)
    if not findings:
        events = [_closing(watch, tenant, target, observed_at)] if watch.open_id else []
        return replace(watch, findings=findings, streak=0, open_id=None, open_severity=None), events
    # the streak stops at ``polls``: counting on would change the stored state every poll
    watch = replace(watch, findings=findings, streak=min(watch.streak + 1, max(polls, 1)))
    if watch.streak < polls:
        return watch, []
    severity = _severity(findings, target)
    if watch.open_id is None:
        material: tuple[str, ...] = (
            target.kind.value,
            target.url,
            anchor.isoformat(),
            str(watch.episodes),
        )
        opening = _event(
            tenant,
            _OPENING[target.is_mirror],
            material,
            findings,
            target,
            severity,
            observed_at,
            watch,
        )
        opened = replace(
            watch, open_id=opening.id, open_severity=severity, episodes=watch.episodes + 1
        )
        return opened, [opening]
    if watch.open_severity is not None and severity > watch.open_severity:
        material = (watch.open_id, severity.label)
        worse = _event(
            tenant,
            _OPENING[target.is_mirror],
            material,
            findings,
            target,
            severity,
            observed_at,
            watch,
        )
        return replace(watch, open_severity=severity), [worse]
    return watch, []


def _severity(findings: frozenset[Finding], target: Target) -> Severity:
    if not target.is_mirror:
        return Severity.CRITICAL
    if any(finding.check in CRITICAL_CHECKS for finding in findings):
        return Severity.CRITICAL
    return Severity.WARNING


def _track_lag(
    watch: Watch,
    findings: frozenset[Finding],
    *,
    observed_at: datetime,
    changed_at: datetime | None,
) -> Watch:
    if not findings:
        if watch.behind_since is None:
            lag = watch.lag if watch.lag is not None else 0.0
        else:
            lag = max(0.0, (observed_at - watch.behind_since).total_seconds())
        return replace(watch, synced_at=observed_at, behind_since=None, lag=lag)
    behind_since = watch.behind_since
    if behind_since is None:
        followed = changed_at is not None and (
            watch.synced_at is None or changed_at >= watch.synced_at
        )
        behind_since = changed_at if followed and changed_at is not None else observed_at
    lag = max(0.0, (observed_at - behind_since).total_seconds())
    return replace(watch, behind_since=behind_since, lag=lag)


def describe(findings: frozenset[Finding]) -> str:
    """``x5t differs ... (kid abc); the next key is not published (kid def)``."""
    return "; ".join(f"{CHECK_TEXT[f.check]} (kid {f.kid})" for f in sorted(findings))


def _single_kid(findings: frozenset[Finding]) -> str | None:
    kids = {finding.kid for finding in findings}
    return kids.pop() if len(kids) == 1 else None


def _event(
    tenant: str,
    event_type: EventType,
    material: tuple[str, ...],
    findings: frozenset[Finding],
    target: Target,
    severity: Severity,
    observed_at: datetime,
    watch: Watch,
) -> Event:
    details = {
        "source": target.kind.value,
        "url": target.url,
        "checks": ", ".join(finding.render() for finding in sorted(findings)),
        "problems": describe(findings),
    }
    if target.is_mirror and watch.lag is not None:
        details["behind_seconds"] = f"{watch.lag:.0f}"
    return Event(
        id=event_id(tenant, event_type, *material),
        tenant=tenant,
        type=event_type,
        severity=severity,
        detected_at=observed_at,
        kid=_single_kid(findings),
        details=details,
    )


def _closing(watch: Watch, tenant: str, target: Target, observed_at: datetime) -> Event:
    event_type = _CLOSING[target.is_mirror]
    details = {"source": target.kind.value, "url": target.url}
    if target.is_mirror and watch.lag is not None:
        details["lag_seconds"] = f"{watch.lag:.0f}"
    return Event(
        id=event_id(tenant, event_type, watch.open_id or ""),
        tenant=tenant,
        type=event_type,
        severity=Severity.INFO,
        detected_at=observed_at,
        details=details,
    )
