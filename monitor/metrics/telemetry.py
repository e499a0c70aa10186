"""``Telemetry``: everything the collector renders, updated by the poller and the dispatcher.

Updates for a tenant that is not known (never added, or removed by a reload while its poll
was in flight) are dropped, so a late poll cannot bring a removed tenant's series back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from prometheus_client.samples import Sample

from monitor.metrics.exposition import lines_by_name, sample_line
from monitor.metrics.names import (
    API_ERROR_REASONS,
    JOB_ERROR_KINDS,
    NOTIFICATION_LATENCY_BUCKETS,
    NOTIFICATION_OUTCOMES,
    POLL_DURATION_BUCKETS,
    PRUNED_TABLES,
    SPECS,
)
from monitor.metrics.publication import PublicationTelemetry
from monitor.metrics.tables import FamilyTables
from monitor.model import KEY_STATES, Event, EventType, KeyState, Snapshot

log = logging.getLogger(__name__)

# Prebuilt samples: (metric name, samples) pairs, only for names that have samples.
Series = tuple[tuple[str, tuple[Sample, ...]], ...]


# --- state -----------------------------------------------------------------------------------
#
# A scrape of 10,000 tenants exports over 600,000 samples. Formatting them all at every scrape
# costs seconds, and most of them have not changed since the last scrape (a tenant changes
# once per poll). So each tenant's sample lines are kept ready (``monitor.metrics.exposition``)
# in ``tables``, by family: the per-key ones are rendered when its snapshot is set, its poll
# status after each poll and its counters when one of them moves. Only the bytes are kept (a
# ``Sample`` with its labels dict costs ~10 times the memory of its line); the reference
# collector builds its samples from the same state with the same functions at collection time.


@dataclass(slots=True)
class _TenantState:
    tenant: str
    polling: bool = True  # this process polls the tenant (it is the leader)
    zero_counters: bool = True  # export the labelled counters at 0 too
    polled: bool = False
    up: bool = False
    last_success: float | None = None
    snapshot: Snapshot | None = None
    rotations: int = 0
    revocations: int = 0
    unconfirmed: bool = False
    api_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(API_ERROR_REASONS, 0))
    events: dict[str, int] = field(default_factory=lambda: {kind.value: 0 for kind in EventType})
    job_errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(JOB_ERROR_KINDS, 0))

    def series(self) -> Series:
        """Every sample of the tenant (for the reference collector)."""
        keys = _key_series(self.snapshot) if self.snapshot is not None else ()
        return (*_status_series(self), *_counter_series(self), *keys)


@dataclass(slots=True)
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[int]  # per bucket, not cumulative; the last one is +Inf
    total: float = 0.0

    @classmethod
    def with_bounds(cls, bounds: Sequence[float]) -> _Histogram:
        return cls(bounds=tuple(bounds), counts=[0] * (len(bounds) + 1))

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le is inclusive)
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative_buckets(self) -> list[tuple[str, float]]:
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            buckets.append((_le(bound), running))
        return buckets


class OutboxView(Protocol):
    """One destination's undelivered outbox (``monitor.store.OutboxStats`` is one)."""

    @property
    def pending(self) -> int: ...

    @property
    def dead(self) -> int: ...

    @property
    def oldest_pending_at(self) -> datetime | None: ...


@dataclass(slots=True)
class _DestinationState:
    outcomes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(NOTIFICATION_OUTCOMES, 0)
    )
    latency: _Histogram = field(
        default_factory=lambda: _Histogram.with_bounds(NOTIFICATION_LATENCY_BUCKETS)
    )
    pending: int = 0
    dead: int = 0
    oldest_pending_at: float | None = None  # Unix seconds


@dataclass(frozen=True, slots=True)
class DestinationCopy:
    name: str
    outcomes: dict[str, int]
    latency_buckets: list[tuple[str, float]]
    latency_sum: float
    pending: int
    dead: int
    oldest_pending_age: float


