from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from monitor import errors
from monitor.metrics import (
    API_ERROR_REASONS,
    JOB_ERROR_KINDS,
    METRIC_NAMES,
    POLL_DURATION_BUCKETS,
    SPECS,
    KeywatchCollector,
    Telemetry,
    build_registry,
    render,
)
from monitor.model import KEY_STATES, EventType, KeyState, Snapshot, make_event
from tests.support.deploy import find_tool

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CLOCK_NOW = 1_740_830_400.5
SHA1 = "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678"


def make_key(
    kid: str, *, sha1: str = SHA1, thumbprint: str | None = None, **fields: Any
) -> KeyState:
    thumbprint = thumbprint or sha1
    fingerprint = ":".join(thumbprint[i : i + 2] for i in range(0, len(thumbprint), 2))
    return KeyState(
        kid=kid,
        thumbprint=thumbprint,
        fingerprint=fingerprint,
        cert_sha1=sha1,
        not_before=NOW - timedelta(days=30),
        not_after=NOW + timedelta(days=3650),
        **fields,
    )


def snapshot(tenant: str, *keys: KeyState) -> Snapshot:
    return Snapshot(tenant=tenant, taken_at=NOW, keys={key.kid: key for key in keys})


def typical_keys() -> tuple[KeyState, ...]:
    return (
        make_key(
            "cur",
            current=True,
            current_since=NOW - timedelta(days=10),
            key_type="RSA",
            key_size=2048,
        ),
        make_key("nxt", next=True),
        make_key(
            "old",
            previous=True,
            current_since=NOW - timedelta(days=40),
            current_until=NOW - timedelta(days=10),
        ),
        make_key("gone", revoked=True, revoked_at=NOW - timedelta(days=5)),
    )


@pytest.fixture
def telemetry() -> Telemetry:
    telemetry = Telemetry(clock=lambda: CLOCK_NOW)
    telemetry.add_tenant("prod")
    return telemetry


@pytest.fixture
def registry(telemetry: Telemetry) -> CollectorRegistry:
    return build_registry(telemetry, version="1.2.3")


def up_and_last_success(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    """Tenant prod's keywatch_tenant_up and the time of its last successful poll."""
    tenant = {"tenant": "prod"}
    return (
        registry.get_sample_value("keywatch_tenant_up", tenant),
        registry.get_sample_value("keywatch_last_successful_poll_timestamp_seconds", tenant),
    )


def samples_with(registry: CollectorRegistry, **labels: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, sample.labels)
        for family in registry.collect()
        for sample in family.samples
        if all(sample.labels.get(name) == value for name, value in labels.items())
    ]


# --- per-key metrics ---------------------------------------------------------------------------


