"""monitor.notify: the kinds registry, routing, the shared answer classification, secrets never
shown, and no placeholder where a kid belongs."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.config import DestinationConfig, Settings, TenantConfig
from monitor.detect import diff
from monitor.hygiene import HygienePolicy, findings
from monitor.model import Event, EventType
from monitor.notify import NOTIFIER_CLASSES, build_notifier
from monitor.notify.base import (
    Outcome,
    classify_status,
    parse_retry_after,
    with_query,
)
from monitor.notify.routing import matches
from monitor.publication import Target, TargetKind, Watch, check_mirror, judge
from monitor.reachability import Reachability, after_failure, after_success
from monitor.templates import (
    escape_slack,
    event_facts,
    event_title,
    limit,
    limit_escaped,
    utf16_len,
)
from tests.support.notify import (
    DISCORD_URL,
    NOW,
    ROUTING_KEY,
    SECRET_A,
    SECRET_B,
    SECRET_VALUES,
    SLACK_URL,
    destination,
    notifier,
    revoked,
    rotation,
    tenant_event,
)
from tests.support.snapshots import STEADY, T0, TENANT, key, snap

# --- the registry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rate"),
    [
        ("slack", 1.0),
        ("teams", 2.0),
        ("discord", 5.0),
        ("googlechat", 1.0),
        ("webhook", 5.0),
        ("alertmanager", 5.0),
        ("pagerduty", 5.0),
    ],
)
def test_build_notifier_picks_the_kind_and_its_default_rate(kind: str, rate: float) -> None:
    built = notifier(kind)
    assert built.kind == kind
    assert built.name == f"{kind}-dest"
    assert built.rate_limit == rate
    assert notifier(kind, rate_limit=0.25).rate_limit == 0.25
    assert set(NOTIFIER_CLASSES) == {
        "slack",
        "teams",
        "discord",
        "googlechat",
        "webhook",
        "alertmanager",
        "pagerduty",
    }


def test_a_notifier_refuses_another_kinds_config() -> None:
    with pytest.raises(ValueError, match="needs a teams destination"):
        NOTIFIER_CLASSES["teams"](destination("slack"))


def test_matches_filters_tenants_types_and_severity() -> None:
    default = destination("slack")  # min_severity warning
    assert matches(default, rotation()) and matches(default, revoked())
    assert not matches(default, tenant_event(EventType.KEY_ADDED))
    only_revoked = destination("slack", events=["key.revoked"])
    assert matches(only_revoked, revoked()) and not matches(only_revoked, rotation())
    info = destination("slack", min_severity="INFO")
    assert matches(info, tenant_event(EventType.KEY_ADDED))
    critical = destination("slack", min_severity="critical")
    assert matches(critical, revoked()) and not matches(critical, rotation())
    staging_only = destination("slack", tenants=["staging"])
    assert not matches(staging_only, revoked()) and matches(staging_only, revoked(tenant="staging"))
    assert notifier("slack", tenants=["staging"]).matches(revoked(tenant="staging"))


# --- shared classification -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "retry_after", "detail"),
    [
        (200, {}, Outcome.DELIVERED, None, "HTTP 200 OK"),
        (202, {}, Outcome.DELIVERED, None, "HTTP 202 Accepted"),
        (204, {}, Outcome.DELIVERED, None, "HTTP 204 No Content"),
        (301, {"Location": "https://x"}, Outcome.DEAD, None, "redirects are not followed"),
        (307, {}, Outcome.DEAD, None, "redirects are not followed"),
        (400, {}, Outcome.DEAD, None, "HTTP 400 Bad Request"),
        (401, {}, Outcome.DEAD, None, "HTTP 401 Unauthorized"),
        (403, {}, Outcome.DEAD, None, "HTTP 403 Forbidden"),
        (404, {}, Outcome.DEAD, None, "HTTP 404 Not Found"),
        (410, {}, Outcome.DEAD, None, "HTTP 410 Gone"),
        (413, {}, Outcome.DEAD, None, "HTTP 413"),
        (422, {}, Outcome.DEAD, None, "HTTP 422"),
        (408, {}, Outcome.RETRY, None, "HTTP 408"),
        (429, {"Retry-After": "7"}, Outcome.RETRY, 7.0, "HTTP 429 Too Many Requests"),
        (429, {"retry-after": "1.5"}, Outcome.RETRY, 1.5, "HTTP 429"),
        (500, {}, Outcome.RETRY, None, "HTTP 500"),
        (502, {}, Outcome.RETRY, None, "HTTP 502"),
        (503, {"Retry-After": "Fri, 01 May 2026 12:01:00 GMT"}, Outcome.RETRY, 60.0, "HTTP 503"),
        (504, {"Retry-After": "soon"}, Outcome.RETRY, None, "HTTP 504"),
        (599, {}, Outcome.RETRY, None, "HTTP 599"),
        (101, {}, Outcome.DEAD, None, "HTTP 101"),
    ],
)
def test_classify_status(
    status: int,
    headers: dict[str, str],
    outcome: Outcome,
    retry_after: float | None,
    detail: str,
) -> None:
    verdict = classify_status(status, headers, now=NOW)
    assert verdict.outcome is outcome
    assert verdict.retry_after == retry_after
    assert verdict.status == status
    assert detail in verdict.detail


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        ("120", 120.0),
        ("2.5", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("Fri, 01 May 2026 12:00:30 GMT", 30.0),
        ("Fri, 01 May 2026 11:00:00 GMT", 0.0),
        ("tomorrow", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_with_query_keeps_other_parameters_and_replaces_its_own() -> None:
    assert with_query("https://h/p", {"wait": "true"}) == "https://h/p?wait=true"
    assert (
        with_query("https://h/p?thread_id=5&wait=false&x=a%2Fb", {"wait": "true"})
        == "https://h/p?thread_id=5&x=a%2Fb&wait=true"
    )


@given(text=st.text(max_size=300), size=st.integers(min_value=1, max_value=200))
def test_limit_keeps_a_prefix_within_the_size(text: str, size: int) -> None:
    cut = limit(text, size)
    assert utf16_len(cut) <= size
    if cut != text:
        assert cut.endswith("…") and text.startswith(cut[:-1])


@given(text=st.text(alphabet="ab&<>🔑", max_size=300), size=st.integers(1, 200))
def test_limit_escaped_never_cuts_an_entity(text: str, size: int) -> None:
    cut = limit_escaped(escape_slack(text), size)
    assert utf16_len(cut) <= size
    assert "&" not in re.sub(r"&(amp|lt|gt);", "", cut)


# --- secrets never shown -------------------------------------------------------------------


def every_destination() -> list[DestinationConfig]:
    return [
        destination("slack"),
        destination("teams"),
        destination("discord"),
        destination("googlechat"),
        destination("webhook", secrets=[SECRET_A, SECRET_B]),
        destination("alertmanager"),
        destination("pagerduty"),
    ]


def test_reprs_never_show_urls_or_secrets() -> None:
    configs = every_destination()
    settings = Settings(
        tenants=(TenantConfig(name="prod", domain="a.auth0.com", token="t"),),
        destinations=tuple(configs),
        data_dir="/tmp/kw",  # type: ignore[call-arg]
    )
    texts = [repr(settings), str(settings)]
    for config in configs:
        built = build_notifier(config)
        request = built.render(revoked(), now=NOW)
        texts += [repr(config), str(config), repr(built), str(built), repr(request)]
        texts += [repr(config.model_dump()), repr(built.classify(404, {}, b""))]
    everything = "\n".join(texts)
    for secret in [*SECRET_VALUES, "slackTokenSecret123456", "discordTokenSecret9876"]:
        assert secret.rstrip("/") not in everything


def test_secret_values_cover_urls_and_the_tokens_inside_them() -> None:
    values = set()
    for config in every_destination():
        values.update(config.secret_values())
    for expected in [
        SLACK_URL,
        "slackTokenSecret123456",
        "teamsSig12345",
        "chatKey12345",
        "chatTok12345",
        "discordTokenSecret9876",
        ROUTING_KEY,
        SECRET_A,
        SECRET_B,
        "http://am-2.internal:9093",
    ]:
        assert expected in values


def test_service_error_text_is_redacted() -> None:
    echo = json.dumps({"message": f"unknown webhook {DISCORD_URL}", "code": 1}).encode()
    verdict = notifier("discord").classify(404, {}, echo)
    assert "discordTokenSecret9876" not in verdict.detail
    assert "***" in verdict.detail


# --- no placeholder where a kid belongs (issue 8) ------------------------------------------


def publication_events() -> list[Event]:
    """A JWKS and a mirror that disagree with STEADY, then agree, as ``judge`` makes them."""
    events: list[Event] = []
    for kind in (TargetKind.JWKS, TargetKind.MIRROR):
        target = Target(kind, f"https://example.test/{kind.value}")
        watch = Watch()
        for fetched in (check_mirror(STEADY, ()), frozenset()):
            watch, found = judge(
                watch,
                fetched,
                tenant=STEADY.tenant,
                target=target,
                anchor=STEADY.taken_at,
                observed_at=STEADY.taken_at,
                polls=1,
            )
            events += found
    return events


def detected_events() -> list[Event]:
    """At least one event of every type, as detection makes them (not hand-built)."""
    rotated = snap(
        key("A", "previous"), key("B", "previous"), key("C", "current"), key("D", "next")
    )
    gap = snap(key("A", "previous"), key("B", "unknown"), key("C", "next"), minutes=1)
    changes = [
        (STEADY, rotated, ()),
        (STEADY, snap(key("A", "revoked"), key("B"), key("C", "next")), ()),
        (STEADY, snap(key("B"), key("C", "next")), ()),
        (STEADY, snap(key("A", "previous", cert="A2"), key("B"), key("C", "next")), ()),
        (STEADY, snap(key("A", "previous", thumbprint="00"), key("B"), key("C", "next")), ()),
        (STEADY, snap(key("A", "previous"), key("B"), key("C")), ()),
        (STEADY, gap, ()),
        (gap, STEADY, ("B",)),
        (gap, STEADY, ()),
        (gap, rotated, ("B",)),
    ]
    events = [e for old, new, last in changes for e in diff(old, new, last_current=last)]
    events += publication_events()
    events += hygiene_and_reachability_events()
    assert {e.type for e in events} == set(EventType)
    return events


def hygiene_and_reachability_events() -> list[Event]:
    """key.expiring, key.previous_unrevoked, tenant.rotation_overdue, tenant.unreachable and
    tenant.recovered, as monitor.hygiene and monitor.reachability make them."""
    aging = snap(
        key("A", "previous", current_until=T0 - timedelta(days=9)),
        key("B", current_since=T0 - timedelta(days=90), not_after=T0 + timedelta(days=3)),
        key("C", "next"),
    )
    policy = HygienePolicy(previous_unrevoked_after=86400.0, rotation_overdue_after=86400.0)
    events = findings(aging, now=T0, policy=policy)
    down, [unreachable] = after_failure(
        Reachability(TENANT), reason="http_5xx", error="HTTP 503", at=T0, threshold=1
    )
    _, [recovered] = after_success(down, at=T0 + timedelta(minutes=5))
    return [*events, unreachable, recovered]


@pytest.mark.parametrize("kind", sorted(NOTIFIER_CLASSES))
def test_no_message_has_a_placeholder_where_a_kid_belongs(kind: str) -> None:
    built = notifier(kind)
    for event in detected_events():
        texts = [event.summary, event_title(event), *(value for _, value in event_facts(event))]
        for text in texts:
            assert text.strip() and "None" not in text and "null" not in text, (event, text)
        body = built.render(event, now=NOW).body.decode()
        assert "None" not in body and "->  " not in body and "-> \n" not in body, (kind, body)
