"""Sending one request to Auth0 until it gets an answer worth reading, or giving up.

429, 5xx, timeouts and network errors are retried with capped exponential backoff, honouring
``Retry-After`` and ``x-ratelimit-reset``, bounded in attempts and in total waiting.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from monitor.errors import SourceTemporaryError
from monitor.httpclient import (
    MAX_ANSWER_BYTES,
    Answer,
    ResponseTooLarge,
    parse_retry_after,
    request_limited,
)
from monitor.sources._errors import ErrorReporter, translate_httpx_errors
from monitor.sources._ratelimit import RateLimitPacer, parse_epoch

logger = logging.getLogger("monitor.sources.auth0")  # the Auth0 client logs under one name

RESET_JITTER = 0.2
"""Waiting for ``x-ratelimit-reset`` adds 0-20% so that many clients do not retry at once."""
BACKOFF_JITTER = 0.1
"""Backoff delays vary by +-10%."""


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


DEFAULT_POLICY = RetryPolicy()


class RetryingSender:
    """Sends the requests of one tenant's client over the shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        errors: ErrorReporter,
        timeout: httpx.Timeout,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        rng: Callable[[], float],
    ) -> None:
        self._http = http
        self._errors = errors
        self._tenant = errors.tenant
        self._timeout = timeout
        self._policy = policy
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._pacer = RateLimitPacer(
            tenant=errors.tenant,
            low_remaining=policy.low_remaining,
            max_wait=policy.max_delay,
            sleep=sleep,
            clock=clock,
        )
        self.requests_made = 0
        """HTTP requests sent so far (token requests and retries included)."""

    async def send(
        self,
        method: str,
        url: str,
        endpoint: str,
        *,
        headers: Mapping[str, str],
        json_body: object = None,
        paced: bool,
    ) -> Answer:
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
                waited += await self._pacer.pace(budget=policy.max_total_wait - waited)
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
                    self._pacer.remember(response)
                if not _is_retryable(response.status_code):
                    return response
                retry_after, server_delay = self._server_wait(response)
                error = self._errors.temporary_status_error(response, endpoint, retry_after)
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
    ) -> Answer:
        self.requests_made += 1
        with translate_httpx_errors(
            tenant=self._tenant, endpoint=endpoint, scrub=self._errors.scrub
        ):
            try:
                response = await request_limited(
                    self._http,
                    method,
                    url,
                    limit=MAX_ANSWER_BYTES,
                    endpoint=endpoint,
                    headers={"Accept": "application/json", **headers},
                    json=json_body,
                    timeouts=self._timeout,
                )
            except ResponseTooLarge as exc:
                raise self._errors.malformed(str(exc)) from None
        logger.debug("tenant=%s %s -> %d", self._tenant, endpoint, response.status_code)
        return response

    def _backoff(self, attempt: int) -> float:
        policy = self._policy
        capped = min(policy.max_delay, policy.base_delay * 2.0 ** min(attempt - 1, 32))
        jittered = capped * (1 + BACKOFF_JITTER * (2 * self._rng() - 1))
        return min(policy.max_delay, jittered)

    def _server_wait(self, response: Answer) -> tuple[float | None, float | None]:
        """(retry_after to report, seconds to wait) from Retry-After or x-ratelimit-reset."""
        now = self._clock()
        retry_after = parse_retry_after(
            response.headers.get("retry-after"), now=datetime.fromtimestamp(now, UTC)
        )
        if retry_after is not None:
            return retry_after, retry_after
        if response.status_code == 429:
            reset_at = parse_epoch(response.headers.get("x-ratelimit-reset"))
            if reset_at is not None and reset_at > now:
                until_reset = reset_at - now
                return until_reset, until_reset * (1 + RESET_JITTER * self._rng())
        return None, None

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


def _is_retryable(status: int) -> bool:
    return status == 429 or status >= 500
