"""The one redaction helper: placeholder, longest secret first, minimum length, URLs."""

from __future__ import annotations

import pytest

from monitor.redact import PLACEHOLDER, Redactor, redact_url, url_secrets


def test_secrets_are_replaced_longest_first() -> None:
    redact = Redactor(["abcd", "abcdefgh"])
    assert redact("token abcdefgh and abcd") == f"token {PLACEHOLDER} and {PLACEHOLDER}"
    assert redact.secrets == ("abcdefgh", "abcd")


def test_short_empty_and_missing_values_are_not_secrets() -> None:
    redact = Redactor(["abc", "", None, "long-enough"])
    assert redact.secrets == ("long-enough",)
    assert redact("abc long-enough") == f"abc {PLACEHOLDER}"


def test_text_without_secrets_is_returned_unchanged() -> None:
    assert Redactor()("nothing to hide") == "nothing to hide"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u:p%40ss@db.example:5433/kw?password=x",
            "postgresql://u:***@db.example:5433/kw",
        ),
        ("https://hooks.example/path?token=abcd1234", "https://hooks.example/path"),
        ("postgresql://u@[::1]:5432/kw", "postgresql://u@[::1]:5432/kw"),
        ("postgresql://u:pw@host:notaport/kw", "postgresql://***"),
    ],
)
def test_redact_url_masks_userinfo_and_drops_the_query(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_url_secrets_cover_password_and_query_tokens_raw_and_decoded() -> None:
    url = "postgresql://u:p%40ss@db/kw?sslpassword=s%2Fcret&access_token=tok-1234&sslmode=require"
    assert url_secrets(url) == {"p%40ss", "p@ss", "s/cret", "tok-1234"}
    message = f"connect to {url} failed"
    assert not any(secret in Redactor(url_secrets(url))(message) for secret in url_secrets(url))