@dataclass(frozen=True, slots=True)
class ScrapeCopy:
    """What one scrape renders, copied under the lock (the series themselves are immutable)."""

    series: list[Series]
    polled_once: int
    leader: bool
    buckets: list[tuple[str, float]]
    duration_sum: float
    destinations: list[DestinationCopy]
    pruned: dict[str, int] = field(default_factory=dict)
    store_size: int | None = None


class Telemetry:
    """Everything the collector renders. Thread-safe; every ``record_*`` is O(1) per item."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, zero_counters: bool = True
    ) -> None:
        """``zero_counters``: export each tenant's labelled counters at 0 too (``metrics:
        zero_counters`` in the configuration)."""
        self._clock = clock
        self._zero_counters = zero_counters
        self._lock = threading.Lock()
        self._tenants: dict[str, _TenantState] = {}
        self._durations = _Histogram.with_bounds(POLL_DURATION_BUCKETS)
        self._destinations: dict[str, _DestinationState] = {}
        self._leader = True
        self._polled = 0  # tenants with polled set
        self.tables = FamilyTables(SPECS)
        """Every tenant's prepared sample lines, by family (what ``/metrics`` serves)."""
        self.publication = PublicationTelemetry(self.tables, zero_counters=zero_counters)
        """The metrics of what tenants publish (JWKS, certificate endpoints, mirrors)."""
        self._pruned = dict.fromkeys(PRUNED_TABLES, 0)
        self._store_size: int | None = None

    def record_pruned(self, *, events: int, deliveries: int) -> None:
        with self._lock:
            self._pruned["events"] += events
            self._pruned["deliveries"] += deliveries

    def set_store_size(self, size: int) -> None:
        with self._lock:
            self._store_size = size

    def add_tenant(self, tenant: str) -> None:
        """Start exporting a tenant: counters at 0, tenant_up 0 until polled. Idempotent."""
        with self._lock:
            if tenant not in self._tenants:
                state = _TenantState(
                    tenant, polling=self._leader, zero_counters=self._zero_counters
                )
                self._tenants[tenant] = state
                self._show_status(state)
                self._show_counters(state)

    def set_leader(self, leader: bool) -> None:
        """Whether this process leads (polls). Standing by drops every tenant's poll status:
        no tenant_up or last-success series while standing by, and "not polled yet" (tenant_up
        0) when leading again, until the tenant's first poll as the leader."""
        with self._lock:
            if leader == self._leader:
                return
            self._leader = leader
            for state in self._tenants.values():
                state.polling = leader
                if state.polled:
                    self._polled -= 1
                state.polled = state.up = False
                state.last_success = None
                self._show_status(state)

    def remove_tenant(self, tenant: str) -> None:
        """Forget a tenant: every series labelled with it disappears."""
        with self._lock:
            state = self._tenants.pop(tenant, None)
            if state is not None and state.polled:
                self._polled -= 1
            self.tables.put(tenant, TENANT_FAMILIES, {})
        self.publication.remove_tenant(tenant)

    def set_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the tenant's key view; kids missing from it lose their series."""
        key_lines = lines_by_name(_key_series(snapshot))  # rendered before taking the lock
        with self._lock:
            state = self._tenants.get(snapshot.tenant)
            if state is not None:
                state.snapshot = snapshot
                self.tables.put(snapshot.tenant, KEY_FAMILIES, key_lines)
        if state is None:
            _log_unknown(snapshot.tenant, "snapshot")

    def set_unconfirmed(self, tenant: str, pending: bool) -> None:
        """Whether an answer of the tenant awaits confirmation (``TenantState.pending``)."""
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None and state.unconfirmed != pending:
                state.unconfirmed = pending
                self._show_status(state)
        if state is None:
            _log_unknown(tenant, "confirmation")

    def record_poll_success(self, tenant: str, *, duration: float) -> None:
        _check_duration(tenant, duration)
        with self._lock:
            self._durations.observe(duration)
            state = self._tenants.get(tenant)
            if state is not None:
                was_up, state.up, state.last_success = state.up, True, self._clock()
                self._mark_polled(state)
                if was_up and state.polling:  # the steady state: only the time moved
                    self.tables.put(state.tenant, (LAST_SUCCESS,), _last_success_line(state))
                else:
                    self._show_status(state)
        if state is None:
            _log_unknown(tenant, "poll success")

    def record_poll_failure(self, tenant: str, *, reason: str, duration: float) -> None:
        """``reason`` is the ``SourceError.reason`` of the failure (a short stable label)."""
        _check_duration(tenant, duration)
        with self._lock:
            self._durations.observe(duration)
            state = self._tenants.get(tenant)
            if state is not None:
                self._mark_polled(state)
                state.up = False
                state.api_errors[reason] = state.api_errors.get(reason, 0) + 1
                self._show_status(state)
                self._show_counters(state, ("keywatch_api_errors_total",))
        if state is None:
            _log_unknown(tenant, "poll failure")

    def record_events(self, events: Sequence[Event]) -> None:
        """Count newly detected events (each at most once: the caller passes new ones only)."""
        changed: dict[str, _TenantState] = {}
        dropped: set[str] = set()
        with self._lock:
            for event in events:
                state = self._tenants.get(event.tenant)
                if state is None:
                    dropped.add(event.tenant)
                    continue
                name = event.type.value
                state.events[name] = state.events.get(name, 0) + 1
                if event.type is EventType.KEY_ROTATED:
                    state.rotations += 1
                elif event.type is EventType.KEY_REVOKED:
                    state.revocations += 1
                changed[event.tenant] = state
            for state in changed.values():
                self._show_counters(state, EVENT_FAMILIES)
        for tenant in dropped:
            _log_unknown(tenant, "events")

    def record_job_error(self, tenant: str, kind: str) -> None:
        """A scheduler job of the tenant failed; ``kind`` is error, missed or max_instances."""
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None:
                state.job_errors[kind] = state.job_errors.get(kind, 0) + 1
                self._show_counters(state, ("keywatch_scheduler_job_errors_total",))
        if state is None:
            _log_unknown(tenant, "job error")

    # --- notifications ----------------------------------------------------------------------

    def set_destinations(self, names: Iterable[str]) -> None:
        """Export exactly these destinations: new ones start at 0, the others' series go."""
        wanted = list(names)
        with self._lock:
            self._destinations = {
                name: self._destinations.get(name) or _DestinationState() for name in wanted
            }

    def record_notification(
        self, destination: str, outcome: str, *, latency: float | None = None
    ) -> None:
        """One attempt's ``outcome`` (delivered, retry, dead); ``latency`` = seconds from
        detection to delivery, for delivered ones."""
        if outcome not in NOTIFICATION_OUTCOMES:
            raise ValueError(f"notification outcome must be one of {NOTIFICATION_OUTCOMES}")
        with self._lock:
            state = self._destinations.get(destination)
            if state is not None:
                state.outcomes[outcome] += 1
                if latency is not None:
                    state.latency.observe(max(0.0, latency))
        if state is None:
            log.debug("metrics: dropped a notification of unknown destination %r", destination)

    def set_outbox(self, stats: Mapping[str, OutboxView]) -> None:
        """Replace the pending/dead view of every known destination (absent = empty)."""
        with self._lock:
            for name, state in self._destinations.items():
                view = stats.get(name)
                oldest = view.oldest_pending_at if view is not None else None
                state.pending = view.pending if view is not None else 0
                state.dead = view.dead if view is not None else 0
                state.oldest_pending_at = oldest.timestamp() if oldest is not None else None

    def _show_status(self, state: _TenantState) -> None:
        """Render the poll status again; call with the lock held, after changing a flag or the
        last success."""
        self.tables.put(state.tenant, STATUS_FAMILIES, lines_by_name(_status_series(state)))

    def _show_counters(self, state: _TenantState, families: Sequence[str] = ()) -> None:
        """Render the counters of ``families`` (default: all) again; call with the lock held,
        after changing one of them. Only those: the tables would decompress the cells of the
        others to find their lines unchanged."""
        families = families or COUNTER_FAMILIES
        series = (found for found in _counter_series(state) if found[0] in families)
        self.tables.put(state.tenant, families, lines_by_name(series))

    def _mark_polled(self, state: _TenantState) -> None:
        if not state.polled:
            state.polled = True
            self._polled += 1

    def polled_all(self) -> bool:
        """True once every known tenant was polled at least once, successfully or not
        (vacuously true without tenants). O(1): asked after every poll until it is true."""
        with self._lock:
            return self._polled == len(self._tenants)

    def polled_once(self) -> tuple[int, int]:
        """(tenants polled at least once, known tenants): the start-up's progress."""
        with self._lock:
            return self._polled, len(self._tenants)

    def snapshot_of(self, tenant: str) -> Snapshot | None:
        with self._lock:
            state = self._tenants.get(tenant)
            return state.snapshot if state is not None else None

    def scrape_copy(self) -> ScrapeCopy:
        """What one scrape renders, copied under the lock (for ``KeywatchCollector``)."""
        with self._lock:
            series = [state.series() for state in self._tenants.values()]
            series.extend(self.publication.series())
            return self._copy(series)

    def process_copy(self) -> ScrapeCopy:
        """The copy of the process-wide state (its tenant series are empty: the tenants' are
        in ``tables``), taken under the lock."""
        with self._lock:
            return self._copy([])

    def _copy(self, series: list[Series]) -> ScrapeCopy:
        """Call with the lock held."""
        now = self._clock()
        return ScrapeCopy(
            series=series,
            polled_once=self._polled,
            leader=self._leader,
            buckets=self._durations.cumulative_buckets(),
            duration_sum=self._durations.total,
            destinations=[
                _destination_copy(name, state, now) for name, state in self._destinations.items()
            ],
            pruned=dict(self._pruned),
            store_size=self._store_size,
        )


