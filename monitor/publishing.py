"""One tenant's publication checks within a poll: fetch, compare, judge; apply after commit.

``PublicationCheck.observe(confirmed, now=...)`` runs after the Management API poll: the
``PublicationReader`` fetches what is due (``monitor.sources.publication``), the pure checks
compare each fresh answer with the tenant's confirmed snapshot and ``judge`` turns the
findings into events (``monitor.publication``). Nothing moves until the poller has committed
those events with the poll, and with them the watches' stored part (``Outcome.episodes``, in
``TenantState.publication``): ``apply(outcome)`` then keeps the new watches and updates the
metrics. If the commit fails, the next fresh fetch judges the same disagreement again. After a
restart, a reload or a change of leader, ``restore`` goes on from the stored episodes.

What is due: every target on every poll while a change propagates, that is while the
Management API's keys changed less than ``recheck`` seconds ago, or the target's last fetch
disagreed (an episode pending confirmation or open), or this process has not fetched it yet;
otherwise (settled) each target once per ``recheck`` seconds since its last applied fetch
(the ``publication_recheck`` setting; 0: every poll). A publication that goes wrong on its own,
with no change at the Management API, is therefore seen within ``recheck`` plus a poll
interval, and believed ``polls - 1`` polls later. The poller starts a tenant's checks once its
first check is due, spread over its first ``recheck`` unless a stored episode or a change of
keys asks for it sooner (``monitor.poll.checks_publication``); ``skip`` follows the keys
until then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from monitor.clock import utc_now
from monitor.metrics import PublicationView, Telemetry
from monitor.model import EpisodeState, Event, Snapshot
from monitor.publication import (
    Finding,
    Target,
    TargetKind,
    Watch,
    check_certificate,
    check_jwks,
    check_mirror,
    expected_publication,
    judge,
    kept,
    resumed,
    target_key,
)
from monitor.sources.publication import PublicationReader, Reading


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one poll's publication checks found; nothing is kept until ``apply``."""

    events: list[Event]
    watches: Mapping[Target, Watch]
    published: Mapping[Target, frozenset[str]]
    errors: list[str]
    checked: Snapshot
    changed_at: datetime | None
    first_published: Mapping[str, datetime] = field(default_factory=dict)
    fetched_at: Mapping[Target, datetime] = field(default_factory=dict)
    episodes: Mapping[str, EpisodeState] = field(default_factory=dict)
    """What the poll's commit stores of the watches (``TenantState.publication``)."""


_EMPTY: Mapping[Any, Any] = MappingProxyType({})
"""The empty collections of every tenant, one object (a fleet of 10,000 tenants kept five
empty dicts and two empty frozensets each): a tenant's collections are replaced by new ones,
never changed in place."""
_NO_KIDS: frozenset[str] = frozenset()
_NEW_WATCH = Watch()


def episodes_of(watches: Mapping[Target, Watch]) -> Mapping[str, EpisodeState]:
    """The stored part of ``watches``; a target with nothing to remember is left out."""
    stored = {target_key(target): kept(watch) for target, watch in watches.items()}
    return {key: episode for key, episode in stored.items() if episode != EpisodeState()} or _EMPTY


