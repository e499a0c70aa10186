"""The prepared /metrics exposition (``prepared_chunks``) against the reference collector:
the same samples for the same state, after any sequence of changes, in both formats, plain
or gzipped from the compressed pieces kept between scrapes."""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import (
    SPECS,
    PublicationView,
    Telemetry,
    build_registry,
    prepared_chunks,
    prepared_exposition,
    render,
    render_prepared,
    tables,
)
from monitor.metrics.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from monitor.model import EventType, make_event
from monitor.web import accepts_gzip, build_app
from tests.support.snapshots import T0, key, snap

PUBLISHED = PublicationView(
    published={("k1", "jwks"): True, ("k2", "jwks"): False},
    mirrors={"https://mirror.example/jwks": (False, 12.5)},
    lead={"k1": 86_400.0},
)
Samples = Counter[tuple[str, tuple[tuple[str, str], ...], float]]
VERSION = "9.9.9"


def parsed(text: str, *, openmetrics: bool = False) -> Samples:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return Counter(
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in parse(text)
        for sample in family.samples
    )


def reference(telemetry: Telemetry) -> Samples:
    return parsed(render(build_registry(telemetry, version=VERSION)).decode())


def prepared(telemetry: Telemetry, *, openmetrics: bool = False) -> Samples:
    body = render_prepared(telemetry, version=VERSION, openmetrics=openmetrics).decode()
    return parsed(body, openmetrics=openmetrics)


def gunzipped(telemetry: Telemetry, *, openmetrics: bool = False) -> bytes:
    """The gzipped exposition, decompressed (``gzip`` checks the CRC-32 and the length)."""
    chunks = prepared_chunks(telemetry, version=VERSION, openmetrics=openmetrics, gzip=True)
    return gzip.decompress(b"".join(chunks))


def every_exposition(telemetry: Telemetry) -> Iterator[tuple[str, bytes]]:
    """(what, body) of the four expositions /metrics serves."""
    for openmetrics in (False, True):
        name = "OpenMetrics" if openmetrics else "text"
        yield name, render_prepared(telemetry, version=VERSION, openmetrics=openmetrics)
        yield f"{name}, gzip", gunzipped(telemetry, openmetrics=openmetrics)