def _destination_copy(name: str, state: _DestinationState, now: float) -> DestinationCopy:
    oldest = state.oldest_pending_at
    return DestinationCopy(
        name=name,
        outcomes=dict(state.outcomes),
        latency_buckets=state.latency.cumulative_buckets(),
        latency_sum=state.latency.total,
        pending=state.pending,
        dead=state.dead,
        oldest_pending_age=0.0 if oldest is None else max(0.0, now - oldest),
    )


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _check_duration(tenant: str, duration: float) -> None:
    if not duration >= 0:  # also rejects NaN
        raise ValueError(f"poll duration of tenant {tenant!r}: must be >= 0, got {duration!r}")


def _log_unknown(tenant: str, what: str) -> None:
    log.debug("metrics: dropped %s of unknown tenant %r (removed by a reload?)", what, tenant)


# --- samples -----------------------------------------------------------------------------------


LAST_SUCCESS = "keywatch_last_successful_poll_timestamp_seconds"
STATUS_FAMILIES = ("keywatch_tenant_up", LAST_SUCCESS, "keywatch_unconfirmed_changes")
COUNTER_FAMILIES = (
    "auth0_signing_key_rotations_total",
    "auth0_signing_key_revocations_total",
    "keywatch_api_errors_total",
    "keywatch_events_total",
    "keywatch_scheduler_job_errors_total",
)
EVENT_FAMILIES = (
    "auth0_signing_key_rotations_total",
    "auth0_signing_key_revocations_total",
    "keywatch_events_total",
)
KEY_FAMILIES = (
    "auth0_signing_key_info",
    "auth0_signing_key_state",
    "auth0_signing_key_thumbprint_valid",
    "auth0_signing_key_current_since_timestamp_seconds",
    "auth0_signing_key_current_until_timestamp_seconds",
    "auth0_signing_key_revoked_timestamp_seconds",
    "auth0_signing_key_cert_not_before_timestamp_seconds",
    "auth0_signing_key_cert_not_after_timestamp_seconds",
    "auth0_signing_keys",
)
TENANT_FAMILIES = STATUS_FAMILIES + COUNTER_FAMILIES + KEY_FAMILIES
"""The families each block of a tenant's lines covers (``_status_series`` and so on)."""


