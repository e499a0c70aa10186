"""Fetching what a tenant publishes: its JWKS (and custom domains'), ``/pem``, ``/cer``, mirrors.

``PublicationReader`` is one tenant's fetcher. ``read(changed=..., wanted=...)`` returns one
``Reading`` per target: what a fresh fetch found (the published keys or the certificate's
SHA-1), or the reason it failed, or nothing new (the target was not ``wanted`` this poll, or
Auth0's answer is still fresh by its ``Cache-Control: max-age``). Auth0's endpoints are fetched
at most as often as their ``max-age`` allows, unless the Management API just showed a change
(``changed``): then at once, since a verifier should see the new key now. Mirrors (the user's
own services) have no ``max-age``: fetched whenever wanted. Which targets are wanted in a poll
is the caller's choice (``monitor.publishing``: all while a change propagates, each at its
``publication_recheck`` otherwise). A failed fetch is a ``reason`` (the ``SourceError``
reasons), never an exception, and never a finding. The comparing is ``monitor.publication``'s.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx

from monitor.clock import utc_now
from monitor.errors import MalformedResponse, SourceError
from monitor.httpclient import (
    MAX_ANSWER_BYTES,
    Answer,
    ResponseTooLarge,
    build_timeout,
    request_limited,
)
from monitor.publication import PublishedKey, Target, TargetKind, der_sha1, parse_jwks, pem_sha1
from monitor.redact import redact_url
from monitor.sources._errors import ErrorReporter, translate_httpx_errors

log = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)")
_NO_CACHE = re.compile(r"(?:^|[,\s])(no-store|no-cache)(?:$|[,\s=])")


def max_age(cache_control: str | None) -> float:
    """Seconds an answer stays fresh by its ``Cache-Control`` (0 without one)."""
    if not cache_control or _NO_CACHE.search(cache_control.lower()):
        return 0.0
    match = _MAX_AGE.search(cache_control.lower())
    return float(match.group(1)) if match else 0.0


@dataclass(frozen=True, slots=True)
class Reading:
    """One target's outcome in one poll. ``fresh`` is False when the last answer is still
    fresh (nothing fetched) or the fetch failed (``error`` is then its reason)."""

    target: Target
    fresh: bool = False
    keys: tuple[PublishedKey, ...] | None = None
    cert_sha1: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Source:
    target: Target
    url: str


def publication_targets(
    api_base: str,
    *,
    jwks: bool,
    jwks_urls: Iterable[str] = (),
    cert_endpoints: Iterable[str] = (),
    mirrors: Iterable[str] = (),
) -> list[tuple[Target, str]]:
    """(target, URL to fetch) for everything a tenant's configuration asks to check."""
    base = api_base.rstrip("/")
    found: list[tuple[Target, str]] = []
    if jwks:
        url = f"{base}{JWKS_PATH}"
        found.append((Target(TargetKind.JWKS, redact_url(url), "jwks"), url))
    for url in jwks_urls:
        label = f"jwks:{urlsplit(url).netloc}"
        found.append((Target(TargetKind.JWKS, redact_url(url), label), url))
    for kind in cert_endpoints:
        url = f"{base}/{kind}"
        found.append((Target(TargetKind(kind), redact_url(url), kind), url))
    for url in mirrors:
        found.append((Target(TargetKind.MIRROR, redact_url(url), redact_url(url)), url))
    return found


class PublicationReader:
    """Fetches one tenant's published keys, honouring ``Cache-Control``; see the module."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        tenant: str,
        targets: Iterable[tuple[Target, str]],
        timeout: float = 10.0,
    ) -> None:
        self._http = http
        self._tenant = tenant
        self._sources = [_Source(target, url) for target, url in targets]
        self._timeout = build_timeout(timeout)
        self._errors = ErrorReporter(tenant, scrub=str)
        self._fresh_until: dict[str, datetime] = {}
        self.requests_made = 0

    @property
    def targets(self) -> list[Target]:
        return [source.target for source in self._sources]

    async def read(
        self,
        *,
        changed: bool,
        wanted: Collection[Target] | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> list[Reading]:
        """Every target's reading of this poll, the ``wanted`` ones (None: all) fetched
        concurrently; the others read as nothing new."""
        moment = now()
        due = [
            source
            for source in self._sources
            if (wanted is None or source.target in wanted) and self._due(source, changed, moment)
        ]
        if not due:  # the steady state: no task, no gather
            return [Reading(source.target) for source in self._sources]
        fetched = dict(
            zip(
                (source.target for source in due),
                await asyncio.gather(*(self._read(source, moment=moment) for source in due)),
                strict=True,
            )
        )
        return [fetched.get(source.target) or Reading(source.target) for source in self._sources]

    def _due(self, source: _Source, changed: bool, moment: datetime) -> bool:
        """False while Auth0's last answer is fresh by its ``max-age`` and nothing changed."""
        if changed or source.target.is_mirror:
            return True
        cached_until = self._fresh_until.get(source.url)
        return cached_until is None or moment >= cached_until

    async def _read(self, source: _Source, *, moment: datetime) -> Reading:
        cacheable = not source.target.is_mirror
        try:
            response = await self._get(source)
            reading = self._parse(source, response)
        except SourceError as exc:
            log.info(
                "publication fetch failed: %s",
                exc,
                extra={"tenant": self._tenant, "reason": exc.reason},
            )
            return Reading(source.target, error=exc.reason)
        if cacheable:
            age = max_age(response.headers.get("cache-control"))
            self._fresh_until[source.url] = moment + timedelta(seconds=age)
        return reading

    async def _get(self, source: _Source) -> Answer:
        endpoint = f"GET {source.target.url}"
        self.requests_made += 1
        with translate_httpx_errors(tenant=self._tenant, endpoint=endpoint):
            try:
                response = await request_limited(
                    self._http,
                    "GET",
                    source.url,
                    limit=MAX_ANSWER_BYTES,
                    endpoint=endpoint,
                    timeouts=self._timeout,
                )
            except ResponseTooLarge as exc:
                raise self._errors.malformed(str(exc)) from None
        status = response.status_code
        if status == 200:
            return response
        if status == 429 or status >= 500:
            raise self._errors.temporary_status_error(response, endpoint, None)
        raise self._errors.status_error(response, endpoint)

    def _parse(self, source: _Source, response: Answer) -> Reading:
        target = source.target
        endpoint = f"GET {target.url}"
        if target.kind is TargetKind.CER:
            with self._errors.shape_errors(endpoint):
                return Reading(target, fresh=True, cert_sha1=der_sha1(response.content))
        if target.kind is TargetKind.PEM:
            with self._errors.shape_errors(endpoint):
                return Reading(target, fresh=True, cert_sha1=pem_sha1(_text(response)))
        body = self._errors.json_body(response, endpoint)
        with self._errors.shape_errors(endpoint):
            return Reading(target, fresh=True, keys=parse_jwks(body, target.kind.value))


def _text(response: Answer) -> str:
    try:
        return response.content.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedResponse("pem: not ASCII text") from exc
