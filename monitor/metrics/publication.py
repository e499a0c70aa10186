"""``PublicationTelemetry``: the metrics of what tenants publish (JWKS, certificate endpoints,
mirrors), prebuilt as samples when a poll updates them, like ``Telemetry``'s."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.samples import Sample

from monitor.metrics.names import API_ERROR_REASONS

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
    series: Series = ()


class PublicationTelemetry:
    """Thread-safe; only tenants that check something they publish are exported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}

    def add_tenant(self, tenant: str) -> None:
        with self._lock:
            if tenant not in self._tenants:
                state = _Tenant()
                state.series = _series(tenant, state)
                self._tenants[tenant] = state

    def remove_tenant(self, tenant: str) -> None:
        with self._lock:
            self._tenants.pop(tenant, None)

    def record_fetch_error(self, tenant: str, reason: str) -> None:
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None:
                state.errors[reason] = state.errors.get(reason, 0) + 1
                state.series = _series(tenant, state)

    def set_view(self, tenant: str, view: PublicationView) -> None:
        with self._lock:
            state = self._tenants.get(tenant)
            if state is not None and state.view != view:
                state.view = view
                state.series = _series(tenant, state)

    def view_of(self, tenant: str) -> PublicationView | None:
        with self._lock:
            state = self._tenants.get(tenant)
            return state.view if state is not None else None

    def series(self) -> list[Series]:
        with self._lock:
            return [state.series for state in self._tenants.values()]


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
            [({"reason": reason}, count) for reason, count in state.errors.items()],
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