def _status_series(state: _TenantState) -> Series:
    """The poll status of one tenant (changes at every poll)."""
    tenant = {"tenant": state.tenant}
    series: list[tuple[str, tuple[Sample, ...]]] = []

    def one(name: str, value: float) -> None:
        series.append((name, (Sample(name, tenant, value),)))

    if state.polling:
        one("keywatch_tenant_up", 1 if state.up else 0)
        if state.last_success is not None:
            one(LAST_SUCCESS, state.last_success)
    one("keywatch_unconfirmed_changes", 1 if state.unconfirmed else 0)
    return tuple(series)


def _last_success_line(state: _TenantState) -> dict[str, bytes]:
    """The last-success line of ``_status_series``, alone."""
    assert state.last_success is not None
    sample = Sample(LAST_SUCCESS, {"tenant": state.tenant}, state.last_success)
    return {LAST_SUCCESS: sample_line(sample).encode()}


def _counter_series(state: _TenantState) -> Series:
    """The counters of one tenant (change rarely)."""
    tenant = {"tenant": state.tenant}
    series: list[tuple[str, tuple[Sample, ...]]] = []

    def one(name: str, value: float) -> None:
        series.append((name, (Sample(name, tenant, value),)))

    def each(name: str, label: str, counts: dict[str, int]) -> None:
        samples = tuple(
            Sample(name, {**tenant, label: value}, count)
            for value, count in counts.items()
            if count or state.zero_counters
        )
        series.append((name, samples))

    one("auth0_signing_key_rotations_total", state.rotations)
    one("auth0_signing_key_revocations_total", state.revocations)
    each("keywatch_api_errors_total", "reason", state.api_errors)
    each("keywatch_events_total", "event", state.events)
    each("keywatch_scheduler_job_errors_total", "kind", state.job_errors)
    return tuple(series)