@pytest.fixture
def small_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells of 2 tenants: a few tenants span several cells, and free slots are reused."""
    monkeypatch.setattr(tables, "CELL_TENANTS", 2)


def busy_telemetry() -> Telemetry:
    """Two tenants with keys, counters, a destination; a kid that needs escaping."""
    telemetry = Telemetry(clock=lambda: 1_740_830_400.5)
    for tenant in ("prod", "staging"):
        telemetry.add_tenant(tenant)
    odd = key('we"ird\\kid\n', "previous", current_until=T0 - timedelta(days=2))
    telemetry.set_snapshot(snap(key("k1", current_since=T0), key("k2", "next"), odd))
    telemetry.record_poll_success("prod", duration=0.3)
    telemetry.record_poll_failure("staging", reason="rate_limited", duration=12.0)
    telemetry.record_events([make_event("prod", EventType.KEY_ROTATED, T0, ["k0", "k1"])])
    telemetry.record_job_error("staging", "missed")
    telemetry.set_unconfirmed("staging", True)
    telemetry.set_destinations(["chat"])
    telemetry.record_notification("chat", "delivered", latency=0.7)
    telemetry.publication.add_tenant("prod")
    telemetry.publication.set_view("prod", PUBLISHED)
    telemetry.publication.record_fetch_error("prod", "timeout")
    return telemetry


def test_prepared_text_has_the_samples_of_the_reference_collector() -> None:
    telemetry = busy_telemetry()
    expected = reference(telemetry)
    assert any(labels and dict(labels).get("kid") == 'we"ird\\kid\n' for _, labels, _ in expected)
    assert prepared(telemetry) == expected


def test_prepared_openmetrics_has_the_same_samples_and_ends_with_eof() -> None:
    telemetry = busy_telemetry()
    body = render_prepared(telemetry, version=VERSION, openmetrics=True).decode()
    assert body.endswith("# EOF\n")
    assert "# TYPE keywatch_api_errors counter\n" in body
    assert prepared(telemetry, openmetrics=True) == reference(telemetry)


def test_every_family_is_announced_once_in_the_order_of_the_table() -> None:
    body = render_prepared(busy_telemetry(), version=VERSION).decode()
    announced = [line.split()[2] for line in body.splitlines() if line.startswith("# TYPE ")]
    assert announced == list(SPECS)


def test_start_up_progress_counts_tenants_polled_once() -> None:
    telemetry = Telemetry()
    for tenant in ("a", "b", "c"):
        telemetry.add_tenant(tenant)
    telemetry.record_poll_success("a", duration=0.1)
    telemetry.record_poll_failure("b", reason="network", duration=0.1)
    telemetry.record_poll_success("a", duration=0.1)
    assert telemetry.polled_once() == (2, 3)
    assert prepared(telemetry)[("keywatch_tenants_polled_once", (), 2.0)] == 1
    telemetry.remove_tenant("b")
    assert telemetry.polled_once() == (1, 2)
    telemetry.set_leader(False)
    assert telemetry.polled_once() == (0, 2)


# --- the cache after any sequence of changes ---------------------------------------------------

TENANTS = ("t1", "t2", "t3", "t4", "t5")
KEY_SETS = (
    (),
    (key("a"), key("b", "next")),
    (key("b"), key("c", "next"), key("a", "previous", current_until=T0)),
    (key("c", "current+revoked", revoked_at=T0), key("d", "next", cert="other")),
)

changes = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(TENANTS)),
        st.tuples(st.just("remove"), st.sampled_from(TENANTS)),
        st.tuples(st.just("keys"), st.sampled_from(TENANTS), st.integers(0, len(KEY_SETS) - 1)),
        st.tuples(st.just("success"), st.sampled_from(TENANTS)),
        st.tuples(st.just("failure"), st.sampled_from(TENANTS)),
        st.tuples(st.just("rotation"), st.sampled_from(TENANTS)),
        st.tuples(st.just("job_error"), st.sampled_from(TENANTS)),
        st.tuples(st.just("unconfirmed"), st.sampled_from(TENANTS), st.booleans()),
        st.tuples(st.just("leader"), st.booleans()),
        st.tuples(st.just("publishes"), st.sampled_from(TENANTS), st.booleans()),
        st.tuples(st.just("fetch_error"), st.sampled_from(TENANTS)),
    ),
    max_size=25,
)


def apply(telemetry: Telemetry, change: tuple[object, ...], clock: list[float]) -> None:
    clock[0] += 1
    kind, *args = change
    tenant = str(args[0])
    if kind == "publishes":
        telemetry.publication.add_tenant(tenant)
        telemetry.publication.set_view(tenant, PUBLISHED if args[1] else PublicationView())
    elif kind == "fetch_error":
        telemetry.publication.record_fetch_error(tenant, "network")
    elif kind == "add":
        telemetry.add_tenant(tenant)
    elif kind == "remove":
        telemetry.remove_tenant(tenant)
    elif kind == "keys":
        telemetry.set_snapshot(snap(*KEY_SETS[int(str(args[1]))], tenant=tenant))
    elif kind == "success":
        telemetry.record_poll_success(tenant, duration=0.2)
    elif kind == "failure":
        telemetry.record_poll_failure(tenant, reason="timeout", duration=10.0)
    elif kind == "rotation":
        telemetry.record_events([make_event(tenant, EventType.KEY_ROTATED, T0, ["a", "b"])])
    elif kind == "job_error":
        telemetry.record_job_error(tenant, "max_instances")
    elif kind == "unconfirmed":
        telemetry.set_unconfirmed(tenant, bool(args[1]))
    else:
        telemetry.set_leader(bool(args[0]))


@settings(max_examples=150, deadline=None)
@given(changes, st.booleans())
def test_a_scrape_after_any_change_shows_exactly_the_reference_state(
    sequence: list[tuple[object, ...]], zero_counters: bool
) -> None:
    """Plain and gzipped, in both formats: each scrape reuses the pieces the previous ones
    compressed, so a piece kept after its lines changed would show here."""
    clock = [1_000.0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tables, "CELL_TENANTS", 2)
        telemetry = Telemetry(clock=lambda: clock[0], zero_counters=zero_counters)
    for change in sequence:
        apply(telemetry, change, clock)
        expected = reference(telemetry)
        for what, body in every_exposition(telemetry):
            found = parsed(body.decode(), openmetrics=what.startswith("OpenMetrics"))
            assert found == expected, f"{what}, after {change}"


@pytest.mark.usefixtures("small_cells")
def test_a_kid_gone_and_a_tenant_removed_leave_no_series_in_any_exposition() -> None:
    telemetry = busy_telemetry()
    for what, body in every_exposition(telemetry):  # every piece compressed and kept
        assert b'kid="k1"' in body and b'tenant="staging"' in body, what
    telemetry.set_snapshot(snap(key("k2")))
    telemetry.publication.set_view("prod", PublicationView(published={("k2", "jwks"): True}))
    telemetry.remove_tenant("staging")
    for what, body in every_exposition(telemetry):
        assert b'kid="k1"' not in body, what
        assert b'tenant="staging"' not in body, what
        assert b'kid="k2",state="current",tenant="prod"} 1' in body, what


@pytest.mark.usefixtures("small_cells")
def test_a_scrape_after_a_change_shows_it_in_every_exposition() -> None:
    clock = [1_000.0]
    telemetry = Telemetry(clock=lambda: clock[0])
    for tenant in ("a", "b", "c", "d", "e"):
        telemetry.add_tenant(tenant)
        telemetry.record_poll_success(tenant, duration=0.1)
    for what, body in every_exposition(telemetry):
        assert b'keywatch_tenant_up{tenant="d"} 1' in body, what
    clock[0] = 2_000.0
    telemetry.record_poll_failure("d", reason="timeout", duration=10.0)
    telemetry.record_poll_success("e", duration=0.1)
    for what, body in every_exposition(telemetry):
        assert b'keywatch_tenant_up{tenant="d"} 0' in body, what
        assert b'keywatch_api_errors_total{reason="timeout",tenant="d"} 1' in body, what
        assert b'keywatch_last_successful_poll_timestamp_seconds{tenant="e"} 2000' in body, what
        assert b'keywatch_last_successful_poll_timestamp_seconds{tenant="a"} 1000' in body, what


def test_scrapes_during_changes_end_on_the_reference_state(small_cells: None) -> None:
    """Pieces compressed while other threads change lines are not kept past the change."""
    clock = [1_000.0]
    telemetry = Telemetry(clock=lambda: clock[0])
    done = threading.Event()

    def change() -> None:
        for step in range(300):
            tenant = TENANTS[step % len(TENANTS)]
            apply(telemetry, ("add", tenant), clock)
            apply(telemetry, ("keys", tenant, step % len(KEY_SETS)), clock)
            apply(telemetry, ("success", tenant), clock)
            if step % 7 == 0:
                apply(telemetry, ("remove", TENANTS[step % 3]), clock)
        done.set()

    changer = threading.Thread(target=change)
    changer.start()
    scrapes = 0
    while not done.is_set() or scrapes == 0:
        gunzipped(telemetry)
        scrapes += 1
    changer.join()
    assert parsed(gunzipped(telemetry).decode()) == reference(telemetry)


# --- serving: format and encoding --------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("gzip", True),
        ("deflate, gzip;q=1.0, *;q=0.5", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("*", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_accept_encoding_decides_gzip(header: str, allowed: bool) -> None:
    assert accepts_gzip(header) is allowed


async def test_metrics_endpoint_serves_gzip_and_openmetrics_on_request() -> None:
    telemetry = busy_telemetry()

    exposition = prepared_exposition(telemetry, version=VERSION)
    app = build_app(exposition=exposition, ping_store=lambda: None, polled_all=lambda: True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        zipped = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
        # what Prometheus sends when it prefers OpenMetrics
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        om = await client.get("/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
    assert plain.headers["content-type"] == TEXT_CONTENT_TYPE
    assert plain.content == render_prepared(telemetry, version=VERSION)
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # httpx decoded it
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    assert om.headers["content-type"] == OPENMETRICS_CONTENT_TYPE
    assert parsed(om.text, openmetrics=True) == parsed(plain.text) == reference(telemetry)
