"""The one exception tree of keywatch, split by how callers react.

    KeywatchError
    ├── ConfigError                 give up: the configuration is wrong (.problems, one line each)
    ├── SourceError                 a poll of Auth0 failed (.reason is the metrics label)
    │   ├── SourceTemporaryError    retry later (.retry_after seconds, when the server said)
    │   │   ├── SourceConnectError      network error before an answer          reason=network
    │   │   ├── SourceTimeout           no answer in time                       reason=timeout
    │   │   ├── RateLimited             429                                     reason=rate_limited
    │   │   └── ServerError             5xx                                     reason=server_error
    │   ├── SourcePermanentError    retrying will not help until someone changes something
    │   │   ├── AuthenticationError     401 after a fresh token; token refused  reason=unauthorized
    │   │   ├── InsufficientScope       403 (.scope: what is missing)           reason=forbidden
    │   │   ├── NotFound                404                                     reason=not_found
    │   │   └── UnexpectedStatus        any other status              reason=unexpected_status
    │   └── MalformedResponse       the answer is not what the API documents    reason=malformed
    └── StoreError                  the state store failed; nothing was half-written
        └── FencedOut               a newer leader holds the lease: step down, do not retry

Third-party exceptions (httpx, sqlite3, psycopg, yaml, pydantic) are translated where they are
caught, with ``raise ... from exc``. Messages never contain secrets: no tokens, client secrets,
webhook URLs or signing secrets. Programming errors stay ordinary ``RuntimeError``s.

Delivering a notification raises nothing: a notifier answers with a ``Verdict``
(``monitor/notify/base.py``: delivered, retry after a delay, or dead), which the dispatcher acts on.
"""

from __future__ import annotations

from collections.abc import Sequence


class KeywatchError(Exception):
    """Base of every error keywatch raises on purpose."""


class ConfigError(KeywatchError):
    """The configuration is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class SourceError(KeywatchError):
    """Polling Auth0 failed. ``reason`` is a short stable label for metrics."""

    reason = "error"

    def __init__(self, message: str, *, tenant: str | None = None) -> None:
        self.tenant = tenant
        super().__init__(message)


class SourceTemporaryError(SourceError):
    """Worth retrying later. ``retry_after`` is the server's hint in seconds, if any."""

    reason = "temporary"

    def __init__(
        self, message: str, *, tenant: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, tenant=tenant)


class SourceConnectError(SourceTemporaryError):
    reason = "network"


class SourceTimeout(SourceTemporaryError):
    reason = "timeout"


class RateLimited(SourceTemporaryError):
    reason = "rate_limited"


class ServerError(SourceTemporaryError):
    reason = "server_error"


class SourcePermanentError(SourceError):
    """Retrying will not help until the configuration or the tenant changes."""

    reason = "permanent"


class AuthenticationError(SourcePermanentError):
    reason = "unauthorized"


class InsufficientScope(SourcePermanentError):
    reason = "forbidden"

    def __init__(self, message: str, *, tenant: str | None = None, scope: str | None = None):
        self.scope = scope
        super().__init__(message, tenant=tenant)


class NotFound(SourcePermanentError):
    reason = "not_found"


class UnexpectedStatus(SourcePermanentError):
    reason = "unexpected_status"


class MalformedResponse(SourceError):
    """The API answered, but not with what its OpenAPI documents."""

    reason = "malformed"


class StoreError(KeywatchError):
    """The state store failed; the transaction was rolled back."""


class FencedOut(StoreError):
    """A leader's write was refused: the lease it was made under has a newer token, so
    another replica leads now. Not an outage: the writer must stop leading at once."""
