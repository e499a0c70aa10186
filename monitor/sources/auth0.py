"""Client for the Auth0 Management API signing-key endpoints: the Auth0 ``SnapshotSource``.

One ``Auth0Client`` per tenant, sharing the daemon's ``httpx.AsyncClient``:

- token: client credentials (cached until shortly before it expires) or a static token;
  a 401 drops the cached token, fetches a new one and retries once (``_token``);
- retries: 429, 5xx, timeouts and network errors, with capped exponential backoff, honouring
  ``Retry-After`` and ``x-ratelimit-reset``, bounded in attempts and in total waiting
  (``_retry``);
- pacing: when ``x-ratelimit-remaining`` runs low, wait for the reset before the next call,
  because a Free tenant shares 2 requests/s with every other tool that uses it (``_ratelimit``);
- errors: every failure is a ``monitor.errors.SourceError`` whose message names the tenant and
  the endpoint path, and never contains the client secret or a token (``_errors``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime
from urllib.parse import quote

import httpx

from monitor.clock import utc_now
from monitor.detect import is_suspicious
from monitor.errors import SourceError
from monitor.httpclient import Answer, build_timeout
from monitor.model import KeyState, Snapshot, parse_signing_key, parse_signing_keys
from monitor.redact import Redactor
from monitor.sources._errors import REQUIRED_SCOPE, ErrorReporter, translate_httpx_errors
from monitor.sources._retry import DEFAULT_POLICY, RetryingSender, RetryPolicy
from monitor.sources._token import TOKEN_PATH, Credentials, TokenCache

__all__ = [
    "KEYS_PATH",
    "REQUIRED_SCOPE",
    "TOKEN_PATH",
    "Auth0Client",
    "Credentials",
    "RetryPolicy",
    "translate_httpx_errors",
]

logger = logging.getLogger(__name__)

KEYS_PATH = "/api/v2/keys/signing"


class Auth0Client:
    """The signing-key endpoints of one tenant's Management API."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        tenant: str,
        api_base: str,
        audience: str,
        credentials: Credentials,
        timeout: float = 10.0,
        policy: RetryPolicy = DEFAULT_POLICY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._tenant = tenant
        self._api_base = api_base.rstrip("/")
        self._credentials = credentials
        self._errors = ErrorReporter(tenant, scrub=self._scrub)
        self._sender = RetryingSender(
            http,
            errors=self._errors,
            timeout=build_timeout(timeout),
            policy=policy,
            sleep=sleep,
            clock=clock,
            rng=rng,
        )
        self._tokens = TokenCache(
            sender=self._sender,
            errors=self._errors,
            token_url=f"{self._api_base}{TOKEN_PATH}",
            audience=audience,
            credentials=credentials,
            clock=clock,
        )
        self._listed: tuple[bytes, Mapping[str, KeyState]] | None = None
        """The SHA-256 of the last list answer's body and its keys: the same body again (the
        steady state) is not parsed again, and the snapshot holds the same key objects."""

    @property
    def tenant(self) -> str:
        return self._tenant

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (token requests and retries included)."""
        return self._sender.requests_made

    async def fetch(
        self,
        *,
        previous: Snapshot | None,
        watched_kids: Collection[str] = (),
        now: Callable[[], datetime] = utc_now,
    ) -> Snapshot:
        """A suspicious answer (no keys, no current key) is fetched once more before it is
        believed, and a kid that vanished since ``previous`` (or a watched kid missing from the
        list) is confirmed with ``GET /keys/signing/{kid}`` before the snapshot leaves it out.
        Raises ``SourceError`` when the tenant cannot be read; never returns half a view."""
        snapshot = self._snapshot(await self._list_keys(), now())
        if is_suspicious(snapshot):
            logger.warning(
                "suspicious answer (%d keys, no current key); fetching again before believing it",
                len(snapshot.keys),
                extra={"tenant": self._tenant},
            )
            snapshot = self._snapshot(await self._list_keys(), now())

        expected = {*watched_kids, *(previous.keys if previous else ())}
        confirmed: dict[str, KeyState] = {}
        for kid in sorted(kid for kid in expected if kid not in snapshot.keys):
            key = await self.get_signing_key(kid)
            if key is not None:
                confirmed[kid] = key
            else:
                logger.info("kid confirmed gone (404)", extra={"tenant": self._tenant, "kid": kid})
        if not confirmed:
            return snapshot
        return Snapshot(
            tenant=self._tenant, taken_at=snapshot.taken_at, keys={**snapshot.keys, **confirmed}
        )

    def _snapshot(self, keys: Mapping[str, KeyState], taken_at: datetime) -> Snapshot:
        return Snapshot(tenant=self._tenant, taken_at=taken_at, keys=keys)

    async def list_signing_keys(self) -> list[KeyState]:
        """Every signing key of the tenant, from one ``GET /api/v2/keys/signing``."""
        return list((await self._list_keys()).values())

    async def _list_keys(self) -> Mapping[str, KeyState]:
        endpoint = f"GET {KEYS_PATH}"
        response = await self._management_get(KEYS_PATH)
        if response.status_code != 200:
            raise self._management_error(response, endpoint)
        self._errors.json_type(response, endpoint)
        digest = hashlib.sha256(response.content).digest()
        if self._listed is not None and self._listed[0] == digest:
            return self._listed[1]
        body = self._errors.json_parsed(response, endpoint)
        with self._errors.shape_errors(endpoint):
            keys = {key.kid: key for key in parse_signing_keys(body)}
        self._listed = (digest, keys)
        return keys

    async def get_signing_key(self, kid: str) -> KeyState | None:
        """One key by kid, or None when the tenant has no such key (404)."""
        if not kid:
            raise ValueError("kid must not be empty")
        path = f"{KEYS_PATH}/{quote(kid, safe='')}"
        endpoint = f"GET {path}"
        response = await self._management_get(path)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._management_error(response, endpoint)
        body = self._errors.json_body(response, endpoint)
        with self._errors.shape_errors(endpoint):
            return parse_signing_key(body, f"keys/signing/{kid}")

    async def _management_get(self, path: str) -> Answer:
        """GET with a bearer token; on 401 renew the token once. Returns any non-401 answer."""
        endpoint = f"GET {path}"
        token = await self._tokens.get()
        response = await self._authorized_get(path, endpoint, token)
        if response.status_code != 401:
            return response
        status_line = self._errors.status_line(endpoint, response)
        if self._credentials.is_static:
            raise self._errors.authentication(
                f"the Management API rejected the configured token ({status_line}); issue a new one"
            )
        logger.info(
            "tenant=%s %s -> 401; fetching a new token and retrying once", self._tenant, endpoint
        )
        self._tokens.drop(token)
        token = await self._tokens.get()
        response = await self._authorized_get(path, endpoint, token)
        if response.status_code == 401:
            raise self._errors.authentication(
                f"the Management API rejected a freshly issued token "
                f"({self._errors.status_line(endpoint, response)})"
            )
        return response

    async def _authorized_get(self, path: str, endpoint: str, token: str) -> Answer:
        return await self._sender.send(
            "GET",
            f"{self._api_base}{path}",
            endpoint,
            headers={"Authorization": f"Bearer {token}"},
            paced=True,
        )

    def _management_error(self, response: Answer, endpoint: str) -> SourceError:
        return self._errors.management_error(
            response, endpoint, static_token=self._credentials.is_static
        )

    def _scrub(self, text: str) -> str:
        """Belt and braces: a server echoing a secret must not put it in our messages."""
        credentials = self._credentials
        return Redactor((credentials.client_secret, credentials.token, *self._tokens.issued))(text)
