"""Showing a store URL in messages without its credentials."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")

_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


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
        return f"{scheme_of(url)}://***"
    user = parts.username or ""
    credentials = f"{user}:***@" if parts.password is not None else (f"{user}@" if user else "")
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{credentials}{host}{port}{parts.path}"


def secrets_in(url: str) -> set[str]:
    """Every form in which a password may appear in messages about ``url``."""
    try:
        parts = urlsplit(url)
        found = {parts.password} if parts.password else set()
        found |= {
            value
            for name, value in parse_qsl(parts.query, keep_blank_values=False)
            if name.lower() in _SECRET_PARAMETERS
        }
    except ValueError:
        return set()
    return {form for secret in found for form in (secret, unquote(secret)) if form}


def scrub(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
