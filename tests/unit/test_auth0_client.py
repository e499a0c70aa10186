"""The Auth0 Management API client: tokens, retries, pacing, parsing, error translation.

Logic runs against ``httpx.MockTransport`` with an injected clock and a ``sleep`` that records
delays and advances that clock, so nothing here really waits. What a mock cannot show (a real
socket timing out, a server hanging up, a redirect the shared client must not follow) runs
against small servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from email.utils import formatdate
from typing import TypeVar

import httpx
import pytest

from monitor import __version__
from monitor.errors import (
    AuthenticationError,
    InsufficientScope,
    KeywatchError,
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
from monitor.httpclient import AiohttpClient, build_http_client, build_timeout, request_limited
from monitor.model import Snapshot
from monitor.sources.auth0 import (
    Auth0Client,
    Credentials,
    RetryPolicy,
    translate_httpx_errors,
)
from monitor.sources.base import SnapshotSource
from tests.support.certs import certificate_for_kid, make_signing_key_json, thumbprint

TENANT = "prod"
API_BASE = "https://prod.auth0.test"
AUDIENCE = f"{API_BASE}/api/v2/"
KEYS = "/api/v2/keys/signing"
TOKEN = "/oauth/token"
CLIENT_SECRET = "client-SECRET-must-not-leak-4711"
STATIC_TOKEN = "static-TOKEN-must-not-leak-0815"
CLIENT_CREDENTIALS = Credentials(client_id="m2m-client", client_secret=CLIENT_SECRET)
STATIC_CREDENTIALS = Credentials(token=STATIC_TOKEN)
NOW = 1_700_000_000.0
HTML = {"Content-Type": "text/html"}
TOKEN_ROUTE = f"POST {TOKEN}"
KEYS_ROUTE = f"GET {KEYS}"

Reply = httpx.Response | Exception


class FakeTime:
    """A clock that only moves when the client sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = NOW
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeAuth0:
    """MockTransport handler: scripted replies per "METHOD /raw/path", else sane defaults."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.scripts: dict[str, list[Reply]] = {}
        self.issued_tokens: list[str] = []
        self.token_lifetime = 86400
        self.keys_body = [
            make_signing_key_json("kidCurrent", current=True),
            make_signing_key_json("kidNext", next=True),
        ]

    def script(self, route: str, *replies: Reply) -> None:
        self.scripts.setdefault(route, []).extend(replies)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = f"{request.method} {request.url.raw_path.decode()}"
        queued = self.scripts.get(route)
        if queued:
            reply = queued.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply
        if route == f"POST {TOKEN}":
            return self.issue_token()
        if route == f"GET {KEYS}":
            return httpx.Response(200, json=self.keys_body)
        return api_error(404, "Not Found")

    def issue_token(self) -> httpx.Response:
        token = f"issued-TOKEN-{len(self.issued_tokens) + 1}-must-not-leak"
        self.issued_tokens.append(token)
        body = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return httpx.Response(200, json=body)

    @property
    def routes(self) -> list[str]:
        return [f"{r.method} {r.url.raw_path.decode()}" for r in self.requests]

    def bearer_tokens(self) -> list[str]:
        return [r.headers["authorization"] for r in self.requests if r.url.path.startswith(KEYS)]


def api_error(status: int, message: str, **extra: object) -> httpx.Response:
    reason = httpx.codes.get_reason_phrase(status)
    body = {"statusCode": status, "error": reason, "message": message, **extra}
    return httpx.Response(status, json=body)


def token_error(status: int, error: str, description: str) -> httpx.Response:
    return httpx.Response(status, json={"error": error, "error_description": description})


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def auth0() -> FakeAuth0:
    return FakeAuth0()


@pytest.fixture
async def http(auth0: FakeAuth0) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(auth0.handler)) as client:
        yield client


@pytest.fixture
def make_client(http: httpx.AsyncClient, fake_time: FakeTime) -> Callable[..., Auth0Client]:
    def make(
        *,
        credentials: Credentials = CLIENT_CREDENTIALS,
        policy: RetryPolicy | None = None,
        rng: Callable[[], float] = lambda: 0.5,  # 0.5 makes the +-10% backoff jitter vanish
        http_client: httpx.AsyncClient | None = None,
    ) -> Auth0Client:
        return Auth0Client(
            http_client or http,
            tenant=TENANT,
            api_base=API_BASE,
            audience=AUDIENCE,
            credentials=credentials,
            policy=policy or RetryPolicy(),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            rng=rng,
        )

    return make


MakeClient = Callable[..., Auth0Client]
ErrorT = TypeVar("ErrorT", bound=BaseException)


async def failed_listing(
    make_client: MakeClient, error: type[ErrorT]
) -> pytest.ExceptionInfo[ErrorT]:
    """What listing the signing keys raises; fails unless it is an ``error``."""
    with pytest.raises(error) as caught:
        await make_client().list_signing_keys()
    return caught


# --- building blocks ------------------------------------------------------------------------


async def test_build_http_client_settings() -> None:
    async with build_http_client() as client:
        assert client.timeout == httpx.Timeout(10.0, connect=5.0)
        assert client.follow_redirects is False
        assert client.trust_env is False
        assert client.headers["user-agent"] == f"keywatch/{__version__}"
    async with build_http_client(timeout=2.0, user_agent="probe/1") as client:
        assert client.timeout == httpx.Timeout(2.0, connect=2.0)
        assert client.headers["user-agent"] == "probe/1"


@pytest.mark.parametrize(
    ("options", "complaint"),
    [({"timeout": 0}, "timeout must be > 0"), ({"max_connections": 0}, "max_connections")],
)
def test_build_http_client_rejects_nonsense(options: dict[str, float], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        build_http_client(**options)  # type: ignore[arg-type]


def test_credentials_keep_secrets_out_of_repr() -> None:
    assert CLIENT_SECRET not in repr(CLIENT_CREDENTIALS)
    assert "m2m-client" in repr(CLIENT_CREDENTIALS)
    assert STATIC_TOKEN not in repr(STATIC_CREDENTIALS)
    assert STATIC_TOKEN not in str(STATIC_CREDENTIALS)


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({}, "client_id and client_secret are both required"),
        ({"client_id": "x"}, "client_id and client_secret are both required"),
        ({"token": ""}, "token is empty"),
        ({"token": "t", "client_id": "x", "client_secret": "y"}, "not both"),
    ],
)
def test_credentials_need_one_kind(fields: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Credentials(**fields)


@pytest.mark.parametrize(
    "fields", [{"max_attempts": 0}, {"base_delay": -1.0}, {"max_total_wait": float("inf")}]
)
def test_retry_policy_rejects_nonsense(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        RetryPolicy(**fields)  # type: ignore[arg-type]


def test_certs_helper_matches_what_auth0_computes() -> None:
    body = make_signing_key_json("kidA", previous=True, revoked_at="2024-05-01T00:00:00.000Z")
    assert body["thumbprint"] == thumbprint(certificate_for_kid("kidA"))
    assert str(body["fingerprint"]).replace(":", "") == body["thumbprint"]
    assert "\r\n" in str(body["cert"])
    assert body["previous"] is True and body["revoked_at"] == "2024-05-01T00:00:00.000Z"
    assert make_signing_key_json("kidA")["cert"] == body["cert"]
    assert make_signing_key_json("kidB")["thumbprint"] != body["thumbprint"]
    with pytest.raises(TypeError, match="revoked_since"):
        make_signing_key_json("kidA", revoked_since="2024")


# --- the happy path and the token --------------------------------------------------------------


async def test_list_is_one_token_request_and_one_get(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    client = make_client()
    keys = await client.list_signing_keys()

    assert [(key.kid, key.state, key.thumbprint_ok) for key in keys] == [
        ("kidCurrent", "current", True),
        ("kidNext", "next", True),
    ]
    assert auth0.routes == [f"POST {TOKEN}", f"GET {KEYS}"]
    assert client.requests_made == 2
    token_request, keys_request = auth0.requests
    assert json.loads(token_request.content) == {
        "grant_type": "client_credentials",
        "client_id": "m2m-client",
        "client_secret": CLIENT_SECRET,
        "audience": AUDIENCE,
    }
    assert "authorization" not in token_request.headers
    assert keys_request.headers["authorization"] == f"Bearer {auth0.issued_tokens[0]}"
    assert keys_request.headers["accept"] == "application/json"


async def test_token_is_cached_until_lifetime_minus_skew(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    client = make_client()
    await client.list_signing_keys()
    fake_time.now = NOW + 86400 - 300 - 1  # skew is min(300 s, 10% of 86400 s)
    await client.list_signing_keys()
    assert len(auth0.issued_tokens) == 1

    fake_time.now = NOW + 86400 - 300
    await client.list_signing_keys()
    assert len(auth0.issued_tokens) == 2
    assert auth0.bearer_tokens()[-1] == f"Bearer {auth0.issued_tokens[1]}"


async def test_short_lived_token_renews_ten_percent_early(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    auth0.token_lifetime = 100
    client = make_client()
    await client.list_signing_keys()
    fake_time.now = NOW + 89
    await client.list_signing_keys()
    assert len(auth0.issued_tokens) == 1
    fake_time.now = NOW + 90
    await client.list_signing_keys()
    assert len(auth0.issued_tokens) == 2


async def test_concurrent_callers_share_one_token_fetch(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    async def slow_token_endpoint(request: httpx.Request) -> httpx.Response:
        if request.url.path == TOKEN:
            for _ in range(5):  # let every other caller reach the token lock meanwhile
                await asyncio.sleep(0)
        return auth0.handler(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow_token_endpoint)) as http:
        client = make_client(http_client=http)
        results = await asyncio.gather(*(client.list_signing_keys() for _ in range(5)))

    assert [len(keys) for keys in results] == [2] * 5
    assert auth0.routes.count(f"POST {TOKEN}") == 1
    assert auth0.routes.count(f"GET {KEYS}") == 5


async def test_static_token_is_sent_as_is(auth0: FakeAuth0, make_client: MakeClient) -> None:
    client = make_client(credentials=STATIC_CREDENTIALS)
    await client.list_signing_keys()
    assert auth0.routes == [f"GET {KEYS}"]
    assert auth0.bearer_tokens() == [f"Bearer {STATIC_TOKEN}"]


async def test_401_renews_the_token_and_retries_once(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", api_error(401, "Invalid token."))
    client = make_client()
    keys = await client.list_signing_keys()

    assert len(keys) == 2
    assert auth0.routes == [f"POST {TOKEN}", f"GET {KEYS}", f"POST {TOKEN}", f"GET {KEYS}"]
    first, second = auth0.issued_tokens
    assert auth0.bearer_tokens() == [f"Bearer {first}", f"Bearer {second}"]


async def test_second_401_is_an_authentication_error(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    signature_error = "Invalid signature received for JSON Web Token validation"
    auth0.script(f"GET {KEYS}", api_error(401, signature_error), api_error(401, signature_error))
    client = make_client()
    with pytest.raises(AuthenticationError) as caught:
        await client.list_signing_keys()

    assert str(caught.value) == (
        "tenant prod: the Management API rejected a freshly issued token "
        f"(GET {KEYS} -> 401 Unauthorized: {signature_error})"
    )
    assert caught.value.tenant == TENANT
    assert auth0.routes.count(f"GET {KEYS}") == 2


async def test_401_with_a_static_token_fails_at_once(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", api_error(401, "Expired token received for JSON Web Token"))
    client = make_client(credentials=STATIC_CREDENTIALS)
    with pytest.raises(AuthenticationError, match=r"configured token .* Expired token received"):
        await client.list_signing_keys()
    assert auth0.routes == [f"GET {KEYS}"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            token_error(401, "invalid_client", "Client authentication failed"),
            "tenant prod: the token endpoint refused the client credentials (POST /oauth/token "
            "-> 401 Unauthorized: invalid_client: Client authentication failed); "
            "check client_id and client_secret",
        ),
        (
            token_error(403, "access_denied", 'Client is not authorized to access "x".'),
            "tenant prod: the token endpoint refused the client credentials (POST /oauth/token "
            '-> 403 Forbidden: access_denied: Client is not authorized to access "x".); '
            f"authorise the application for the API {AUDIENCE}",
        ),
    ],
)
async def test_token_endpoint_refusal_is_an_authentication_error(
    auth0: FakeAuth0, make_client: MakeClient, reply: httpx.Response, expected: str
) -> None:
    auth0.script(f"POST {TOKEN}", reply)
    client = make_client()
    with pytest.raises(AuthenticationError) as caught:
        await client.list_signing_keys()
    assert str(caught.value) == expected
    assert auth0.routes == [f"POST {TOKEN}"]  # not retried, no GET without a token


async def test_token_endpoint_429_and_5xx_are_retried(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    auth0.script(
        f"POST {TOKEN}",
        httpx.Response(429, json={"error": "too_many_requests"}, headers={"Retry-After": "2"}),
        httpx.Response(502),
    )
    client = make_client()
    assert len(await client.list_signing_keys()) == 2
    assert fake_time.sleeps == [2.0, 1.0]  # Retry-After, then the second backoff step
    assert auth0.routes == [f"POST {TOKEN}"] * 3 + [f"GET {KEYS}"]


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (httpx.Response(200, text="<html>login</html>", headers=HTML),
         "POST /oauth/token: expected JSON, got text/html"),
        (httpx.Response(200, json={"access_token": "abc"}),
         "POST /oauth/token: expires_in is missing or not a positive number"),
        (httpx.Response(200, json={"expires_in": 10}),
         "POST /oauth/token: access_token is missing or not a string"),
    ],
)  # fmt: skip
async def test_unusable_token_response_is_malformed(
    auth0: FakeAuth0, make_client: MakeClient, reply: httpx.Response, complaint: str
) -> None:
    auth0.script(f"POST {TOKEN}", reply)
    caught = await failed_listing(make_client, MalformedResponse)
    assert str(caught.value) == f"tenant prod: {complaint}"


# --- 403 --------------------------------------------------------------------------------------


async def test_403_names_the_missing_scope_and_is_not_retried(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(
        f"GET {KEYS}",
        api_error(
            403,
            "Insufficient scope, expected any of: read:signing_keys",
            errorCode="insufficient_scope",
        ),
    )
    caught = await failed_listing(make_client, InsufficientScope)

    assert str(caught.value) == (
        "tenant prod: the Management API token lacks the read:signing_keys scope "
        "(grant it to the machine-to-machine application)"
    )
    assert caught.value.scope == "read:signing_keys"
    assert caught.value.reason == "forbidden"
    assert auth0.routes == [f"POST {TOKEN}", f"GET {KEYS}"]


async def test_403_with_several_scopes_and_a_static_token(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    message = "Insufficient scope; expected create:signing_keys and update:signing_keys."
    auth0.script(f"GET {KEYS}", api_error(403, message))
    with pytest.raises(InsufficientScope) as caught:
        await make_client(credentials=STATIC_CREDENTIALS).list_signing_keys()
    assert caught.value.scope == "create:signing_keys update:signing_keys"
    assert str(caught.value) == (
        "tenant prod: the Management API token lacks the create:signing_keys and "
        "update:signing_keys scopes (use a token that has it)"
    )


async def test_403_without_a_scope_in_the_message(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", api_error(403, "Client is not global."))
    caught = await failed_listing(make_client, InsufficientScope)
    assert caught.value.scope is None
    assert str(caught.value) == (
        f"tenant prod: GET {KEYS} -> 403 Forbidden: Client is not global.; "
        "the token needs the read:signing_keys scope"
    )


# --- 429, 5xx, timeouts and network errors -------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "rng", "expected_sleep"),
    [
        ({"Retry-After": "7"}, 0.5, 7.0),
        ({"Retry-After": formatdate(NOW + 12, usegmt=True)}, 0.5, 12.0),
        ({"Retry-After": "7", "X-RateLimit-Reset": str(int(NOW + 5))}, 0.5, 7.0),
        ({"X-RateLimit-Reset": str(int(NOW + 5))}, 0.0, 5.0),
        ({"X-RateLimit-Reset": str(int(NOW + 5))}, 0.999999, 6.0),  # +20% jitter at most
        ({"Retry-After": "soon", "X-RateLimit-Reset": str(int(NOW + 5))}, 0.5, 5.5),
        ({"X-RateLimit-Reset": str(int(NOW - 5))}, 0.5, 0.5),  # reset passed: backoff
        ({}, 0.5, 0.5),
    ],
)
async def test_429_waits_as_the_server_says(
    auth0: FakeAuth0,
    fake_time: FakeTime,
    make_client: MakeClient,
    headers: dict[str, str],
    rng: float,
    expected_sleep: float,
) -> None:
    too_many = api_error(429, "Global limit has been reached")
    auth0.script(
        f"GET {KEYS}", httpx.Response(429, json=json.loads(too_many.content), headers=headers)
    )
    keys = await make_client(rng=lambda: rng).list_signing_keys()
    assert len(keys) == 2
    assert fake_time.sleeps == [pytest.approx(expected_sleep, abs=1e-4)]


async def test_5xx_backs_off_exponentially_then_gives_up(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", *[httpx.Response(503) for _ in range(4)])
    client = make_client()
    with pytest.raises(ServerError) as caught:
        await client.list_signing_keys()

    assert fake_time.sleeps == [0.5, 1.0, 2.0]
    assert str(caught.value) == (
        f"tenant prod: GET {KEYS} -> 503 Service Unavailable (gave up after 4 attempts)"
    )
    assert caught.value.retry_after is None
    assert client.requests_made == 5  # the token request and four GETs


@pytest.mark.parametrize(("rng", "low", "high"), [(0.0, 0.45, 0.45), (0.999999, 0.55, 0.55)])
async def test_backoff_jitter_is_ten_percent(
    auth0: FakeAuth0,
    fake_time: FakeTime,
    make_client: MakeClient,
    rng: float,
    low: float,
    high: float,
) -> None:
    auth0.script(f"GET {KEYS}", httpx.Response(500))
    await make_client(rng=lambda: rng).list_signing_keys()
    assert low - 1e-4 <= fake_time.sleeps[0] <= high + 1e-4


async def test_backoff_is_capped_by_max_delay(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", *[httpx.Response(500) for _ in range(5)])
    policy = RetryPolicy(max_attempts=6, base_delay=10, max_delay=15, max_total_wait=1000)
    await make_client(policy=policy).list_signing_keys()
    assert fake_time.sleeps == [10.0, 15.0, 15.0, 15.0, 15.0]


async def test_total_wait_is_bounded(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", *[httpx.Response(500) for _ in range(9)])
    policy = RetryPolicy(max_attempts=10, base_delay=10, max_delay=10, max_total_wait=25)
    with pytest.raises(ServerError, match=r"gave up after 3 attempts"):
        await make_client(policy=policy).list_signing_keys()
    assert fake_time.sleeps == [10.0, 10.0]


async def test_retry_after_beyond_the_budget_raises_at_once_with_the_hint(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    auth0.script(
        f"GET {KEYS}",
        httpx.Response(429, json={"message": "Too many requests."}, headers={"Retry-After": "120"}),
    )
    caught = await failed_listing(make_client, RateLimited)
    assert caught.value.retry_after == 120.0
    assert caught.value.reason == "rate_limited"
    assert str(caught.value) == (
        f"tenant prod: GET {KEYS} -> 429 Too Many Requests: Too many requests. "
        "(gave up after 1 attempt; the server asked to wait 120s, more than the 60s a poll "
        "may wait)"
    )
    assert fake_time.sleeps == []
    assert auth0.routes.count(f"GET {KEYS}") == 1


async def test_retry_after_is_honoured_on_503(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", httpx.Response(503, headers={"Retry-After": "3"}))
    await make_client().list_signing_keys()
    assert fake_time.sleeps == [3.0]


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (httpx.ReadTimeout("timed out"), SourceTimeout),
        (httpx.ConnectError("[Errno 111] Connection refused"), SourceConnectError),
        (httpx.RemoteProtocolError("Server disconnected"), SourceConnectError),
    ],
)
async def test_transport_failures_are_retried_then_translated(
    auth0: FakeAuth0,
    fake_time: FakeTime,
    make_client: MakeClient,
    raised: httpx.HTTPError,
    expected: type[SourceTemporaryError],
) -> None:
    auth0.script(f"GET {KEYS}", *[raised] * 4)
    caught = await failed_listing(make_client, expected)
    assert caught.value.__cause__ is raised
    assert str(caught.value).startswith(f"tenant prod: GET {KEYS} ")
    assert type(raised).__name__ in str(caught.value)
    assert fake_time.sleeps == [0.5, 1.0, 2.0]


async def test_a_network_blip_is_survived_and_logged(
    auth0: FakeAuth0, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="monitor.sources.auth0")
    auth0.script(f"GET {KEYS}", httpx.ConnectError("refused"), httpx.Response(503))
    assert len(await make_client().list_signing_keys()) == 2

    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "monitor.sources.auth0" and record.levelno == logging.WARNING
    ]
    assert warnings == [
        f"tenant=prod attempt 1/4 failed; retrying in 0.5s: GET {KEYS} -> ConnectError",
        f"tenant=prod attempt 2/4 failed; retrying in 1.0s: GET {KEYS} -> 503",
    ]


async def test_undecodable_body_is_not_retried(auth0: FakeAuth0, make_client: MakeClient) -> None:
    auth0.script(f"GET {KEYS}", httpx.DecodingError("incorrect header check"))
    with pytest.raises(MalformedResponse, match="cannot be decoded"):
        await make_client().list_signing_keys()
    assert auth0.routes.count(f"GET {KEYS}") == 1


# --- pacing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected_sleeps"),
    [
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW + 3))}, [3.0]),
        ({"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": str(int(NOW + 2))}, [2.0]),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW + 1000))}, [30.0]),
        ({"X-RateLimit-Remaining": "2", "X-RateLimit-Reset": str(int(NOW + 3))}, []),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW - 3))}, []),
        ({"X-RateLimit-Remaining": "0"}, []),
        ({"X-RateLimit-Remaining": "none", "X-RateLimit-Reset": "soon"}, []),
        ({"X-RateLimit-Remaining": "-1", "X-RateLimit-Reset": "nan"}, []),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": ""}, []),
        ({}, []),
    ],
)
async def test_pacing_waits_for_the_reset_when_the_bucket_is_low(
    auth0: FakeAuth0,
    fake_time: FakeTime,
    make_client: MakeClient,
    headers: dict[str, str],
    expected_sleeps: list[float],
) -> None:
    auth0.script(f"GET {KEYS}", httpx.Response(200, json=auth0.keys_body, headers=headers))
    client = make_client()
    await client.list_signing_keys()
    assert fake_time.sleeps == []
    await client.list_signing_keys()
    assert fake_time.sleeps == expected_sleeps
    assert auth0.routes == [f"POST {TOKEN}", f"GET {KEYS}", f"GET {KEYS}"]


async def test_token_endpoint_headers_do_not_pace_the_management_api(
    auth0: FakeAuth0, fake_time: FakeTime, make_client: MakeClient
) -> None:
    token_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW + 9))}
    body = {"access_token": "abcd", "expires_in": 86400}
    auth0.script(f"POST {TOKEN}", httpx.Response(200, json=body, headers=token_headers))
    await make_client().list_signing_keys()
    assert fake_time.sleeps == []


# --- bodies and statuses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (httpx.Response(200, text="<html>maintenance</html>", headers=HTML),
         "expected JSON, got text/html"),
        (httpx.Response(200, content=b"[]"), "expected JSON, got no Content-Type"),
        (httpx.Response(200, content=b'[{"kid": "a", "ce',
                        headers={"Content-Type": "application/json; charset=utf-8"}),
         "invalid JSON (Unterminated string starting at: line 1 column 15 (char 14))"),
        (httpx.Response(200, json={"keys": []}),
         "keys/signing: expected a JSON array, got dict"),
        (httpx.Response(200, json=[{"kid": "a", "cert": "x", "fingerprint": "y"}]),
         "keys/signing[0].thumbprint: missing"),
    ],
)  # fmt: skip
async def test_malformed_list_bodies(
    auth0: FakeAuth0, make_client: MakeClient, reply: httpx.Response, complaint: str
) -> None:
    auth0.script(f"GET {KEYS}", reply)
    caught = await failed_listing(make_client, MalformedResponse)
    assert str(caught.value) == f"tenant prod: GET {KEYS}: {complaint}"
    assert caught.value.tenant == TENANT
    assert auth0.routes.count(f"GET {KEYS}") == 1  # the next poll tries again, not us


async def test_json_content_type_with_charset_is_accepted(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(
        f"GET {KEYS}",
        httpx.Response(
            200,
            content=json.dumps(auth0.keys_body).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        ),
    )
    assert len(await make_client().list_signing_keys()) == 2


async def test_404_on_the_list_is_not_found(auth0: FakeAuth0, make_client: MakeClient) -> None:
    auth0.script(f"GET {KEYS}", api_error(404, "Not Found"))
    caught = await failed_listing(make_client, NotFound)
    assert str(caught.value) == (
        f"tenant prod: GET {KEYS} -> 404 Not Found: Not Found; is the tenant domain right?"
    )


async def test_a_redirect_is_an_unexpected_status_without_its_location(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    location = "https://elsewhere.example/login?state=abc"
    auth0.script(f"GET {KEYS}", httpx.Response(302, headers={"Location": location}))
    caught = await failed_listing(make_client, UnexpectedStatus)
    assert "302 Found" in str(caught.value)
    assert "elsewhere" not in str(caught.value)
    assert auth0.routes == [f"POST {TOKEN}", f"GET {KEYS}"]


async def test_other_4xx_quotes_a_truncated_server_message(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}", api_error(400, "Invalid request URI. " + "x" * 1000))
    caught = await failed_listing(make_client, UnexpectedStatus)
    message = str(caught.value)
    assert message.startswith(f"tenant prod: GET {KEYS} -> 400 Bad Request: Invalid request URI.")
    assert message.endswith("…")
    assert len(message.partition("Bad Request: ")[2]) == 200


async def test_get_signing_key(auth0: FakeAuth0, make_client: MakeClient) -> None:
    auth0.script(f"GET {KEYS}/kidNext", httpx.Response(200, json=auth0.keys_body[1]))
    client = make_client()
    key = await client.get_signing_key("kidNext")
    assert key is not None and (key.kid, key.state) == ("kidNext", "next")
    assert await client.get_signing_key("kidGone") is None  # the fake answers 404


async def test_get_signing_key_quotes_the_kid(auth0: FakeAuth0, make_client: MakeClient) -> None:
    assert await make_client().get_signing_key("a/b c?d") is None
    assert auth0.routes[-1] == f"GET {KEYS}/a%2Fb%20c%3Fd"
    with pytest.raises(ValueError, match="kid"):
        await make_client().get_signing_key("")


async def test_get_signing_key_shape_error_names_the_kid(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(f"GET {KEYS}/kidX", httpx.Response(200, json=[]))
    with pytest.raises(MalformedResponse) as caught:
        await make_client().get_signing_key("kidX")
    assert str(caught.value) == (
        f"tenant prod: GET {KEYS}/kidX: keys/signing/kidX: expected an object, got list"
    )


# --- exception translation ------------------------------------------------------------------


def _httpx_error_classes() -> list[type[Exception]]:
    classes = {
        value
        for value in vars(httpx).values()
        if isinstance(value, type) and issubclass(value, httpx.HTTPError)
    }
    return sorted([*classes, httpx.InvalidURL], key=lambda cls: cls.__name__)


def _instantiate(error_class: type[Exception]) -> Exception:
    if error_class is httpx.HTTPStatusError:
        request = httpx.Request("GET", f"{API_BASE}{KEYS}")
        response = httpx.Response(418, request=request)
        return httpx.HTTPStatusError("teapot", request=request, response=response)
    return error_class("boom")


@pytest.mark.parametrize("error_class", _httpx_error_classes(), ids=lambda cls: cls.__name__)
def test_every_httpx_error_is_translated(error_class: type[Exception]) -> None:
    raised = _instantiate(error_class)
    with pytest.raises(KeywatchError) as caught:
        with translate_httpx_errors(tenant="prod", endpoint=f"GET {KEYS}"):
            raise raised
    assert isinstance(caught.value, SourceError)
    assert caught.value.__cause__ is raised
    assert str(caught.value).startswith(f"tenant prod: GET {KEYS} ")


@pytest.mark.parametrize(
    ("error_class", "expected"),
    [
        (httpx.ConnectTimeout, SourceTimeout),
        (httpx.ReadTimeout, SourceTimeout),
        (httpx.WriteTimeout, SourceTimeout),
        (httpx.PoolTimeout, SourceTimeout),
        (httpx.ConnectError, SourceConnectError),
        (httpx.ReadError, SourceConnectError),
        (httpx.WriteError, SourceConnectError),
        (httpx.CloseError, SourceConnectError),
        (httpx.RemoteProtocolError, SourceConnectError),
        (httpx.LocalProtocolError, SourceConnectError),
        (httpx.ProxyError, SourceConnectError),
        (httpx.DecodingError, MalformedResponse),
        (httpx.TooManyRedirects, UnexpectedStatus),
        (httpx.UnsupportedProtocol, SourcePermanentError),
        (httpx.InvalidURL, SourcePermanentError),
        (httpx.HTTPStatusError, UnexpectedStatus),
    ],
    ids=lambda value: value.__name__,
)
def test_httpx_errors_map_by_how_callers_react(
    error_class: type[Exception], expected: type[SourceError]
) -> None:
    with pytest.raises(SourceError) as caught:
        with translate_httpx_errors(tenant="prod", endpoint=f"GET {KEYS}"):
            raise _instantiate(error_class)
    assert type(caught.value) is expected


# --- secrets --------------------------------------------------------------------------------

ECHO = f"{CLIENT_SECRET} {STATIC_TOKEN} issued-TOKEN-1-must-not-leak"
"""A hostile server echoing every secret back; the client must scrub them."""

SECRET_SCENARIOS: dict[str, tuple[Credentials, list[tuple[str, Reply]]]] = {
    "token 401": (CLIENT_CREDENTIALS, [(TOKEN_ROUTE, token_error(401, "invalid_client", ECHO))]),
    "token 403": (CLIENT_CREDENTIALS, [(TOKEN_ROUTE, token_error(403, "access_denied", ECHO))]),
    "token 500": (CLIENT_CREDENTIALS, [(TOKEN_ROUTE, token_error(500, "oops", ECHO))] * 4),
    "token truncated": (
        CLIENT_CREDENTIALS,
        [(TOKEN_ROUTE, httpx.Response(
            200, content=b'{"access_token": "issued-TOKEN-1-must-not-leak", "exp',
            headers={"Content-Type": "application/json"}))],
    ),
    "api 401 twice": (CLIENT_CREDENTIALS, [(KEYS_ROUTE, api_error(401, ECHO))] * 2),
    "static 401": (STATIC_CREDENTIALS, [(KEYS_ROUTE, api_error(401, ECHO))]),
    "api 403": (CLIENT_CREDENTIALS, [(KEYS_ROUTE, api_error(403, ECHO))]),
    "api 429": (CLIENT_CREDENTIALS, [(KEYS_ROUTE, api_error(429, ECHO))] * 4),
    "api 503": (STATIC_CREDENTIALS, [(KEYS_ROUTE, api_error(503, ECHO))] * 4),
    "api 418": (CLIENT_CREDENTIALS, [(KEYS_ROUTE, api_error(418, ECHO))]),
    "api network": (CLIENT_CREDENTIALS, [(KEYS_ROUTE, httpx.ConnectError(ECHO))] * 4),
    "api redirect": (
        CLIENT_CREDENTIALS,
        [(KEYS_ROUTE, httpx.Response(302, headers={"Location": f"https://x/?t={ECHO}"}))],
    ),
    "api html": (
        STATIC_CREDENTIALS,
        [(KEYS_ROUTE, httpx.Response(200, text=ECHO, headers=HTML))],
    ),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(SECRET_SCENARIOS))
async def test_secrets_never_reach_messages_or_logs(
    auth0: FakeAuth0,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    scenario: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    credentials, replies = SECRET_SCENARIOS[scenario]
    for route, reply in replies:
        auth0.script(route, reply)
    with pytest.raises(SourceError) as caught:
        await make_client(credentials=credentials).list_signing_keys()

    secrets = [credentials.client_secret or credentials.token, *auth0.issued_tokens]
    texts = [str(caught.value), repr(caught.value), *map(str, caught.value.args)]
    texts += [record.getMessage() for record in caplog.records]
    for secret in filter(None, secrets):
        assert not [text for text in texts if secret in text], f"{secret} leaked"
    assert str(caught.value).startswith("tenant prod: ")


# --- real sockets on 127.0.0.1 --------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def loopback() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def serve(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        host, port = server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    yield serve
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def _loopback_client(http: httpx.AsyncClient, base: str, fake_time: FakeTime) -> Auth0Client:
    return Auth0Client(
        http,
        tenant=TENANT,
        api_base=base,
        audience=f"{base}/api/v2/",
        credentials=STATIC_CREDENTIALS,
        timeout=0.2,
        policy=RetryPolicy(max_attempts=2),
        sleep=fake_time.sleep,
        clock=fake_time.clock,
        rng=lambda: 0.5,
    )


async def test_real_read_timeout_becomes_source_timeout(
    loopback: Callable[[Handler], Awaitable[str]], fake_time: FakeTime
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        await reader.read()  # until the client gives up and hangs up
        writer.close()

    base = await loopback(never_answer)
    async with build_http_client() as http:
        with pytest.raises(SourceTimeout) as caught:
            await _loopback_client(http, base, fake_time).list_signing_keys()
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert "gave up after 2 attempts" in str(caught.value)


async def test_server_hanging_up_becomes_source_connect_error(
    loopback: Callable[[Handler], Awaitable[str]], fake_time: FakeTime
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request_head(reader)
        writer.close()

    base = await loopback(hang_up)
    async with build_http_client() as http:
        with pytest.raises(SourceConnectError) as caught:
            await _loopback_client(http, base, fake_time).list_signing_keys()
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert fake_time.sleeps == [0.5]


async def test_shared_client_does_not_follow_redirects(
    loopback: Callable[[Handler], Awaitable[str]], fake_time: FakeTime
) -> None:
    request_lines: list[bytes] = []

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            request_lines.append(head.split(b"\r\n", 1)[0])
            writer.write(
                b"HTTP/1.1 301 Moved Permanently\r\nLocation: /elsewhere\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
            await writer.drain()
        writer.close()

    base = await loopback(redirect)
    async with build_http_client() as http:
        with pytest.raises(UnexpectedStatus, match="301 Moved Permanently"):
            await _loopback_client(http, base, fake_time).list_signing_keys()
    assert request_lines == [f"GET {KEYS} HTTP/1.1".encode()]


async def _answer_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes, seen: list[bytes]
) -> None:
    """Read one request (head and a Content-Length body), record it, send ``answer``."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    seen.append(head + await reader.readexactly(length))
    writer.write(answer)
    await writer.drain()
    writer.close()


