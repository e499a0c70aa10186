"""``PublicationTelemetry``: the metrics of what tenants publish (JWKS, certificate endpoints,
mirrors), rendered to sample lines in ``Telemetry.tables`` when a poll updates them, like
``Telemetry``'s (the reference collector builds the samples from the same state)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.samples import Sample

from monitor.metrics.exposition import lines_by_name
from monitor.metrics.names import API_ERROR_REASONS
from monitor.metrics.tables import FamilyTables

Series = tuple[tuple[str, tuple[Sample, ...]], ...]


@dataclass(frozen=True, slots=True)
class PublicationView:
    """What one tenant publishes, as of its last poll."""

    published: Mapping[tuple[str, str], bool] = field(default_factory=dict)  # (kid, source)
    mirrors: Mapping[str, tuple[bool, float | None]] = field(default_factory=dict)
    lead: Mapping[str, float] = field(default_factory=dict)  # kid -> seconds


@dataclass(slots=True)
class _Tenant:
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(API_ERROR_REASONS, 0))
    view: PublicationView = field(default_factory=PublicationView)
    zero_counters: bool = True


class PublicationTelemetry:
    """Thread-safe; only tenants that check something they publish are exported."""

    def __init__(self, tables: FamilyTables, *, zero_counters: bool = True) -> None:
        """``tables``: where each tenant's sample lines are kept (``Telemetry.tables``)."""
        self._lock = threading.Lock()
        self._tables = tables
        self._zero_counters = zero_counters
        self._tenants: dict[str, _Tenant] = {}

    def add_tenant(self, tenant: str) -> None:
        with self._lock:
            if tenant not in self._tenants:
                state = _Tenant()
                state.zero_counters = self._zero_counters
                self._tenants[tenant] = state
                self._show(tenant, state)

    def remove_tenant(self, tenant: str) -> None:
        with self._lock:
            self._tenants.pop(tenant, None)
            self._tables.put(tenant, FAMILIES, {})

    def record_fetch_error(self, tenant: str, reason: str) -> None:
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None:
                state.errors[reason] = state.errors.get(reason, 0) + 1
                self._show(tenant, state)

    def set_view(self, tenant: str, view: PublicationView) -> None:
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None and state.view != view:
                state.view = view
                self._show(tenant, state)

    def view_of(self, tenant: str) -> PublicationView | None:
        with self._lock:
            state = self._tenants.get(tenant)
            return state.view if state is not None else None

    def series(self) -> list[Series]:
        """Every tenant's samples (for the reference collector)."""
        with self._lock:
            return [_series(tenant, state) for tenant, state in self._tenants.items()]

    def _show(self, tenant: str, state: _Tenant) -> None:
        """Render the tenant's lines again; call with the lock held, after a change."""
        self._tables.put(tenant, FAMILIES, lines_by_name(_series(tenant, state)))


FAMILIES = (
    "keywatch_jwks_fetch_errors_total",
    "auth0_signing_key_published",
    "keywatch_mirror_in_sync",
    "keywatch_mirror_lag_seconds",
    "keywatch_next_key_lead_seconds",
)
"""The families of ``_series``."""


def _series(tenant: str, state: _Tenant) -> Series:
    labels = {"tenant": tenant}
    view = state.view

    def samples(
        name: str, rows: list[tuple[dict[str, str], float]]
    ) -> tuple[str, tuple[Sample, ...]]:
        return name, tuple(Sample(name, {**labels, **extra}, value) for extra, value in rows)

    found = [
        samples(
            "keywatch_jwks_fetch_errors_total",
            [
                ({"reason": reason}, count)
                for reason, count in state.errors.items()
                if count or state.zero_counters
            ],
        ),
        samples(
            "auth0_signing_key_published",
            [
                ({"kid": kid, "source": source}, 1 if flag else 0)
                for (kid, source), flag in sorted(view.published.items())
            ],
        ),
        samples(
            "keywatch_mirror_in_sync",
            [({"mirror": url}, 1 if in_sync else 0) for url, (in_sync, _) in view.mirrors.items()],
        ),
        samples(
            "keywatch_mirror_lag_seconds",
            [({"mirror": url}, lag) for url, (_, lag) in view.mirrors.items() if lag is not None],
        ),
        samples(
            "keywatch_next_key_lead_seconds",
            [({"kid": kid}, seconds) for kid, seconds in sorted(view.lead.items())],
        ),
    ]
    return tuple((name, rows) for name, rows in found if rows)
