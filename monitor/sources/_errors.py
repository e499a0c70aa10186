"""From HTTP answers and httpx exceptions to ``monitor.errors.SourceError``s.

Every message names the tenant and the endpoint (``GET /api/v2/keys/signing``), quotes at most
``SERVER_TEXT_LIMIT`` characters of what the server said, and passes through the client's
scrubber, so a server echoing a secret cannot put it into our errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

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
from monitor.httpclient import Answer

REQUIRED_SCOPE = "read:signing_keys"
SERVER_TEXT_LIMIT = 200
"""Characters of server-provided text quoted in an error message."""

_SCOPE_PATTERN = re.compile(r"[a-z_]+:[a-z_]+")


class ErrorReporter:
    """Builds the errors of one tenant's client; ``scrub`` hides its secrets in every text."""

    def __init__(self, tenant: str, *, scrub: Callable[[str], str]) -> None:
        self.tenant = tenant
        self.scrub = scrub

    def message(self, text: str) -> str:
        return f"tenant {self.tenant}: {self.scrub(text)}"

    def status_line(self, endpoint: str, response: Answer) -> str:
        """``GET /path -> 503 Service Unavailable: <Auth0's message>``."""
        line = f"{endpoint} -> {response.status_code} {response.reason_phrase}".rstrip()
        server_text = auth0_error_text(response)
        return f"{line}: {server_text}" if server_text else line

    def authentication(self, text: str) -> AuthenticationError:
        return AuthenticationError(self.message(text), tenant=self.tenant)

    def malformed(self, text: str) -> MalformedResponse:
        return MalformedResponse(self.message(text), tenant=self.tenant)

    def management_error(
        self, response: Answer, endpoint: str, *, static_token: bool
    ) -> SourceError:
        """The error for a Management API answer that is neither 200 nor retried."""
        if response.status_code == 403:
            return self._insufficient_scope(response, endpoint, static_token=static_token)
        return self.status_error(response, endpoint)

    def _insufficient_scope(
        self, response: Answer, endpoint: str, *, static_token: bool
    ) -> InsufficientScope:
        server_text = auth0_error_text(response)
        scopes = _SCOPE_PATTERN.findall(server_text.partition("expected")[2])
        if not scopes:
            return InsufficientScope(
                self.message(
                    f"{self.status_line(endpoint, response)}; "
                    f"the token needs the {REQUIRED_SCOPE} scope"
                ),
                tenant=self.tenant,
            )
        if static_token:
            remedy = "use a token that has it"
        else:
            remedy = "grant it to the machine-to-machine application"
        what = (
            f"the {scopes[0]} scope" if len(scopes) == 1 else f"the {' and '.join(scopes)} scopes"
        )
        return InsufficientScope(
            self.message(f"the Management API token lacks {what} ({remedy})"),
            tenant=self.tenant,
            scope=" ".join(scopes),
        )

    def status_error(self, response: Answer, endpoint: str) -> SourceError:
        status = response.status_code
        line = self.status_line(endpoint, response)
        if status == 404:
            return NotFound(
                self.message(f"{line}; is the tenant domain right?"), tenant=self.tenant
            )
        if 300 <= status < 400:
            return UnexpectedStatus(
                self.message(f"{line}; redirects are not followed, is the tenant domain right?"),
                tenant=self.tenant,
            )
        return UnexpectedStatus(self.message(line), tenant=self.tenant)

    def temporary_status_error(
        self, response: Answer, endpoint: str, retry_after: float | None
    ) -> SourceTemporaryError:
        error_class = RateLimited if response.status_code == 429 else ServerError
        return error_class(
            self.message(self.status_line(endpoint, response)),
            tenant=self.tenant,
            retry_after=retry_after,
        )

    def json_type(self, response: Answer, endpoint: str) -> None:
        """Raises ``MalformedResponse`` unless the answer says it is JSON."""
        content_type = response.headers.get("content-type", "")
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            got = media_type or "no Content-Type"
            raise self.malformed(f"{endpoint}: expected JSON, got {got}")

    def json_body(self, response: Answer, endpoint: str) -> object:
        self.json_type(response, endpoint)
        return self.json_parsed(response, endpoint)

    def json_parsed(self, response: Answer, endpoint: str) -> object:
        """The body parsed, once ``json_type`` accepted the answer."""
        try:
            return json.loads(response.content)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            raise self.malformed(f"{endpoint}: invalid JSON ({truncate(str(exc))})") from exc

    @contextmanager
    def shape_errors(self, endpoint: str) -> Iterator[None]:
        """A ``MalformedResponse`` raised by the model's parsers, re-raised naming the tenant
        and the endpoint."""
        try:
            yield
        except MalformedResponse as exc:
            raise self.malformed(f"{endpoint}: {exc}") from exc


@contextmanager
def translate_httpx_errors(
    *, tenant: str, endpoint: str, scrub: Callable[[str], str] = str
) -> Iterator[None]:
    """Turn any httpx exception raised inside into the matching ``SourceError``."""

    def message(text: str, exc: Exception) -> str:
        detail = truncate(scrub(str(exc)))
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


def auth0_error_text(response: Answer) -> str:
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
    return truncate(text)


def _string_field(body: Mapping[str, object], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def truncate(text: str, limit: int = SERVER_TEXT_LIMIT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