async def test_request_limited_reads_alike_straight_from_aiohttp_and_through_httpx(
    loopback: Callable[[Handler], Awaitable[str]],
) -> None:
    """keywatch's client sends ``request_limited`` to aiohttp directly; httpx's own transport
    goes through httpx: the same request leaves, the same answer comes back."""
    body = gzip.compress(b'{"access_token": "t"}')
    answer = (
        b"HTTP/1.1 200 Fine Thanks\r\nContent-Type: application/json\r\n"
        b"Content-Encoding: gzip\r\nX-Repeated: one\r\nx-repeated: two\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    seen: list[bytes] = []
    base = await loopback(lambda reader, writer: _answer_once(reader, writer, answer, seen))
    answers = []
    for transport in ("aiohttp", "httpcore"):
        async with build_http_client(transport=transport) as http:
            assert isinstance(http, AiohttpClient) is (transport == "aiohttp")
            answers.append(
                await request_limited(
                    http,
                    "POST",
                    f"{base}/oauth/token/a%3Db%2F~?x=a%2Fb&y=%C3%BC",
                    limit=1000,
                    endpoint="POST /oauth/token",
                    timeouts=build_timeout(5.0),
                    headers={"Accept": "application/json"},
                    json={"client_id": "id", "name": "é"},
                )
            )
    direct, through_httpx = (
        (
            a.status_code,
            a.reason_phrase,
            a.headers.get("X-REPEATED"),
            a.headers.get("nope"),
            a.content,
        )
        for a in answers
    )
    assert (
        direct == through_httpx == (200, "Fine Thanks", "one, two", None, b'{"access_token": "t"}')
    )
    requests = [_request_parts(request) for request in seen]
    assert requests[0] == requests[1]
    assert requests[0] == (
        b"POST /oauth/token/a%3Db%2F~?x=a%2Fb&y=%C3%BC HTTP/1.1",
        f"keywatch/{__version__}".encode(),
        b"application/json",
        b"application/json",
        '{"client_id":"id","name":"é"}'.encode(),
    )


def _request_parts(request: bytes) -> tuple[bytes, ...]:
    head, _, body = request.partition(b"\r\n\r\n")
    line, *fields = head.split(b"\r\n")
    headers = dict(field.split(b": ", 1) for field in fields)
    headers = {name.lower(): value for name, value in headers.items()}
    return line, headers[b"user-agent"], headers[b"accept"], headers[b"content-type"], body


async def test_an_undecodable_body_from_a_real_server_is_malformed_not_retried(
    loopback: Callable[[Handler], Awaitable[str]], fake_time: FakeTime
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 8\r\n\r\nnot gzip"
    )
    seen: list[bytes] = []
    base = await loopback(lambda reader, writer: _answer_once(reader, writer, answer, seen))
    async with build_http_client() as http:
        with pytest.raises(MalformedResponse, match="sent a body that cannot be decoded"):
            await _loopback_client(http, base, fake_time).list_signing_keys()
    assert len(seen) == 1
    assert fake_time.sleeps == []


# --- the client as a SnapshotSource ----------------------------------------------------------

TAKEN_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_fetch_is_one_snapshot_of_the_tenant(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    source: SnapshotSource = make_client()
    snapshot = await source.fetch(previous=None, now=lambda: TAKEN_AT)
    assert (snapshot.tenant, snapshot.taken_at) == (TENANT, TAKEN_AT)
    assert sorted(snapshot.keys) == ["kidCurrent", "kidNext"]
    assert auth0.routes == [TOKEN_ROUTE, KEYS_ROUTE]


async def test_fetch_asks_again_when_the_answer_has_no_current_key(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    auth0.script(KEYS_ROUTE, httpx.Response(200, json=[]))
    snapshot = await make_client().fetch(previous=None, now=lambda: TAKEN_AT)
    assert snapshot.current_kids == ["kidCurrent"]
    assert auth0.routes == [TOKEN_ROUTE, KEYS_ROUTE, KEYS_ROUTE]


async def test_fetch_confirms_a_vanished_kid_by_get_before_leaving_it_out(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    previous_key = make_signing_key_json("kidPrevious", previous=True)
    auth0.script(f"GET {KEYS}/kidPrevious", httpx.Response(200, json=previous_key))
    auth0.script(f"GET {KEYS}/kidWatched", api_error(404, "Signing key not found."))
    previous = await make_client().fetch(previous=None, now=lambda: TAKEN_AT)
    previous = Snapshot(
        tenant=TENANT,
        taken_at=TAKEN_AT,
        keys={**previous.keys, "kidPrevious": previous.keys["kidNext"]},
    )
    snapshot = await make_client().fetch(
        previous=previous, watched_kids=["kidWatched"], now=lambda: TAKEN_AT
    )
    assert sorted(snapshot.keys) == ["kidCurrent", "kidNext", "kidPrevious"]
    assert snapshot.keys["kidPrevious"].state == "previous"
    assert auth0.routes[-2:] == [f"GET {KEYS}/kidPrevious", f"GET {KEYS}/kidWatched"]


async def test_the_same_list_answer_again_is_not_parsed_again(
    auth0: FakeAuth0, make_client: MakeClient
) -> None:
    client = make_client()
    first = await client.fetch(previous=None, now=lambda: TAKEN_AT)
    again = await client.fetch(previous=first, now=lambda: TAKEN_AT)
    assert again.keys is first.keys  # the same key objects: nothing parsed, compared at once
    auth0.keys_body[1] = make_signing_key_json("kidNext", previous=True)
    changed = await client.fetch(previous=again, now=lambda: TAKEN_AT)
    assert changed.keys["kidNext"].state == "previous"
    assert changed.keys["kidCurrent"] is not first.keys["kidCurrent"]
    same_body_as_html = httpx.Response(
        200, content=json.dumps(auth0.keys_body).encode(), headers=HTML
    )
    auth0.script(KEYS_ROUTE, same_body_as_html)
    with pytest.raises(MalformedResponse, match="expected JSON, got text/html"):
        await client.fetch(previous=changed, now=lambda: TAKEN_AT)
    assert auth0.routes.count(KEYS_ROUTE) == 4
