"""The exported metrics: names, types, labels and help texts (``SPECS``), the histogram
buckets and the label values every known tenant or destination is exported with at 0.

``METRIC_NAMES`` (name -> help) is what the README, the alert rules and the dashboards are
checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

POLL_DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Detection -> delivery: about a poll interval when the destination answers, hours to days
# while it is down (the retry schedule reaches 24 h steps).
NOTIFICATION_LATENCY_BUCKETS: tuple[float, ...] = (
    0.25, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0, 86400.0
)  # fmt: skip

# What happened to one delivery attempt (the dispatcher's Verdict outcomes).
NOTIFICATION_OUTCOMES: tuple[str, ...] = ("delivered", "retry", "dead")

# SourceError.reason of every leaf in monitor/errors.py: exported at 0 for each known tenant.
API_ERROR_REASONS: tuple[str, ...] = (
    "network",
    "timeout",
    "rate_limited",
    "server_error",
    "unauthorized",
    "forbidden",
    "not_found",
    "unexpected_status",
    "malformed",
)

# The tables retention prunes (keywatch_store_pruned_rows_total), exported at 0.
PRUNED_TABLES: tuple[str, ...] = ("events", "deliveries")

# The APScheduler events the daemon reports through record_job_error.
JOB_ERROR_KINDS: tuple[str, ...] = ("error", "missed", "max_instances")

_POLLED_NOTE = "Read from the last poll (keywatch polls on its own timer), not at scrape time."

MetricKind = Literal["gauge", "counter", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric family. ``name`` is the exposed name (counters end in _total)."""

    name: str
    kind: MetricKind
    labels: tuple[str, ...]
    help: str


