"""Token-bucket rate limiting with Auth0's headers and plan presets.

Auth0 documents a token bucket: the burst is the bucket size, the sustained rate refills it
continuously. ``x-ratelimit-reset`` is the UNIX second at which the next request is added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400.0
BUCKETS = ("management", "rotate", "token", "jwks")


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """``size`` requests of burst, refilled at ``per_second`` requests per second."""

    size: int
    per_second: float

    def __post_init__(self) -> None:
        if self.size < 1 or self.per_second <= 0:
            raise ValueError(f"a bucket needs size >= 1 and a positive rate, got {self}")


@dataclass(frozen=True, slots=True)
class RateLimitPreset:
    """The buckets of one tenant: the global Management API bucket, the rotate endpoint,
    ``POST /oauth/token`` and ``/.well-known/jwks.json``."""

    name: str
    management: BucketSpec
    rotate: BucketSpec
    token: BucketSpec
    jwks: BucketSpec

    def spec(self, bucket: str) -> BucketSpec:
        specs = {
            "management": self.management,
            "rotate": self.rotate,
            "token": self.token,
            "jwks": self.jwks,
        }
        return specs[bucket]


_ROTATE = BucketSpec(5, 5 / SECONDS_PER_DAY)
_TOKEN = BucketSpec(30, 30.0)
_JWKS = BucketSpec(20, 20.0)
_BIG = BucketSpec(1_000_000, 1_000_000.0)

PRESETS: Mapping[str, RateLimitPreset] = {
    "free": RateLimitPreset("free", BucketSpec(2, 2.0), _ROTATE, _TOKEN, _JWKS),
    "enterprise": RateLimitPreset("enterprise", BucketSpec(50, 16.0), _ROTATE, _TOKEN, _JWKS),
    "unlimited": RateLimitPreset("unlimited", _BIG, _BIG, _BIG, _BIG),
}


def resolve_preset(preset: str | RateLimitPreset) -> RateLimitPreset:
    if isinstance(preset, RateLimitPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        choices = ", ".join(PRESETS)
        raise ValueError(f"unknown rate-limit preset {preset!r}; choose one of {choices}") from None


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one request against one bucket, and the headers that report it."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # UNIX seconds when the next request is added to the bucket
    wait: float  # seconds until a request would be allowed; 0 when allowed

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset),
        }

    def retry_after(self) -> str:
        return str(max(1, math.ceil(self.wait)))


class TokenBucket:
    """Not thread-safe on its own: the tenant holds its lock around every call."""

    def __init__(self, spec: BucketSpec, *, now: float) -> None:
        self.spec = spec
        self._tokens = float(spec.size)
        self._updated = now

    def take(self, now: float) -> RateDecision:
        self._refill(now)
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
        return self._decision(now, allowed=allowed)

    def peek(self, now: float) -> RateDecision:
        self._refill(now)
        return self._decision(now, allowed=self._tokens >= 1.0)

    def _refill(self, now: float) -> None:
        if now > self._updated:
            elapsed = now - self._updated
            self._tokens = min(float(self.spec.size), self._tokens + elapsed * self.spec.per_second)
            self._updated = now

    def _decision(self, now: float, *, allowed: bool) -> RateDecision:
        rate = self.spec.per_second
        if self._tokens >= self.spec.size:
            reset_at = now
        else:
            reset_at = now + (math.floor(self._tokens) + 1.0 - self._tokens) / rate
        wait = 0.0 if allowed else (1.0 - self._tokens) / rate
        return RateDecision(
            allowed=allowed,
            limit=self.spec.size,
            remaining=max(0, math.floor(self._tokens)),
            reset=math.ceil(reset_at),
            wait=wait,
        )
