"""monitor.templates through the notifiers: user templates replace the human text, are
sandboxed, escaped per kind and checked at load."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from monitor.model import EventType, make_event
from monitor.notify import sample_event
from monitor.templates import MessageTemplate, TemplateError, check_template
from tests.support.notify import (
    DETECTED,
    NOW,
    notifier,
    payload,
    revoked,
    rotation,
)


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("slack", lambda body: body["blocks"][1]["text"]["text"]),
        ("slack", lambda body: body["text"]),
        ("teams", lambda body: body["attachments"][0]["content"]["body"][0]["text"]),
        ("discord", lambda body: body["embeds"][0]["description"]),
        ("googlechat", lambda body: body["text"]),
        ("webhook", lambda body: body["data"]["message"]),
        ("pagerduty", lambda body: body["payload"]["summary"]),
        ("alertmanager", lambda body: body[0]["annotations"]["description"]),
    ],
)
def test_template_replaces_the_human_text(kind: str, where: Any) -> None:
    template = (
        "{{ event.severity | upper }}: {{ event.tenant }} lost {{ event.kid }} ({{ event.type }})"
    )
    body = payload(notifier(kind, template=template).render(revoked(), now=NOW))
    assert where(body) == "CRITICAL: prod lost kid-old (key.revoked)"


def test_template_sees_every_documented_field() -> None:
    template = (
        "{{ event.id }}|{{ event.tenant }}|{{ event.type }}|{{ event.severity }}|"
        "{{ event.detected_at }}|{{ event.kid }}|{{ event.old_kid }}|{{ event.new_kid }}|"
        "{{ event.details.new_thumbprint }}|{{ event.details.thumbprint }}|{{ event.summary }}"
    )
    check_template(template)
    text = MessageTemplate(template).render(rotation())
    assert text == (
        f"{rotation().id}|prod|key.rotated|warning|2026-05-01T11:59:30.000Z||kid-old|kid-new|"
        "BBBB2222||signing key rotated on prod: kid-old -> kid-new"
    )


def test_template_values_are_escaped_but_its_own_markup_is_kept() -> None:
    template = "<https://runbooks.example/keys|Runbook> {{ event.kid }}"
    body = payload(notifier("slack", template=template).render(revoked(kid="a<b>&c"), now=NOW))
    assert body["text"] == "<https://runbooks.example/keys|Runbook> a&lt;b&gt;&amp;c"
    discord = payload(
        notifier("discord", template="**{{ event.kid }}**").render(revoked(kid="a_b*"), now=NOW)
    )
    assert discord["embeds"][0]["description"] == r"**a\_b\***"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("hello\n{% if %}", "template line 2: syntax error: Expected an expression"),
        ("{{ event.kid }\n", "template line 1: syntax error: unexpected '}'"),
        ("{{ event.tenant | shout }}", "template line 1: No filter named 'shout'"),
        ("a\nb\n{{ event.detials }}", "template line 3: unknown variable event.detials"),
        ("{{ evnt.kid }}", "template line 1: unknown variable evnt"),
        (
            "{{ event.details.thumbprnt }}",
            "template line 1: unknown variable event.details.thumbprnt",
        ),
        ("{{ event.tenant.nope }}", "template line 1: a str value has no attribute 'nope'"),
        ("{{ event.path_of('x') }}", "template line 1: unknown variable event.path_of"),
        ("{{ event.__class__ }}", "template line 1: refused by the sandbox: event.__class__"),
        (
            "x\n{{ event.__class__.__init__.__globals__ }}",
            "template line 2: refused by the sandbox: event.__class__",
        ),
        ("{{ event['_path'] }}", "refused by the sandbox: event._path"),
        ("{{ ''.__class__.__mro__ }}", "refused by the sandbox: attribute '__class__' of a str"),
        ("{{ event.details.update({'x': 1}) }}", "unknown variable event.details.update"),
        ("{{ cycler.__init__.__globals__ }}", "refused by the sandbox: attribute '__init__'"),
        ("{{ range(10**6) | list }}", "OverflowError: Range too big"),
        ("{{ 1 / 0 }}", "template line 1: ZeroDivisionError: division by zero"),
    ],
)
def test_bad_templates_are_refused_with_their_line(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(source)
    assert message in str(caught.value)


def test_a_template_failing_on_one_event_falls_back_to_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="monitor.notify")
    # Passes the load-time check (sample tenant "example"), divides by zero for "prod".
    template = "{{ 100 // (event.tenant | length - 4) }}"
    check_template(template)
    body = payload(notifier("slack", template=template).render(revoked(), now=NOW))
    assert body["text"] == "signing key kid-old revoked on prod"
    assert "template failed, sending the default text" in caplog.text
    assert "ZeroDivisionError" in caplog.text


def test_details_named_like_dict_methods_are_details() -> None:
    template = "[{{ event.details.keys }}]"
    check_template(template)
    no_next = make_event(
        "prod", EventType.TENANT_NO_NEXT_KEY, DETECTED, ["k"], details={"keys": "a:current"}
    )
    assert MessageTemplate(template).render(no_next) == "[a:current]"
    assert MessageTemplate(template).render(rotation()) == "[]"
    assert MessageTemplate("{{ event.details.get('x', 'none') }}").render(rotation()) == "none"


def test_missing_details_render_empty_at_run_time_only() -> None:
    template = "[{{ event.details.revoked_at }}]"
    check_template(template)
    assert MessageTemplate(template).render(rotation()) == "[]"
    with pytest.raises(TemplateError, match=r"unknown variable event\.details\.revoked_at"):
        MessageTemplate(template).render(rotation(), lenient=False)


def test_sample_event_is_new_each_time() -> None:
    first = sample_event(tenant="prod", detected_at=NOW)
    second = sample_event(tenant="prod", detected_at=NOW + timedelta(seconds=1))
    assert first.type is EventType.KEY_ROTATED and first.tenant == "prod"
    assert first.id != second.id
    assert first.old_kid and first.new_kid and "new_thumbprint" in first.details