def _key_series(snapshot: Snapshot) -> Series:
    """Every per-key sample of a snapshot, grouped by metric name."""
    tenant = snapshot.tenant
    series: dict[str, list[Sample]] = {name: [] for name in SPECS}

    def add(name: str, labels: dict[str, str], value: float) -> None:
        series[name].append(Sample(name, labels, value))

    per_state = dict.fromkeys(KEY_STATES, 0)
    for kid, key in snapshot.keys.items():
        ids = {"tenant": tenant, "kid": kid}
        add("auth0_signing_key_info", {**ids, **_key_info(key)}, 1)
        flags = (key.current, key.next, key.previous, key.revoked)
        for state, flag in zip(KEY_STATES, flags, strict=True):
            add("auth0_signing_key_state", {**ids, "state": state}, 1 if flag else 0)
            per_state[state] += flag
        add("auth0_signing_key_thumbprint_valid", ids, 1 if key.thumbprint_ok else 0)
        dates = (
            ("auth0_signing_key_current_since_timestamp_seconds", key.current_since),
            ("auth0_signing_key_current_until_timestamp_seconds", key.current_until),
            ("auth0_signing_key_revoked_timestamp_seconds", key.revoked_at),
            ("auth0_signing_key_cert_not_before_timestamp_seconds", key.not_before),
            ("auth0_signing_key_cert_not_after_timestamp_seconds", key.not_after),
        )
        for name, moment in dates:
            if moment is not None:
                add(name, ids, moment.timestamp())
    for state, count in per_state.items():
        add("auth0_signing_keys", {"tenant": tenant, "state": state}, count)
    return tuple((name, tuple(samples)) for name, samples in series.items() if samples)


def _key_info(key: KeyState) -> dict[str, str]:
    """The info labels of a key: its thumbprint and what its certificate's public key is (one
    value per kid, so no extra series)."""
    return {
        "thumbprint": key.thumbprint,
        "key_type": key.key_type or "unknown",
        "key_bits": str(key.key_size) if key.key_size else "unknown",
    }
