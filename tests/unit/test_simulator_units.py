"""Pure pieces of the simulator: token buckets, malformed bodies, key pools, listen addresses."""

from __future__ import annotations

import json

import pytest

from monitor.simulator import KeyPool, parse_listen
from monitor.simulator.faults import render_malformed
from monitor.simulator.ratelimit import BucketSpec, TokenBucket, resolve_preset
from monitor.simulator.tenant import iso_millis


def test_token_bucket_refills_continuously_and_reports_the_next_refill() -> None:
    bucket = TokenBucket(BucketSpec(2, 2.0), now=100.0)
    first, second, third = (bucket.take(100.0) for _ in range(3))
    assert [d.allowed for d in (first, second, third)] == [True, True, False]
    assert [d.remaining for d in (first, second, third)] == [1, 0, 0]
    assert first.reset == 101  # ceil(100 + 0.5): the next token arrives half a second later
    assert third.wait == pytest.approx(0.5)
    assert third.retry_after() == "1"
    assert bucket.take(100.25).allowed is False
    assert bucket.take(100.5).allowed is True
    assert bucket.peek(1000.0).remaining == 2  # never above the burst
    assert bucket.peek(1000.0).headers() == {
        "x-ratelimit-limit": "2",
        "x-ratelimit-remaining": "2",
        "x-ratelimit-reset": "1000",
    }


def test_presets() -> None:
    free = resolve_preset("free")
    assert (free.management.size, free.management.per_second) == (2, 2.0)
    assert (free.rotate.size, free.rotate.per_second * 86_400) == (5, pytest.approx(5))
    assert (free.token.size, free.jwks.size) == (30, 20)
    enterprise = resolve_preset("enterprise")
    assert (enterprise.management.size, enterprise.management.per_second) == (50, 16.0)
    with pytest.raises(ValueError, match="choose one of free, enterprise, unlimited"):
        resolve_preset("platinum")
    with pytest.raises(ValueError, match="positive rate"):
        BucketSpec(1, 0)


def test_malformed_token_bodies() -> None:
    token = {"access_token": "a.b.c", "expires_in": 86400, "scope": "", "token_type": "Bearer"}
    wrong_type, _ = render_malformed("wrong_type", token)
    assert json.loads(wrong_type)["expires_in"] == "86400"
    missing, _ = render_malformed("missing_field", token)
    assert "access_token" not in json.loads(missing)
    assert token["access_token"] == "a.b.c"  # the original is untouched
    html, media_type = render_malformed("html", token)
    assert media_type.startswith("text/html") and html.startswith(b"<!DOCTYPE html>")


def test_malformed_single_key_and_jwks_bodies() -> None:
    key = {"kid": "k", "cert": "c", "thumbprint": "T", "fingerprint": "F", "current": True}
    assert json.loads(render_malformed("wrong_type", key)[0])["current"] == "true"
    assert json.loads(render_malformed("empty", key)[0]) == {}
    jwks = {"keys": [{"kid": "a", "x5c": ["AA=="]}, {"kid": "b", "x5c": ["AA=="]}]}
    assert json.loads(render_malformed("wrong_type", jwks)[0])["keys"]["a"]["kid"] == "a"
    assert "kid" not in json.loads(render_malformed("missing_field", jwks)[0])["keys"][0]
    without_current = json.loads(render_malformed("no_current", jwks, current_kid="a")[0])
    assert [item["kid"] for item in without_current["keys"]] == ["b"]


def test_key_pool_hands_out_keys_round_robin() -> None:
    pool = KeyPool(2)
    first, second, third = pool.take(), pool.take(), pool.take()
    assert first is third and first is not second
    with pytest.raises(ValueError, match="positive integer"):
        KeyPool(0)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "host:", "host:70000", "host:http"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_listen(listen)


def test_iso_millis() -> None:
    assert iso_millis(1_800_000_000.1234) == "2027-01-15T08:00:00.123Z"