def test_every_key_gets_info_state_dates_and_thumbprint_check(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.set_snapshot(snapshot("prod", *typical_keys()))
    value = registry.get_sample_value

    info = {"tenant": "prod", "kid": "cur", "thumbprint": SHA1, "key_type": "RSA"}
    assert value("auth0_signing_key_info", {**info, "key_bits": "2048"}) == 1
    unknown = {"thumbprint": SHA1, "key_type": "unknown", "key_bits": "unknown"}
    assert value("auth0_signing_key_info", {"tenant": "prod", "kid": "nxt", **unknown}) == 1
    expected_flags = {"cur": "current", "nxt": "next", "old": "previous", "gone": "revoked"}
    for kid, flag in expected_flags.items():
        for state in KEY_STATES:
            labels = {"tenant": "prod", "kid": kid, "state": state}
            assert value("auth0_signing_key_state", labels) == (1 if state == flag else 0)
    cur, old, gone = (
        {"tenant": "prod", "kid": "cur"},
        {"tenant": "prod", "kid": "old"},
        {"tenant": "prod", "kid": "gone"},
    )
    since = (NOW - timedelta(days=10)).timestamp()
    assert value("auth0_signing_key_current_since_timestamp_seconds", cur) == since
    assert value("auth0_signing_key_current_until_timestamp_seconds", old) == since
    assert value("auth0_signing_key_current_until_timestamp_seconds", cur) is None
    revoked_at = (NOW - timedelta(days=5)).timestamp()
    assert value("auth0_signing_key_revoked_timestamp_seconds", gone) == revoked_at
    not_before = (NOW - timedelta(days=30)).timestamp()
    not_after = (NOW + timedelta(days=3650)).timestamp()
    assert value("auth0_signing_key_cert_not_before_timestamp_seconds", cur) == not_before
    assert value("auth0_signing_key_cert_not_after_timestamp_seconds", cur) == not_after
    assert value("auth0_signing_key_thumbprint_valid", cur) == 1


def test_a_key_may_carry_several_state_flags(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.set_snapshot(snapshot("prod", make_key("k", previous=True, revoked=True)))

    flags = {
        state: registry.get_sample_value(
            "auth0_signing_key_state", {"tenant": "prod", "kid": "k", "state": state}
        )
        for state in KEY_STATES
    }
    assert flags == {"current": 0, "next": 0, "previous": 1, "revoked": 1}


def test_thumbprint_that_does_not_match_the_certificate_is_flagged(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    forged = make_key("k", current=True, thumbprint="FF" * 20)
    telemetry.set_snapshot(snapshot("prod", forged))

    labels = {"tenant": "prod", "kid": "k"}
    assert registry.get_sample_value("auth0_signing_key_thumbprint_valid", labels) == 0


def test_unconfirmed_changes_say_whether_an_answer_awaits_confirmation(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    labels = {"tenant": "prod"}
    assert registry.get_sample_value("keywatch_unconfirmed_changes", labels) == 0
    telemetry.set_unconfirmed("prod", True)
    assert registry.get_sample_value("keywatch_unconfirmed_changes", labels) == 1
    telemetry.set_unconfirmed("prod", False)
    assert registry.get_sample_value("keywatch_unconfirmed_changes", labels) == 0
    telemetry.set_unconfirmed("removed-by-a-reload", True)  # dropped, no series appears
    assert registry.get_sample_value("keywatch_unconfirmed_changes", {"tenant": "x"}) is None


def test_unknown_dates_export_no_series(telemetry: Telemetry, registry: CollectorRegistry) -> None:
    bare = KeyState(kid="k", thumbprint=SHA1, fingerprint=SHA1, cert_sha1=SHA1, revoked=True)
    telemetry.set_snapshot(snapshot("prod", bare))

    names = {name for name, _ in samples_with(registry, kid="k")}
    assert names == {
        "auth0_signing_key_info",
        "auth0_signing_key_state",
        "auth0_signing_key_thumbprint_valid",
    }


def test_key_counts_cover_every_state_including_zero(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    cur, nxt, _, _ = typical_keys()
    telemetry.set_snapshot(snapshot("prod", cur, nxt, make_key("p1", previous=True)))

    counts = {
        state: registry.get_sample_value("auth0_signing_keys", {"tenant": "prod", "state": state})
        for state in KEY_STATES
    }
    assert counts == {"current": 1, "next": 1, "previous": 1, "revoked": 0}


def test_key_counts_are_absent_until_a_key_list_is_known(registry: CollectorRegistry) -> None:
    labels = {"tenant": "prod", "state": "next"}
    assert registry.get_sample_value("auth0_signing_keys", labels) is None


def test_a_kid_that_left_the_snapshot_loses_every_series(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.set_snapshot(snapshot("prod", *typical_keys()))
    assert samples_with(registry, kid="gone")

    cur, nxt, old, _ = typical_keys()
    telemetry.set_snapshot(snapshot("prod", cur, nxt, old))

    assert samples_with(registry, kid="gone") == []
    assert samples_with(registry, kid="cur")
    labels = {"tenant": "prod", "state": "revoked"}
    assert registry.get_sample_value("auth0_signing_keys", labels) == 0


# --- tenant lifecycle --------------------------------------------------------------------------


def test_known_tenant_starts_with_counters_at_zero_and_down(registry: CollectorRegistry) -> None:
    value = registry.get_sample_value
    tenant = {"tenant": "prod"}

    assert value("auth0_signing_key_rotations_total", tenant) == 0
    assert value("auth0_signing_key_revocations_total", tenant) == 0
    for reason in API_ERROR_REASONS:
        assert value("keywatch_api_errors_total", {**tenant, "reason": reason}) == 0
    for event_type in EventType:
        assert value("keywatch_events_total", {**tenant, "event": event_type.value}) == 0
    for kind in JOB_ERROR_KINDS:
        assert value("keywatch_scheduler_job_errors_total", {**tenant, "kind": kind}) == 0
    assert up_and_last_success(registry) == (0, None)


def test_remove_tenant_drops_every_series_of_that_tenant(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.add_tenant("dev")
    for tenant in ("prod", "dev"):
        telemetry.set_snapshot(snapshot(tenant, *typical_keys()))
        telemetry.record_poll_success(tenant, duration=0.2)

    telemetry.remove_tenant("dev")

    assert samples_with(registry, tenant="dev") == []
    assert 'tenant="dev"' not in render(registry).decode()
    assert registry.get_sample_value("keywatch_tenant_up", {"tenant": "prod"}) == 1
    assert telemetry.snapshot_of("dev") is None


def test_updates_for_an_unknown_tenant_are_dropped(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.add_tenant("dev")
    telemetry.remove_tenant("dev")

    # a poll that was in flight during the reload finishes afterwards
    telemetry.set_snapshot(snapshot("dev", *typical_keys()))
    telemetry.record_poll_success("dev", duration=0.2)
    telemetry.record_poll_failure("dev", reason="timeout", duration=0.2)
    telemetry.record_events([make_event("dev", EventType.KEY_ROTATED, NOW, ["a", "b"])])
    telemetry.record_job_error("dev", "missed")

    assert samples_with(registry, tenant="dev") == []
    assert telemetry.snapshot_of("dev") is None


def test_adding_a_known_tenant_again_keeps_its_state(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.record_poll_failure("prod", reason="timeout", duration=0.1)

    telemetry.add_tenant("prod")

    labels = {"tenant": "prod", "reason": "timeout"}
    assert registry.get_sample_value("keywatch_api_errors_total", labels) == 1


def test_polled_all_waits_for_one_poll_of_every_tenant(telemetry: Telemetry) -> None:
    telemetry.add_tenant("dev")
    assert not telemetry.polled_all()

    telemetry.record_poll_success("prod", duration=0.1)
    assert not telemetry.polled_all()

    telemetry.record_poll_failure("dev", reason="network", duration=0.1)
    assert telemetry.polled_all()


def test_snapshot_of_returns_the_latest_snapshot(telemetry: Telemetry) -> None:
    assert telemetry.snapshot_of("prod") is None
    latest = snapshot("prod", *typical_keys())

    telemetry.set_snapshot(latest)

    assert telemetry.snapshot_of("prod") is latest


# --- polls, events, jobs -----------------------------------------------------------------------


def test_poll_success_marks_the_tenant_up_at_clock_time(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.record_poll_success("prod", duration=0.3)

    assert up_and_last_success(registry) == (1, CLOCK_NOW)


def test_poll_failures_count_by_reason_and_keep_the_last_success(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.record_poll_success("prod", duration=0.3)
    telemetry.record_poll_failure("prod", reason="rate_limited", duration=0.1)
    telemetry.record_poll_failure("prod", reason="rate_limited", duration=0.1)
    telemetry.record_poll_failure("prod", reason="unauthorized", duration=0.1)
    telemetry.record_poll_failure("prod", reason="store", duration=0.1)

    def errors_for(reason: str) -> float | None:
        labels = {"tenant": "prod", "reason": reason}
        return registry.get_sample_value("keywatch_api_errors_total", labels)

    assert errors_for("rate_limited") == 2
    assert errors_for("unauthorized") == 1
    assert errors_for("store") == 1  # a reason outside the known set still counts
    assert errors_for("timeout") == 0
    assert up_and_last_success(registry) == (0, CLOCK_NOW)


def test_poll_durations_fill_the_histogram(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.record_poll_success("prod", duration=0.05)  # on a bound: le is inclusive
    telemetry.record_poll_success("prod", duration=0.3)
    telemetry.record_poll_failure("prod", reason="timeout", duration=45.0)

    def bucket(le: str) -> float | None:
        return registry.get_sample_value("keywatch_poll_duration_seconds_bucket", {"le": le})

    assert bucket("0.05") == 1
    assert bucket("0.25") == 1
    assert bucket("0.5") == 2
    assert bucket("30.0") == 2
    assert bucket("+Inf") == 3
    assert registry.get_sample_value("keywatch_poll_duration_seconds_count") == 3
    assert registry.get_sample_value("keywatch_poll_duration_seconds_sum") == pytest.approx(45.35)
    assert POLL_DURATION_BUCKETS[0] == 0.05 and POLL_DURATION_BUCKETS[-1] == 30


@pytest.mark.parametrize("duration", [-0.1, float("nan")])
def test_an_impossible_duration_is_refused(telemetry: Telemetry, duration: float) -> None:
    with pytest.raises(ValueError, match="poll duration of tenant 'prod'"):
        telemetry.record_poll_success("prod", duration=duration)


def test_events_count_by_type_with_rotations_and_revocations(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.record_events(
        [
            make_event("prod", EventType.KEY_ROTATED, NOW, ["a", "b"], old_kid="a", new_kid="b"),
            make_event("prod", EventType.KEY_ROTATED, NOW, ["b", "c"], old_kid="b", new_kid="c"),
            make_event("prod", EventType.KEY_REVOKED, NOW, ["a"], kid="a"),
            make_event("prod", EventType.KEY_ADDED, NOW, ["c"], kid="c"),
        ]
    )
    value = registry.get_sample_value
    tenant = {"tenant": "prod"}

    assert value("auth0_signing_key_rotations_total", tenant) == 2
    assert value("auth0_signing_key_revocations_total", tenant) == 1
    assert value("keywatch_events_total", {**tenant, "event": "key.rotated"}) == 2
    assert value("keywatch_events_total", {**tenant, "event": "key.revoked"}) == 1
    assert value("keywatch_events_total", {**tenant, "event": "key.added"}) == 1
    assert value("keywatch_events_total", {**tenant, "event": "key.removed"}) == 0


def test_scheduler_job_errors_count_by_kind(
    telemetry: Telemetry, registry: CollectorRegistry
) -> None:
    telemetry.record_job_error("prod", "missed")
    telemetry.record_job_error("prod", "missed")
    telemetry.record_job_error("prod", "max_instances")

    def errors_for(kind: str) -> float | None:
        labels = {"tenant": "prod", "kind": kind}
        return registry.get_sample_value("keywatch_scheduler_job_errors_total", labels)

    assert (errors_for("missed"), errors_for("max_instances"), errors_for("error")) == (2, 1, 0)


def test_build_info_carries_the_version(registry: CollectorRegistry) -> None:
    assert registry.get_sample_value("keywatch_build_info", {"version": "1.2.3"}) == 1


# --- collector contract ------------------------------------------------------------------------


def test_registering_the_collector_does_not_collect(telemetry: Telemetry) -> None:
    class NoCollectAllowed(KeywatchCollector):
        def collect(self) -> Iterator[Metric]:
            raise AssertionError("registration ran a collection")

    CollectorRegistry().register(NoCollectAllowed(telemetry, version="x"))


def test_describe_announces_exactly_what_collect_yields(telemetry: Telemetry) -> None:
    collector = KeywatchCollector(telemetry, version="x")

    described = [(family.name, family.type, family.samples) for family in collector.describe()]
    collected = [(family.name, family.type) for family in collector.collect()]

    assert [(name, kind) for name, kind, _ in described] == collected
    assert all(samples == [] for _, _, samples in described)


def test_build_registry_holds_only_keywatch_metrics(registry: CollectorRegistry) -> None:
    help_lines = re.findall(r"^# HELP (\S+) (.*)$", render(registry).decode(), re.MULTILINE)

    assert dict(help_lines) == METRIC_NAMES


def test_metric_names_and_labels_follow_prometheus_rules() -> None:
    forbidden_labels = {"type", "le", "quantile", "env", "cluster", "region", "service"}
    for name, spec in SPECS.items():
        assert re.fullmatch(r"(auth0_signing_key|keywatch)[a-z0-9_]*", name), name
        assert spec.help, name
        assert not forbidden_labels & set(spec.labels), name
        assert name.endswith("_total") == (spec.kind == "counter"), name
        if "timestamp" in name:
            assert name.endswith("_timestamp_seconds"), name


def test_known_api_error_reasons_are_those_of_the_error_tree() -> None:
    def leaves(cls: type[errors.SourceError]) -> list[type[errors.SourceError]]:
        children = cls.__subclasses__()
        return [leaf for child in children for leaf in leaves(child)] if children else [cls]

    assert set(API_ERROR_REASONS) == {leaf.reason for leaf in leaves(errors.SourceError)}


def test_collect_does_not_hold_the_lock_while_yielding(telemetry: Telemetry) -> None:
    families = KeywatchCollector(telemetry, version="x").collect()
    next(families)  # a scrape suspended half-way
    recorded = threading.Event()

    def record() -> None:
        telemetry.record_poll_success("prod", duration=0.1)
        recorded.set()

    worker = threading.Thread(target=record, daemon=True)
    worker.start()
    assert recorded.wait(timeout=5), "record_poll_success blocked behind a running collect()"


def test_collect_is_safe_while_other_threads_update(telemetry: Telemetry) -> None:
    registry = build_registry(telemetry, version="x")
    stop = threading.Event()
    failures: list[BaseException] = []

    def churn() -> None:
        try:
            index = 0
            while not stop.is_set():
                tenant = f"t{index % 20}"
                telemetry.add_tenant(tenant)
                telemetry.set_snapshot(snapshot(tenant, *typical_keys()))
                telemetry.record_poll_failure(tenant, reason="network", duration=0.1)
                if index % 3 == 0:
                    telemetry.remove_tenant(tenant)
                index += 1
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        for _ in range(20):
            assert list(registry.collect())
        assert list(text_string_to_metric_families(render(registry).decode()))
    finally:
        stop.set()
        worker.join(timeout=5)
    assert failures == []
    assert not worker.is_alive()


# --- promtool ----------------------------------------------------------------------------------


@pytest.mark.prometheus
def test_promtool_accepts_the_exposition(telemetry: Telemetry) -> None:
    telemetry.add_tenant("staging-eu")
    telemetry.set_snapshot(snapshot("prod", *typical_keys()))
    telemetry.record_poll_success("prod", duration=0.4)
    telemetry.record_poll_failure("staging-eu", reason="rate_limited", duration=2.0)
    telemetry.record_events([make_event("prod", EventType.KEY_ROTATED, NOW, ["a", "b"])])
    telemetry.record_job_error("prod", "missed")
    exposition = render(build_registry(telemetry, version="0.1.0"))

    result = subprocess.run(
        [find_tool("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
        check=False,
    )

    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, problems
    assert problems.strip() == ""
