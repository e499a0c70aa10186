"""The simulator's own errors; the HTTP app turns each into Auth0's answer."""

from __future__ import annotations


class SimulatorError(Exception):
    """Base of the simulator's own errors (they never leave the simulator package's API)."""


class UnknownSigningKey(SimulatorError, LookupError):
    def __init__(self, kid: str) -> None:
        self.kid = kid
        super().__init__(f"no signing key with kid {kid!r}")


class RevokeNotAllowed(SimulatorError, ValueError):
    def __init__(self, kid: str, state: str) -> None:
        self.kid = kid
        self.state = state
        super().__init__(f"signing key {kid!r} is {state}; only previous keys can be revoked")


class TokenRejected(SimulatorError):
    """``POST /oauth/token`` refuses: ``status`` plus the OAuth ``error`` body."""

    def __init__(self, status: int, error: str, description: str) -> None:
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"{status} {error}: {description}")


class Unauthenticated(SimulatorError):
    """A Management API call without a valid token; ``message`` is Auth0's 401 text."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        self.message = message
        self.expired = expired
        super().__init__(message)
