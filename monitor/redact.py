"""The one way keywatch hides secrets: in log lines, error messages, notifier verdicts and URLs.

A secret value is replaced by ``***`` wherever it appears. Values are replaced longest first, so
a secret that contains another is hidden whole rather than leaving its tail behind, and only
values of at least ``MIN_SECRET_LENGTH`` characters count: a one- or two-character "secret"
would blank out ordinary words and tell a reader which letters it was made of.

For URLs there are two helpers: ``redact_url`` shows a URL to people without its password or
query string; ``url_secrets`` lists the values inside a URL (password, secret query parameters,
each raw and percent-decoded) that must not reach a message, for a ``Redactor``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["MIN_SECRET_LENGTH", "PLACEHOLDER", "Redactor", "redact_url", "scheme_of", "url_secrets"]

PLACEHOLDER = "***"
MIN_SECRET_LENGTH = 4

_SECRET_QUERY_PARAMETERS = frozenset(
    {"password", "sslpassword", "token", "access_token", "api_key", "apikey", "key", "secret"}
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


class Redactor:
    """Hides a fixed set of secret values in text; build a new one when the secrets change."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        unique = {value for value in secrets if value and len(value) >= MIN_SECRET_LENGTH}
        self._secrets = tuple(sorted(unique, key=len, reverse=True))

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values hidden, longest first."""
        return self._secrets

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, PLACEHOLDER)
        return text


def scheme_of(url: str) -> str:
    """The URL's scheme in lower case, or "" when it has none."""
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def redact_url(url: str) -> str:
    """``scheme://user:***@host:port/path``: the password masked, the query string dropped."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return f"{scheme_of(url)}://{PLACEHOLDER}"
    user = parts.username or ""
    if parts.password is not None:
        credentials = f"{user}:{PLACEHOLDER}@"
    else:
        credentials = f"{user}@" if user else ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{credentials}{host}{port}{parts.path}"


def url_secrets(url: str) -> set[str]:
    """Every form in which a secret inside ``url`` may appear in a message about it."""
    try:
        parts = urlsplit(url)
        found = {parts.password} if parts.password else set()
        found |= {
            value
            for name, value in parse_qsl(parts.query, keep_blank_values=False)
            if name.lower() in _SECRET_QUERY_PARAMETERS
        }
    except ValueError:
        return set()
    return {form for secret in found for form in (secret, unquote(secret)) if form}
