"""The Prometheus collector: renders a ``Telemetry`` at scrape time, from a copy taken under
its lock, into fresh metric families (no I/O, no Auth0 calls)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

from monitor.metrics.exposition import gzip_chunks, lines_by_name, plain_chunks
from monitor.metrics.names import SPECS, MetricSpec
from monitor.metrics.telemetry import DestinationCopy, ScrapeCopy, Telemetry


def _family(spec: MetricSpec) -> Metric:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.kind == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


class KeywatchCollector:
    """Renders a ``Telemetry`` at scrape time: no I/O, no Auth0 calls."""

    def __init__(self, telemetry: Telemetry, *, version: str) -> None:
        self._telemetry = telemetry
        self._version = version

    def describe(self) -> Iterable[Metric]:
        """Empty families: lets a registry check names without running a collection."""
        return [_family(spec) for spec in SPECS.values()]

    def collect(self) -> Iterator[Metric]:
        scrape = self._telemetry.scrape_copy()
        families = process_families(scrape, version=self._version)
        for series in scrape.series:
            for name, samples in series:
                families[name].samples.extend(samples)
        yield from families.values()


def process_families(scrape: ScrapeCopy, *, version: str) -> dict[str, Metric]:
    """Every family of ``SPECS``, holding the process-wide samples only (no tenant's)."""
    families = {spec.name: _family(spec) for spec in SPECS.values()}
    histogram = families["keywatch_poll_duration_seconds"]
    assert isinstance(histogram, HistogramMetricFamily)
    histogram.add_metric([], scrape.buckets, scrape.duration_sum)
    for destination in scrape.destinations:
        _add_destination(families, destination)
    families["keywatch_tenants_polled_once"].samples.append(
        Sample("keywatch_tenants_polled_once", {}, scrape.polled_once)
    )
    families["keywatch_leader"].samples.append(
        Sample("keywatch_leader", {}, 1 if scrape.leader else 0)
    )
    for table, rows in scrape.pruned.items():
        name = "keywatch_store_pruned_rows_total"
        families[name].samples.append(Sample(name, {"table": table}, rows))
    if scrape.store_size is not None:
        name = "keywatch_store_size_bytes"
        families[name].samples.append(Sample(name, {}, scrape.store_size))
    families["keywatch_build_info"].samples.append(
        Sample("keywatch_build_info", {"version": version}, 1)
    )
    return families


def _add_destination(families: dict[str, Metric], destination: DestinationCopy) -> None:
    labels = {"destination": destination.name}

    def add(name: str, value: float, **extra: str) -> None:
        families[name].samples.append(Sample(name, {**labels, **extra}, value))

    for outcome, count in destination.outcomes.items():
        add("keywatch_notifications_total", count, outcome=outcome)
    add("keywatch_outbox_pending", destination.pending)
    add("keywatch_outbox_oldest_pending_age_seconds", destination.oldest_pending_age)
    add("keywatch_deliveries_dead", destination.dead)
    latency = families["keywatch_notification_latency_seconds"]
    assert isinstance(latency, HistogramMetricFamily)
    latency.add_metric([destination.name], destination.latency_buckets, destination.latency_sum)


def build_registry(telemetry: Telemetry, *, version: str) -> CollectorRegistry:
    """A fresh registry holding only the keywatch collector (nothing from the global one)."""
    registry = CollectorRegistry()
    registry.register(KeywatchCollector(telemetry, version=version))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry`` (the reference, slow for big fleets)."""
    return generate_latest(registry)


def prepared_exposition(
    telemetry: Telemetry, *, version: str
) -> Callable[[bool, bool], Iterable[bytes]]:
    """``prepared_chunks`` of ``telemetry`` as ``/metrics`` calls it: OpenMetrics or not,
    gzipped or not."""

    def exposition(openmetrics: bool, gzip: bool) -> Iterable[bytes]:
        return prepared_chunks(telemetry, version=version, openmetrics=openmetrics, gzip=gzip)

    return exposition


def prepared_chunks(
    telemetry: Telemetry, *, version: str, openmetrics: bool = False, gzip: bool = False
) -> Iterable[bytes]:
    """The exposition ``/metrics`` serves: every tenant's prepared lines (each family as of
    when it is written), and the process-wide samples (a few per destination) formatted now.
    Same samples as ``render``. Plain: a family at a time; ``gzip``: one gzip stream, whole
    (its pieces, from ``exposition.gzip_chunks``)."""
    process = lines_by_name(
        (name, family.samples)
        for name, family in process_families(telemetry.process_copy(), version=version).items()
    )
    if gzip:
        return gzip_chunks(telemetry.tables, process, openmetrics=openmetrics)
    return plain_chunks(telemetry.tables, process, openmetrics=openmetrics)


def render_prepared(telemetry: Telemetry, *, version: str, openmetrics: bool = False) -> bytes:
    """``prepared_chunks``, joined."""
    return b"".join(prepared_chunks(telemetry, version=version, openmetrics=openmetrics))
