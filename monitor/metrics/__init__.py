"""Prometheus metrics: a ``Telemetry`` the daemon updates and a collector that renders it.

The daemon polls Auth0 on its own timer; a scrape never calls Auth0. ``Telemetry`` holds
everything the collector renders: the latest ``Snapshot`` of each tenant, per-tenant
counters and the poll-duration histogram. ``KeywatchCollector.collect`` copies that state
under the lock and builds fresh metric families from the copy, so a kid that left the API
response (or a tenant removed from the configuration) simply has no series any more.
Samples are built when the state changes, not at every scrape (``monitor.metrics.telemetry``).

Updates for a tenant that is not known (never added, or removed by a reload while its poll
was in flight) are dropped, so a late poll cannot bring a removed tenant's series back.

Leader and standby (replicas sharing a PostgreSQL store, see ``monitor.leader``): only the
leader polls. A standby renders the key series of the shared snapshots the daemon loads from
the store, and no ``keywatch_tenant_up`` or ``keywatch_last_successful_poll_timestamp_seconds``
(it polls nothing, so it has no poll status to report). Counters count what this process did.

The package: ``names`` (every exported metric, its type, labels and help), ``telemetry``
(the state), ``publication`` (the state of what tenants publish: JWKS, certificate endpoints,
mirrors), ``collector`` (the rendering).
"""

from monitor.metrics.collector import KeywatchCollector, build_registry, render
from monitor.metrics.names import (
    API_ERROR_REASONS,
    JOB_ERROR_KINDS,
    METRIC_NAMES,
    NOTIFICATION_LATENCY_BUCKETS,
    NOTIFICATION_OUTCOMES,
    POLL_DURATION_BUCKETS,
    SPECS,
    MetricSpec,
)
from monitor.metrics.publication import PublicationView
from monitor.metrics.telemetry import OutboxView, Telemetry

__all__ = [
    "API_ERROR_REASONS",
    "JOB_ERROR_KINDS",
    "METRIC_NAMES",
    "NOTIFICATION_LATENCY_BUCKETS",
    "NOTIFICATION_OUTCOMES",
    "POLL_DURATION_BUCKETS",
    "SPECS",
    "KeywatchCollector",
    "MetricSpec",
    "OutboxView",
    "PublicationView",
    "Telemetry",
    "build_registry",
    "render",
]
