"""The one place keywatch builds an ``httpx.AsyncClient``.

The daemon builds a single client and hands it to every source and notifier, so connection
pools, timeouts and the User-Agent are decided here and nowhere else.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from monitor import __version__

CONNECT_TIMEOUT_CAP = 5.0
"""Seconds. Connecting should be quick; a slow connect is a dead host, not a slow answer."""

DEFAULT_USER_AGENT = f"keywatch/{__version__}"


def build_timeout(timeout: float) -> httpx.Timeout:
    """Read/write/pool time out after ``timeout`` seconds, connect after at most 5 s."""
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    return httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_CAP, timeout))


def build_http_client(
    *,
    timeout: float = 10.0,
    max_connections: int = 200,
    user_agent: str = DEFAULT_USER_AGENT,
) -> httpx.AsyncClient:
    """A shared client: explicit timeouts and limits, no redirects, no proxy env variables.

    Redirects are not followed because an Auth0 API never redirects: a 3xx means a wrong
    domain or a captive proxy, and following it would send the bearer token elsewhere.
    ``trust_env=False`` keeps ``HTTP(S)_PROXY``/``SSL_CERT_FILE``/``.netrc`` from changing
    where credentials go behind the configuration's back.
    """
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
    return httpx.AsyncClient(
        timeout=build_timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=min(max_connections, 20),
        ),
        headers={"User-Agent": user_agent},
        follow_redirects=False,
        trust_env=False,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value: delay-seconds or an HTTP-date. None if absent or
    unreadable; never negative."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