class PublicationCheck:
    """What keywatch keeps of one tenant's publication between polls (in memory)."""

    __slots__ = (
        "_allow",
        "_changed_at",
        "_checked",
        "_episodes",
        "_fetched_at",
        "_first_published",
        "_lead",
        "_polls",
        "_published",
        "_recheck",
        "_telemetry",
        "_tenant",
        "_watches",
        "reader",
    )

    def __init__(
        self,
        reader: PublicationReader,
        *,
        tenant: str,
        allow_extra_kids: Iterable[str] = (),
        polls: int = 2,
        recheck: float = 0.0,
        telemetry: Telemetry,
    ) -> None:
        self.reader = reader
        self._tenant = tenant
        self._allow = frozenset(allow_extra_kids) or _NO_KIDS
        self._polls = polls
        self._recheck = timedelta(seconds=recheck)
        self._telemetry = telemetry
        self._watches: Mapping[Target, Watch] = {target: _NEW_WATCH for target in reader.targets}
        self._published: Mapping[Target, frozenset[str]] = _EMPTY
        self._checked: Snapshot | None = None
        self._changed_at: datetime | None = None
        self._first_published: Mapping[str, datetime] = _EMPTY
        self._fetched_at: Mapping[Target, datetime] = _EMPTY  # the last fetch each applied
        self._episodes: Mapping[str, EpisodeState] = _EMPTY  # episodes_of(self._watches)
        self._lead: Mapping[str, float] = _EMPTY
        telemetry.publication.add_tenant(tenant)

    @property
    def watches(self) -> Mapping[Target, Watch]:
        return dict(self._watches)

    def restore(self, episodes: Mapping[str, EpisodeState]) -> None:
        """Go on from the stored episodes (``TenantState.publication``); a watch that agrees
        with its stored part keeps what this process knows beyond it."""
        watches = dict(self._watches)  # a new dict: an Outcome in flight may hold the old one
        for target, watch in watches.items():
            stored = episodes.get(target_key(target), EpisodeState())
            if kept(watch) != stored:
                watches[target] = resumed(stored)
        self._watches = watches
        self._episodes = episodes_of(watches)

    async def observe(
        self, confirmed: Snapshot, *, now: Callable[[], datetime] = utc_now
    ) -> Outcome:
        changed = not confirmed.same_keys(self._checked)
        changed_at = self._changed_at
        if changed and (
            self._checked is None
            or expected_publication(confirmed) != expected_publication(self._checked)
        ):
            changed_at = confirmed.taken_at if self._checked is not None else None
        readings = await self.reader.read(
            changed=changed, wanted=self._wanted(changed, changed_at, now()), now=now
        )
        errors = [reading.error for reading in readings if reading.error]
        if not any(reading.fresh for reading in readings):  # the steady state: nothing new
            return Outcome(
                events=[],
                watches=self._watches,
                published=self._published,
                errors=errors,
                checked=confirmed,
                changed_at=changed_at,
                first_published=self._first_published,
                fetched_at=self._fetched_at,
                episodes=self._episodes,
            )
        observed_at = now()
        events: list[Event] = []
        watches = dict(self._watches)
        published = dict(self._published)
        first_published = dict(self._first_published)
        fetched_at = dict(self._fetched_at)
        for reading in readings:
            if not reading.fresh:
                continue
            fetched_at[reading.target] = observed_at
            findings, kids = self._compare(confirmed, reading)
            published[reading.target] = kids
            if reading.target.kind is TargetKind.JWKS:
                for kid in kids & set(confirmed.next_kids):
                    first_published.setdefault(kid, observed_at)
            watches[reading.target], found = judge(
                watches.get(reading.target, _NEW_WATCH),
                findings,
                tenant=self._tenant,
                target=reading.target,
                anchor=confirmed.taken_at,
                observed_at=observed_at,
                changed_at=changed_at,
                polls=self._polls,
            )
            events += found
        return Outcome(
            events=events,
            watches=watches,
            published=published,
            errors=errors,
            checked=confirmed,
            changed_at=changed_at,
            first_published=first_published or _EMPTY,
            fetched_at=fetched_at,
            episodes=episodes_of(watches),
        )

    def _wanted(
        self, changed: bool, changed_at: datetime | None, moment: datetime
    ) -> set[Target] | None:
        """The targets to fetch in this poll (None: all); see the module."""
        if changed or not self._recheck:
            return None
        if changed_at is not None and moment - changed_at < self._recheck:
            return None
        return {
            target
            for target, watch in self._watches.items()
            if watch.findings != frozenset()  # never fetched here, or disagreeing
            or watch.open_id is not None
            or target not in self._fetched_at
            or moment - self._fetched_at[target] >= self._recheck
        }

    def _compare(
        self, confirmed: Snapshot, reading: Reading
    ) -> tuple[frozenset[Finding], frozenset[str]]:
        target = reading.target
        if reading.cert_sha1 is not None:
            kids = frozenset(
                kid for kid, key in confirmed.keys.items() if key.cert_sha1 == reading.cert_sha1
            )
            return check_certificate(confirmed, reading.cert_sha1), kids
        keys = reading.keys or ()
        kids = frozenset(key.kid for key in keys)
        if target.is_mirror:
            return check_mirror(confirmed, keys), kids
        return check_jwks(confirmed, keys, allow_extra_kids=self._allow), kids

    def record_errors(self, outcome: Outcome) -> None:
        """Count the failed fetches (whether or not the poll's commit succeeds)."""
        for reason in outcome.errors:
            self._telemetry.publication.record_fetch_error(self._tenant, reason)

    def apply(self, outcome: Outcome) -> None:
        """Keep what ``outcome`` found, once its events are committed; update the metrics."""
        if (
            outcome.watches is self._watches
            and outcome.published is self._published
            and outcome.checked.same_keys(self._checked)
        ):  # nothing fetched, the same keys: the view and the lead are what they were
            self._checked, self._changed_at = outcome.checked, outcome.changed_at
            return
        previous_current = set(self._checked.current_kids) if self._checked else set()
        self._episodes = outcome.episodes
        self._watches = outcome.watches
        self._published = outcome.published
        self._checked = outcome.checked
        self._changed_at = outcome.changed_at
        self._first_published = outcome.first_published
        self._fetched_at = outcome.fetched_at
        confirmed = outcome.checked
        lead = dict(self._lead)
        if previous_current:
            for kid in set(confirmed.current_kids) - previous_current:
                seen = self._first_published.get(kid)
                if seen is not None:
                    lead[kid] = max(0.0, (confirmed.taken_at - seen).total_seconds())
        current = confirmed.current_kids
        self._lead = {kid: s for kid, s in lead.items() if kid in current} or _EMPTY
        self._telemetry.publication.set_view(self._tenant, self._view(confirmed))

    def skip(self, confirmed: Snapshot) -> None:
        """A committed poll that checked nothing (its first check was not due yet: see
        ``monitor.poll.checks_publication``): the first check goes on from ``confirmed``, so a
        change of keys after it propagates as if it had been checked."""
        self._checked = confirmed

    def _view(self, confirmed: Snapshot) -> PublicationView:
        published: dict[tuple[str, str], bool] = {}
        mirrors: dict[str, tuple[bool, float | None]] = {}
        for target, kids in self._published.items():
            if target.is_mirror:
                watch = self._watches.get(target, _NEW_WATCH)
                if watch.in_sync is not None:
                    mirrors[target.label] = (watch.in_sync, watch.lag)
                continue
            for kid in set(confirmed.keys) | kids:
                published[(kid, target.label)] = kid in kids
        return PublicationView(published=published, mirrors=mirrors, lead=dict(self._lead))