_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "auth0_signing_key_info",
        "gauge",
        ("tenant", "kid", "thumbprint", "key_type", "key_bits"),
        "Always 1: one series per signing key, labelled with its thumbprint and its "
        f"certificate's public key type (RSA, EC) and size in bits. {_POLLED_NOTE}",
    ),
    MetricSpec(
        "auth0_signing_key_state",
        "gauge",
        ("tenant", "kid", "state"),
        "1 when the key has the state flag (current, next, previous, revoked), else 0.",
    ),
    MetricSpec(
        "auth0_signing_key_current_since_timestamp_seconds",
        "gauge",
        ("tenant", "kid"),
        "When the key became the current signing key (Unix seconds), when Auth0 reports it.",
    ),
    MetricSpec(
        "auth0_signing_key_current_until_timestamp_seconds",
        "gauge",
        ("tenant", "kid"),
        "When the key stopped being the current signing key (Unix seconds), when reported.",
    ),
    MetricSpec(
        "auth0_signing_key_revoked_timestamp_seconds",
        "gauge",
        ("tenant", "kid"),
        "When the key was revoked (Unix seconds); only for revoked keys with a known date.",
    ),
    MetricSpec(
        "auth0_signing_key_cert_not_before_timestamp_seconds",
        "gauge",
        ("tenant", "kid"),
        "Start of the validity of the key's X.509 certificate (Unix seconds).",
    ),
    MetricSpec(
        "auth0_signing_key_cert_not_after_timestamp_seconds",
        "gauge",
        ("tenant", "kid"),
        "End of the validity of the key's X.509 certificate (Unix seconds).",
    ),
    MetricSpec(
        "auth0_signing_key_thumbprint_valid",
        "gauge",
        ("tenant", "kid"),
        "1 when the reported thumbprint and fingerprint match the SHA-1 of the certificate.",
    ),
    MetricSpec(
        "auth0_signing_keys",
        "gauge",
        ("tenant", "state"),
        "Number of keys with each state flag; absent while no key list of the tenant is known.",
    ),
    MetricSpec(
        "auth0_signing_key_rotations_total",
        "counter",
        ("tenant",),
        "Rotations detected (the current kid changed) since keywatch started.",
    ),
    MetricSpec(
        "auth0_signing_key_revocations_total",
        "counter",
        ("tenant",),
        "Keys newly seen revoked since keywatch started.",
    ),
    MetricSpec(
        "keywatch_tenant_up",
        "gauge",
        ("tenant",),
        "1 when the last poll of the tenant succeeded, 0 when it failed or has not run yet.",
    ),
    MetricSpec(
        "keywatch_unconfirmed_changes",
        "gauge",
        ("tenant",),
        "1 while an alarming answer of the tenant (a broken invariant, a removal, a thumbprint "
        "mismatch) awaits confirmation by the next polls (confirm.polls), else 0.",
    ),
    MetricSpec(
        "keywatch_last_successful_poll_timestamp_seconds",
        "gauge",
        ("tenant",),
        "When the last successful poll of the tenant finished (Unix seconds).",
    ),
    MetricSpec(
        "keywatch_poll_duration_seconds",
        "histogram",
        (),
        "Duration of tenant polls (token, API call, parsing), successful or not.",
    ),
    MetricSpec(
        "keywatch_api_errors_total",
        "counter",
        ("tenant", "reason"),
        "Failed polls of the Auth0 Management API, by reason.",
    ),
    MetricSpec(
        "keywatch_events_total",
        "counter",
        ("tenant", "event"),
        "Events detected, by event type.",
    ),
    MetricSpec(
        "keywatch_scheduler_job_errors_total",
        "counter",
        ("tenant", "kind"),
        "Poll jobs that raised (error), ran too late (missed) or overlapped (max_instances).",
    ),
    MetricSpec(
        "keywatch_notifications_total",
        "counter",
        ("destination", "outcome"),
        "Notification attempts by outcome: delivered, retry (failed, will be retried) or dead "
        "(given up: a permanent error or max_age reached).",
    ),
    MetricSpec(
        "keywatch_outbox_pending",
        "gauge",
        ("destination",),
        "Deliveries waiting to be sent (due or waiting for a retry), from the store.",
    ),
    MetricSpec(
        "keywatch_outbox_oldest_pending_age_seconds",
        "gauge",
        ("destination",),
        "Age of the oldest pending delivery (0 when nothing is pending).",
    ),
    MetricSpec(
        "keywatch_deliveries_dead",
        "gauge",
        ("destination",),
        "Deliveries given up and kept in the store (dead letters); `keywatch redeliver` "
        "queues them again.",
    ),
    MetricSpec(
        "keywatch_notification_latency_seconds",
        "histogram",
        ("destination",),
        "From detecting an event to its delivery to a destination (retries included).",
    ),
    MetricSpec(
        "keywatch_tenants_polled_once",
        "gauge",
        (),
        "Tenants polled at least once (successfully or not) since this process started or "
        "took the lead: the start-up's progress (/readyz answers 200 when all are).",
    ),
    MetricSpec(
        "keywatch_leader",
        "gauge",
        (),
        "1 while this process is the leader (it polls and sends notifications; always 1 with a "
        "SQLite store), 0 while it stands by.",
    ),
    MetricSpec(
        "keywatch_store_pruned_rows_total",
        "counter",
        ("table",),
        "Rows the retention policy deleted from the store (events, deliveries) since start.",
    ),
    MetricSpec(
        "keywatch_store_size_bytes",
        "gauge",
        (),
        "Space the state store's tables take (SQLite: the database file without its WAL), "
        "read at start and after each retention run; absent until read.",
    ),
    MetricSpec(
        "auth0_signing_key_published",
        "gauge",
        ("tenant", "kid", "source"),
        "1 when the key is published at the source (jwks, jwks:<custom domain>, pem, cer), "
        "else 0; from the last fetch of the source. Kids the Management API does not know are "
        "exported when published.",
    ),
    MetricSpec(
        "keywatch_jwks_fetch_errors_total",
        "counter",
        ("tenant", "reason"),
        "Failed fetches of what the tenant publishes (JWKS, /pem, /cer, mirrors), by reason. A "
        "failed fetch is counted, never an event.",
    ),
    MetricSpec(
        "keywatch_next_key_lead_seconds",
        "gauge",
        ("tenant", "kid"),
        "How long the current key was published in the JWKS before it became current (the "
        "window verifiers had to pick it up), from when keywatch first saw it published; "
        "absent when keywatch did not see it published before.",
    ),
    MetricSpec(
        "keywatch_mirror_in_sync",
        "gauge",
        ("tenant", "mirror"),
        "1 when the mirror's last fetch served the current and next keys and no revoked key, "
        "else 0; absent until its first successful fetch.",
    ),
    MetricSpec(
        "keywatch_mirror_lag_seconds",
        "gauge",
        ("tenant", "mirror"),
        "While the mirror is behind: seconds since the change it has not followed; once in "
        "sync: how long it took to follow the last change (its propagation lag).",
    ),
    MetricSpec(
        "keywatch_build_info",
        "gauge",
        ("version",),
        "Always 1; the version label says which keywatch is running.",
    ),
)

SPECS: Mapping[str, MetricSpec] = {spec.name: spec for spec in _SPECS}
METRIC_NAMES: dict[str, str] = {spec.name: spec.help for spec in _SPECS}
