"""Client for the Auth0 Management API signing-key endpoints.

One ``Auth0Client`` per tenant, sharing the daemon's ``httpx.AsyncClient``:

- token: client credentials (cached until shortly before it expires) or a static token;
  a 401 drops the cached token, fetches a new one and retries once;
- retries: 429, 5xx, timeouts and network errors, with capped exponential backoff, honouring
  ``Retry-After`` and ``x-ratelimit-reset``, bounded in attempts and in total waiting;
- pacing: when ``x-ratelimit-remaining`` runs low, wait for the reset before the next call,
  because a Free tenant shares 2 requests/s with every other tool that uses it;
- errors: every failure is a ``monitor.errors.SourceError`` whose message names the tenant and
  the endpoint path, and never contains the client secret or a token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from monitor.errors import (
    AuthenticationError,
    InsufficientScope,
    MalformedResponse,
    NotFound,
    RateLimited,
    ServerError,
    SourceConnectError,
    SourceError,
    SourcePermanentError,
    SourceTemporaryError,
    SourceTimeout,
    UnexpectedStatus,
)
from monitor.httpclient import build_timeout, parse_retry_after
from monitor.model import KeyState, parse_signing_key, parse_signing_keys
from monitor.redact import Redactor

logger = logging.getLogger(__name__)

KEYS_PATH = "/api/v2/keys/signing"
TOKEN_PATH = "/oauth/token"
REQUIRED_SCOPE = "read:signing_keys"

SERVER_TEXT_LIMIT = 200
"""Characters of server-provided text quoted in an error message."""
RESET_JITTER = 0.2
"""Waiting for ``x-ratelimit-reset`` adds 0-20% so that many clients do not retry at once."""
BACKOFF_JITTER = 0.1
"""Backoff delays vary by +-10%."""
TOKEN_SKEW_MAX = 300.0
"""Seconds. A cached token is renewed min(300 s, 10% of its lifetime) before it expires."""

_SCOPE_PATTERN = re.compile(r"[a-z_]+:[a-z_]+")


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries before it raises a ``SourceTemporaryError``."""

    max_attempts: int = 4
    """Requests per call, the first one included."""
    base_delay: float = 0.5
    """Seconds before the first retry; doubles with each further retry."""
    max_delay: float = 30.0
    """Seconds; cap of one backoff delay and of one pacing wait."""
    max_total_wait: float = 60.0
    """Seconds of waiting (retries and pacing) one call may spend in total."""
    low_remaining: int = 1
    """Pace when ``x-ratelimit-remaining`` is at or below this."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        for name in ("base_delay", "max_delay", "max_total_wait"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0 seconds, got {value!r}")
        if self.low_remaining < 0:
            raise ValueError(f"low_remaining must be >= 0, got {self.low_remaining!r}")


@dataclass
class _RateLimitHint:
    """The last ``x-ratelimit-*`` headers seen from the Management API."""

    remaining: int | None = None
    reset_at: float | None = None


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
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self._tenant = tenant
        self._api_base = api_base.rstrip("/")
        self._token_url = f"{self._api_base}{TOKEN_PATH}"
        self._audience = audience
        self._credentials = credentials
        self._timeout = build_timeout(timeout)
        self._policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._token_lock = asyncio.Lock()
        self._issued_tokens: deque[str] = deque(maxlen=4)  # scrubbed from messages
        self._rate = _RateLimitHint()
        self._requests_made = 0

    @property
    def tenant(self) -> str:
        return self._tenant

    @property
    def requests_made(self) -> int:
        """HTTP requests sent so far (token requests and retries included)."""
        return self._requests_made

    async def list_signing_keys(self) -> list[KeyState]:
        """Every signing key of the tenant, from one ``GET /api/v2/keys/signing``."""
        endpoint = f"GET {KEYS_PATH}"
        response = await self._management_get(KEYS_PATH)
        if response.status_code != 200:
            raise self._management_error(response, endpoint)
        body = self._json_body(response, endpoint)
        with self._shape_errors(endpoint):
            return parse_signing_keys(body)

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
        body = self._json_body(response, endpoint)
        with self._shape_errors(endpoint):
            return parse_signing_key(body, f"keys/signing/{kid}")

    # --- token --------------------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._credentials.token is not None:
            return self._credentials.token
        async with self._token_lock:
            if self._token is not None and self._clock() < self._token_renew_at:
                return self._token
            self._token = None
            requested_at = self._clock()
            token, lifetime = await self._fetch_token()
            self._issued_tokens.append(token)
            self._token = token
            self._token_renew_at = requested_at + lifetime - min(TOKEN_SKEW_MAX, lifetime / 10)
            logger.debug(
                "tenant=%s fetched a Management API token valid for %ds", self._tenant, lifetime
            )
            return token

    def _drop_token(self, token: str) -> None:
        # Only the token that failed: a concurrent caller may already hold a fresh one.
        if self._token == token:
            self._token = None

    async def _fetch_token(self) -> tuple[str, float]:
        endpoint = f"POST {TOKEN_PATH}"
        request_body = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
            "audience": self._audience,
        }
        response = await self._send_with_retries(
            "POST", self._token_url, endpoint, headers={}, json_body=request_body, paced=False
        )
        status = response.status_code
        if status in (400, 401, 403):
            hint = {
                401: "; check client_id and client_secret",
                403: f"; authorise the application for the API {self._audience}",
            }.get(status, "")
            raise AuthenticationError(
                self._message(
                    f"the token endpoint refused the client credentials "
                    f"({self._status_line(endpoint, response)}){hint}"
                ),
                tenant=self._tenant,
            )
        if status != 200:
            raise self._status_error(response, endpoint)
        return self._read_token(self._json_body(response, endpoint), endpoint)

    def _read_token(self, body: object, endpoint: str) -> tuple[str, float]:
        if not isinstance(body, Mapping):
            raise self._malformed(f"{endpoint}: expected a JSON object")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._malformed(f"{endpoint}: access_token is missing or not a string")
        lifetime = body.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            raise self._malformed(f"{endpoint}: expires_in is missing or not a positive number")
        return token, float(lifetime)

    # --- Management API -----------------------------------------------------------------

    async def _management_get(self, path: str) -> httpx.Response:
        """GET with a bearer token; on 401 renew the token once. Returns any non-401 answer."""
        endpoint = f"GET {path}"
        token = await self._access_token()
        response = await self._authorized_get(path, endpoint, token)
        if response.status_code != 401:
            return response
        if self._credentials.is_static:
            raise AuthenticationError(
                self._message(
                    f"the Management API rejected the configured token "
                    f"({self._status_line(endpoint, response)}); issue a new one"
                ),
                tenant=self._tenant,
            )
        logger.info(
            "tenant=%s %s -> 401; fetching a new token and retrying once", self._tenant, endpoint
        )
        self._drop_token(token)
        token = await self._access_token()
        response = await self._authorized_get(path, endpoint, token)
        if response.status_code == 401:
            raise AuthenticationError(
                self._message(
                    f"the Management API rejected a freshly issued token "
                    f"({self._status_line(endpoint, response)})"
                ),
                tenant=self._tenant,
            )
        return response

    async def _authorized_get(self, path: str, endpoint: str, token: str) -> httpx.Response:
        return await self._send_with_retries(
            "GET",
            f"{self._api_base}{path}",
            endpoint,
            headers={"Authorization": f"Bearer {token}"},
            paced=True,
        )

    def _management_error(self, response: httpx.Response, endpoint: str) -> SourceError:
        if response.status_code == 403:
            return self._insufficient_scope(response, endpoint)
        return self._status_error(response, endpoint)

    def _insufficient_scope(self, response: httpx.Response, endpoint: str) -> InsufficientScope:
        server_text = _auth0_error_text(response)
        scopes = _SCOPE_PATTERN.findall(server_text.partition("expected")[2])
        if not scopes:
            return InsufficientScope(
                self._message(
                    f"{self._status_line(endpoint, response)}; "
                    f"the token needs the {REQUIRED_SCOPE} scope"
                ),
                tenant=self._tenant,
            )
        if self._credentials.is_static:
            remedy = "use a token that has it"
        else:
            remedy = "grant it to the machine-to-machine application"
        what = (
            f"the {scopes[0]} scope" if len(scopes) == 1 else f"the {' and '.join(scopes)} scopes"
        )
        return InsufficientScope(
            self._message(f"the Management API token lacks {what} ({remedy})"),
            tenant=self._tenant,
            scope=" ".join(scopes),
        )

    def _status_error(self, response: httpx.Response, endpoint: str) -> SourceError:
        status = response.status_code
        line = self._status_line(endpoint, response)
        if status == 404:
            return NotFound(
                self._message(f"{line}; is the tenant domain right?"), tenant=self._tenant
            )
        if 300 <= status < 400:
            return UnexpectedStatus(
                self._message(f"{line}; redirects are not followed, is the tenant domain right?"),
                tenant=self._tenant,
            )
        return UnexpectedStatus(self._message(line), tenant=self._tenant)

    # --- sending, retrying, pacing ------------------------------------------------------

    async def _send_with_retries(
        self,
        method: str,
        url: str,
        endpoint: str,
        *,
        headers: Mapping[str, str],
        json_body: object = None,
        paced: bool,
    ) -> httpx.Response:
        """Send until the answer is not 429/5xx/timeout/network error, or the policy gives up.

        ``paced`` requests share the Management API bucket whose headers we remember; the
        token endpoint has its own bucket.
        """
        policy = self._policy
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            if paced:
                waited += await self._pace(budget=policy.max_total_wait - waited)
            try:
                response = await self._send_once(
                    method, url, endpoint, headers=headers, json_body=json_body
                )
            except SourceTemporaryError as exc:
                error = exc
                failure = f"{endpoint} -> {type(exc.__cause__).__name__}"
                delay = self._backoff(attempt)
            else:
                if paced:
                    self._remember_rate_limit(response)
                if not _is_retryable(response.status_code):
                    return response
                retry_after, server_delay = self._server_wait(response)
                error = self._temporary_status_error(response, endpoint, retry_after)
                failure = f"{endpoint} -> {response.status_code}"
                delay = self._backoff(attempt) if server_delay is None else server_delay
            if attempt >= policy.max_attempts or waited + delay > policy.max_total_wait:
                raise self._give_up(error, attempt)
            logger.warning(
                "tenant=%s attempt %d/%d failed; retrying in %.1fs: %s",
                self._tenant,
                attempt,
                policy.max_attempts,
                delay,
                failure,
            )
            await self._sleep(delay)
            waited += delay

    async def _send_once(
        self,
        method: str,
        url: str,
        endpoint: str,
        *,
        headers: Mapping[str, str],
        json_body: object,
    ) -> httpx.Response:
        self._requests_made += 1
        with translate_httpx_errors(tenant=self._tenant, endpoint=endpoint, scrub=self._scrub):
            response = await self._http.request(
                method,
                url,
                headers={"Accept": "application/json", **headers},
                json=json_body,
                timeout=self._timeout,
            )
        logger.debug("tenant=%s %s -> %d", self._tenant, endpoint, response.status_code)
        return response

    def _backoff(self, attempt: int) -> float:
        policy = self._policy
        capped = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt - 1, 32))
        jittered = capped * (1 + BACKOFF_JITTER * (2 * self._rng() - 1))
        return min(policy.max_delay, jittered)

    def _server_wait(self, response: httpx.Response) -> tuple[float | None, float | None]:
        """(retry_after to report, seconds to wait) from Retry-After or x-ratelimit-reset."""
        now = self._clock()
        retry_after = parse_retry_after(
            response.headers.get("retry-after"), now=datetime.fromtimestamp(now, UTC)
        )
        if retry_after is not None:
            return retry_after, retry_after
        if response.status_code == 429:
            reset_at = _parse_epoch(response.headers.get("x-ratelimit-reset"))
            if reset_at is not None and reset_at > now:
                until_reset = reset_at - now
                return until_reset, until_reset * (1 + RESET_JITTER * self._rng())
        return None, None

    def _remember_rate_limit(self, response: httpx.Response) -> None:
        self._rate = _RateLimitHint(
            remaining=_parse_count(response.headers.get("x-ratelimit-remaining")),
            reset_at=_parse_epoch(response.headers.get("x-ratelimit-reset")),
        )

    async def _pace(self, *, budget: float) -> float:
        """Wait for the rate-limit reset if the last answer said the bucket is nearly empty."""
        hint = self._rate
        if hint.remaining is None or hint.reset_at is None:
            return 0.0
        if hint.remaining > self._policy.low_remaining:
            return 0.0
        self._rate = _RateLimitHint()  # used up; the next answer brings fresh numbers
        wait = min(hint.reset_at - self._clock(), self._policy.max_delay, budget)
        if wait <= 0:
            return 0.0
        logger.info(
            "tenant=%s x-ratelimit-remaining=%d; waiting %.1fs for the rate-limit reset",
            self._tenant,
            hint.remaining,
            wait,
        )
        await self._sleep(wait)
        return wait

    def _temporary_status_error(
        self, response: httpx.Response, endpoint: str, retry_after: float | None
    ) -> SourceTemporaryError:
        error_class = RateLimited if response.status_code == 429 else ServerError
        return error_class(
            self._message(self._status_line(endpoint, response)),
            tenant=self._tenant,
            retry_after=retry_after,
        )

    def _give_up(self, error: SourceTemporaryError, attempts: int) -> SourceTemporaryError:
        plural = "" if attempts == 1 else "s"
        reason = f"gave up after {attempts} attempt{plural}"
        asked_to_wait = error.retry_after  # Retry-After, or until the rate-limit reset
        if asked_to_wait is not None:
            reason += f"; the server asked to wait {asked_to_wait:.0f}s"
            if asked_to_wait > self._policy.max_total_wait:
                reason += f", more than the {self._policy.max_total_wait:g}s a poll may wait"
        final = type(error)(
            f"{error} ({reason})",
            tenant=self._tenant,
            retry_after=error.retry_after,
        )
        final.__cause__ = error.__cause__  # keep the httpx exception, if any, as the cause
        return final

    # --- bodies and messages ------------------------------------------------------------

    def _json_body(self, response: httpx.Response, endpoint: str) -> object:
        content_type = response.headers.get("content-type", "")
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            got = media_type or "no Content-Type"
            raise self._malformed(f"{endpoint}: expected JSON, got {got}")
        try:
            return json.loads(response.content)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise self._malformed(f"{endpoint}: invalid JSON ({_truncate(str(exc))})") from exc

    @contextmanager
    def _shape_errors(self, endpoint: str) -> Iterator[None]:
        try:
            yield
        except MalformedResponse as exc:
            raise self._malformed(f"{endpoint}: {exc}") from exc

    def _malformed(self, text: str) -> MalformedResponse:
        return MalformedResponse(self._message(text), tenant=self._tenant)

    def _status_line(self, endpoint: str, response: httpx.Response) -> str:
        """``GET /path -> 503 Service Unavailable: <Auth0's message>``."""
        line = f"{endpoint} -> {response.status_code} {response.reason_phrase}".rstrip()
        server_text = _auth0_error_text(response)
        return f"{line}: {server_text}" if server_text else line

    def _message(self, text: str) -> str:
        return f"tenant {self._tenant}: {self._scrub(text)}"

    def _scrub(self, text: str) -> str:
        """Belt and braces: a server echoing a secret must not put it in our messages."""
        credentials = self._credentials
        return Redactor((credentials.client_secret, credentials.token, *self._issued_tokens))(text)


