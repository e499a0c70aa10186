"""The Management API access token of one tenant: client credentials or a static token.

A token from the client credentials grant is cached until min(300 s, 10% of its lifetime)
before it expires; a token the API rejects is dropped so that the next call fetches a new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from monitor.sources._errors import ErrorReporter
from monitor.sources._retry import RetryingSender

logger = logging.getLogger("monitor.sources.auth0")  # the Auth0 client logs under one name

TOKEN_PATH = "/oauth/token"
TOKEN_SKEW_MAX = 300.0
"""Seconds. A cached token is renewed min(300 s, 10% of its lifetime) before it expires."""
ISSUED_TOKENS_KEPT = 4
"""The last tokens issued, kept to be scrubbed from messages."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """Either ``client_id`` + ``client_secret`` (client credentials grant) or a static ``token``."""

    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None:
            if not self.token:
                raise ValueError("credentials: token is empty")
            if self.client_id or self.client_secret:
                raise ValueError("credentials: give a token or client_id + client_secret, not both")
        elif not (self.client_id and self.client_secret):
            raise ValueError("credentials: client_id and client_secret are both required")

    @property
    def is_static(self) -> bool:
        return self.token is not None


class TokenCache:
    """Hands out the current access token, fetching a new one when it is due."""

    __slots__ = (
        "_audience",
        "_clock",
        "_credentials",
        "_errors",
        "_lock",
        "_renew_at",
        "_sender",
        "_token",
        "_token_url",
        "issued",
    )

    def __init__(
        self,
        *,
        sender: RetryingSender,
        errors: ErrorReporter,
        token_url: str,
        audience: str,
        credentials: Credentials,
        clock: Callable[[], float],
    ) -> None:
        self._sender = sender
        self._errors = errors
        self._token_url = token_url
        self._audience = audience
        self._credentials = credentials
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.issued: tuple[str, ...] = ()
        """The last tokens fetched (scrubbed from messages); a tuple, not a deque: a fleet
        holds one per tenant, and an empty deque is 740 bytes."""

    async def get(self) -> str:
        if self._credentials.token is not None:
            return self._credentials.token
        if self._token is not None and self._clock() < self._renew_at:
            return self._token  # the steady state, without the lock
        async with self._lock:
            if self._token is not None and self._clock() < self._renew_at:
                return self._token
            self._token = None
            requested_at = self._clock()
            token, lifetime = await self._fetch()
            self.issued = (*self.issued, token)[-ISSUED_TOKENS_KEPT:]
            self._token = token
            self._renew_at = requested_at + lifetime - min(TOKEN_SKEW_MAX, lifetime / 10)
            logger.debug(
                "tenant=%s fetched a Management API token valid for %ds",
                self._errors.tenant,
                lifetime,
            )
            return token

    def drop(self, token: str) -> None:
        # Only the token that failed: a concurrent caller may already hold a fresh one.
        if self._token == token:
            self._token = None

    async def _fetch(self) -> tuple[str, float]:
        endpoint = f"POST {TOKEN_PATH}"
        request_body = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
            "audience": self._audience,
        }
        response = await self._sender.send(
            "POST", self._token_url, endpoint, headers={}, json_body=request_body, paced=False
        )
        status = response.status_code
        if status in (400, 401, 403):
            hint = {
                401: "; check client_id and client_secret",
                403: f"; authorise the application for the API {self._audience}",
            }.get(status, "")
            raise self._errors.authentication(
                f"the token endpoint refused the client credentials "
                f"({self._errors.status_line(endpoint, response)}){hint}"
            )
        if status != 200:
            raise self._errors.status_error(response, endpoint)
        return self._read(self._errors.json_body(response, endpoint), endpoint)

    def _read(self, body: object, endpoint: str) -> tuple[str, float]:
        if not isinstance(body, Mapping):
            raise self._errors.malformed(f"{endpoint}: expected a JSON object")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._errors.malformed(f"{endpoint}: access_token is missing or not a string")
        lifetime = body.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise self._errors.malformed(
                f"{endpoint}: expires_in is missing or not a positive number"
            )
        return token, float(lifetime)