@contextmanager
def translate_httpx_errors(
    *, tenant: str, endpoint: str, scrub: Callable[[str], str] = str
) -> Iterator[None]:
    """Turn any httpx exception raised inside into the matching ``SourceError``."""

    def message(text: str, exc: Exception) -> str:
        detail = _truncate(scrub(str(exc)))
        described = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        return f"tenant {tenant}: {endpoint} {text} ({described})"

    try:
        yield
    except httpx.TimeoutException as exc:
        raise SourceTimeout(message("timed out", exc), tenant=tenant) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise SourcePermanentError(
            message("has an invalid URL; api_base must be https://<domain>", exc), tenant=tenant
        ) from exc
    except httpx.DecodingError as exc:
        raise MalformedResponse(
            message("sent a body that cannot be decoded", exc), tenant=tenant
        ) from exc
    except httpx.TooManyRedirects as exc:
        raise UnexpectedStatus(message("redirected too often", exc), tenant=tenant) from exc
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        raise UnexpectedStatus(
            f"tenant {tenant}: {endpoint} -> {status} {exc.response.reason_phrase}".rstrip(),
            tenant=tenant,
        ) from exc
    except httpx.HTTPError as exc:  # network, protocol and proxy errors: no usable answer
        raise SourceConnectError(message("failed", exc), tenant=tenant) from exc


def _is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _auth0_error_text(response: httpx.Response) -> str:
    """Auth0's error text: ``error: error_description`` (token endpoint) or ``message``."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    if not isinstance(body, Mapping):
        return ""
    error, description, message = (
        _string_field(body, name) for name in ("error", "error_description", "message")
    )
    if description:
        text = f"{error}: {description}" if error else description
    else:
        text = message or error or ""
    return _truncate(text)


def _string_field(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def _truncate(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _parse_count(value: str | None) -> int | None:
    try:
        count = int(value) if value is not None else None
    except ValueError:
        return None
    return count if count is not None and count >= 0 else None


def _parse_epoch(value: str | None) -> float | None:
    try:
        epoch = float(value) if value is not None else None
    except ValueError:
        return None
    return epoch if epoch is not None and math.isfinite(epoch) and epoch >= 0 else None
