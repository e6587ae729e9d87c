"""Every way a token call can fail maps to one typed, secret-free `IcaError`."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import html
import json
import re
import socket
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp
import pytest

from aioica_auth import (
    ApiError,
    ApiKey,
    BadRequestError,
    BasicAuth,
    ConsoleTokenApi,
    ErrorResponse,
    ForbiddenError,
    IcaError,
    IcaTokenApi,
    InvalidResponseError,
    Jwt,
    NotFoundError,
    Problem,
    PsToken,
    RateLimitError,
    ServerError,
    TokenUnavailableError,
    TransportError,
    TransportTimeoutError,
    UnauthorizedError,
)
from aioica_auth._wire.answers import parse_http_date, parse_retry_after

from ..support import find_secret
from ..support import unsigned_jwt as make_jwt

ICA = "https://ica.illumina.com/ica/rest"
CONSOLE = "https://aps2.platform.illumina.com"
ANY_URL = re.compile(r".*")

API_KEY = "ak-err-9f8e7d6c5b4a3210SECRET"
USER = "bob@example.org"
PASSWORD = "pw-err-Hunter2!xyz"
BASIC_B64 = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PS_TOKEN = "ps-err-session-SECRET-777"


JWT_IN = make_jwt({"sub": "err-in", "exp": 2_000_000_000})
JWT_OUT = make_jwt({"sub": "err-out", "exp": 2_000_000_100})
FOREIGN_JWT = make_jwt({"sub": "someone-else", "exp": 2_000_000_200})
SECRETS = (API_KEY, PASSWORD, BASIC_B64, PS_TOKEN, JWT_IN, JWT_OUT, FOREIGN_JWT)


def assert_clean(*texts: str) -> None:
    """None of the texts contains any secret of this module."""
    for text in texts:
        assert find_secret(text, SECRETS) is None, f"secret leaked into {text!r}"


def everything_about(exc: BaseException) -> list[str]:
    """Every text an error shows: str, repr, attributes, and the full formatted traceback."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, ApiError):
        texts += [exc.excerpt, exc.url, exc.method, exc.reason, repr(exc.problem)]
    return texts


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """After each test, the DEBUG log holds no secret."""
    yield
    assert_clean(caplog.text)


class Endpoint(NamedTuple):
    """One raw endpoint call, with the secrets it sends."""

    name: str
    method: str
    url: str
    call: Callable[[aiohttp.ClientSession], Awaitable[Any]]
    secrets: tuple[str, ...]


ENDPOINTS = [
    Endpoint(
        "ica-create",
        "POST",
        f"{ICA}/api/tokens",
        lambda s: IcaTokenApi(s).create_jwt_token(ApiKey(API_KEY), tenant="acme"),
        (API_KEY,),
    ),
    Endpoint(
        "ica-create-basic",
        "POST",
        f"{ICA}/api/tokens",
        lambda s: IcaTokenApi(s).create_jwt_token(BasicAuth(USER, PASSWORD)),
        (PASSWORD, BASIC_B64),
    ),
    Endpoint(
        "ica-refresh",
        "POST",
        f"{ICA}/api/tokens:refresh",
        lambda s: IcaTokenApi(s).refresh_jwt_token(JWT_IN),
        (JWT_IN,),
    ),
    Endpoint(
        "console-create",
        "POST",
        f"{CONSOLE}/v1/tokens",
        lambda s: ConsoleTokenApi(s).create_token(
            ApiKey(API_KEY), cid="proj", scopes=["A", "B"], authorization=Jwt(JWT_IN)
        ),
        (API_KEY, JWT_IN),
    ),
    Endpoint(
        "console-details",
        "GET",
        f"{CONSOLE}/v1/tokens/details",
        lambda s: ConsoleTokenApi(s).get_token_details(PsToken(PS_TOKEN)),
        (PS_TOKEN,),
    ),
    Endpoint(
        "console-refresh",
        "POST",
        f"{CONSOLE}/v1/tokens:refresh",
        lambda s: ConsoleTokenApi(s).refresh_token(PS_TOKEN),
        (PS_TOKEN,),
    ),
    Endpoint(
        "console-revoke",
        "DELETE",
        f"{CONSOLE}/v1/tokens",
        lambda s: ConsoleTokenApi(s).revoke_token(JWT_IN, authorization=PsToken(PS_TOKEN)),
        (JWT_IN, PS_TOKEN),
    ),
]
BY_NAME = {e.name: e for e in ENDPOINTS}
ENDPOINT_PARAMS = [pytest.param(e, id=e.name) for e in ENDPOINTS]

STATUS_CLASSES = [
    (400, BadRequestError),
    (401, UnauthorizedError),
    (403, ForbiddenError),
    (404, NotFoundError),
    (429, RateLimitError),
    (500, ServerError),
    (502, ServerError),
    (503, ServerError),
]


def answer(wire: Any, endpoint: Endpoint, status: int, body: Any, **kwargs: Any) -> None:
    """Register one mocked answer for the endpoint's method."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    wire.add(ANY_URL, endpoint.method, status=status, body=body, **kwargs)


# --------------------------------------------------------------------------- hierarchy


def test_error_tree() -> None:
    """The documented exception tree: one root, API vs transport, timeout also a TimeoutError."""
    for cls in (
        BadRequestError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        RateLimitError,
        ServerError,
        InvalidResponseError,
    ):
        assert issubclass(cls, ApiError)
    assert issubclass(ApiError, IcaError)
    assert issubclass(TransportError, IcaError)
    assert issubclass(TokenUnavailableError, IcaError)
    assert issubclass(TransportTimeoutError, TransportError)
    assert issubclass(TransportTimeoutError, TimeoutError)
    assert not issubclass(TransportError, ApiError)
    assert not issubclass(ApiError, TransportError)
    assert issubclass(IcaError, Exception)


# --------------------------------------------------------------------------- status matrix


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
@pytest.mark.parametrize("endpoint", ENDPOINT_PARAMS)
async def test_status_maps_to_error_class(
    wire: Any, session: aiohttp.ClientSession, endpoint: Endpoint, status: int, cls: type
) -> None:
    """Each error status raises its class with status, method and URL; echoed secrets scrubbed."""
    echo = "<html><body><h1>Denied</h1><p>you sent " + " and ".join(endpoint.secrets) + "</p>"
    answer(wire, endpoint, status, echo + "</body></html>", content_type="text/html")
    with pytest.raises(cls) as info:
        await endpoint.call(session)
    exc = info.value
    assert type(exc) is cls
    assert isinstance(exc, ApiError)
    assert isinstance(exc, IcaError)
    assert exc.status == status
    assert exc.method == endpoint.method
    assert exc.url == endpoint.url
    assert exc.problem is None
    assert exc.retry_after is None
    assert exc.excerpt.startswith("<html><body><h1>Denied</h1><p>you sent ***")
    assert str(exc).startswith(f"HTTP {status} from {endpoint.method} {endpoint.url}: ")
    assert_clean(*everything_about(exc))


@pytest.mark.parametrize(("status", "cls"), [(409, ApiError), (418, ApiError), (599, ServerError)])
async def test_unlisted_status_maps_to_base_or_server_error(
    wire: Any, session: aiohttp.ClientSession, status: int, cls: type
) -> None:
    """A status without its own class is a plain ApiError (4xx) or ServerError (any 5xx)."""
    answer(wire, BY_NAME["ica-create"], status, b"")
    with pytest.raises(ApiError) as info:
        await BY_NAME["ica-create"].call(session)
    assert type(info.value) is cls
    assert info.value.status == status


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_is_an_error_not_followed(
    wire: Any, session: aiohttp.ClientSession, status: int
) -> None:
    """A redirect is never followed (it could carry the key elsewhere): it is an ApiError."""
    answer(
        wire,
        BY_NAME["ica-create"],
        status,
        b"",
        headers={"Location": "https://evil.example.org/steal"},
    )
    with pytest.raises(ApiError) as info:
        await BY_NAME["ica-create"].call(session)
    assert type(info.value) is ApiError
    assert info.value.status == status
    assert len(wire.calls()) == 1


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(("value", "expected"), [("120", 120.0), ("0", 0.0), (" 7 ", 7.0)])
async def test_429_retry_after_seconds(
    wire: Any, session: aiohttp.ClientSession, value: str, expected: float
) -> None:
    """`Retry-After: <seconds>` on a 429 is RateLimitError.retry_after in seconds."""
    answer(wire, BY_NAME["ica-create"], 429, b"", headers={"Retry-After": value})
    with pytest.raises(RateLimitError) as info:
        await BY_NAME["ica-create"].call(session)
    assert info.value.retry_after == expected


async def test_429_retry_after_http_date_against_server_date(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """An HTTP-date `Retry-After` counts from the server's `Date`, not our possibly skewed clock."""
    server_now = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    headers = {
        "Date": email.utils.format_datetime(server_now, usegmt=True),
        "Retry-After": email.utils.format_datetime(
            server_now + dt.timedelta(seconds=90), usegmt=True
        ),
    }
    answer(wire, BY_NAME["console-create"], 429, {"code": "TooMany"}, headers=headers)
    with pytest.raises(RateLimitError) as info:
        await BY_NAME["console-create"].call(session)
    assert info.value.retry_after == 90.0
    assert info.value.problem == ErrorResponse(code="TooMany")


async def test_429_retry_after_http_date_without_server_date(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """Without a `Date`, an HTTP-date `Retry-After` counts from our clock."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    retry = email.utils.format_datetime(when, usegmt=True)
    answer(wire, BY_NAME["ica-create"], 429, b"", headers={"Retry-After": retry})
    with pytest.raises(RateLimitError) as info:
        await BY_NAME["ica-create"].call(session)
    assert info.value.retry_after is not None
    assert 110.0 <= info.value.retry_after <= 120.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None), ("-5", None), ("1.5", None)],
)
async def test_429_retry_after_past_or_garbage(
    wire: Any, session: aiohttp.ClientSession, value: str, expected: float | None
) -> None:
    """A past date means 0; an unreadable `Retry-After` means None (we were not told)."""
    answer(wire, BY_NAME["ica-create"], 429, b"", headers={"Retry-After": value})
    with pytest.raises(RateLimitError) as info:
        await BY_NAME["ica-create"].call(session)
    assert info.value.retry_after == expected


async def test_503_retry_after(wire: Any, session: aiohttp.ClientSession) -> None:
    """`Retry-After` on a 503 is kept on the ServerError too."""
    answer(wire, BY_NAME["ica-refresh"], 503, b"", headers={"Retry-After": "30"})
    with pytest.raises(ServerError) as info:
        await BY_NAME["ica-refresh"].call(session)
    assert info.value.retry_after == 30.0


# --------------------------------------------------------------------------- error bodies


PROBLEM_ID = uuid.UUID("6f1c6a4e-8f2b-4c1e-9d7a-0123456789ab")


async def test_problem_json_body_is_decoded(wire: Any, session: aiohttp.ClientSession) -> None:
    """An RFC 7807 body becomes `.problem`, a Problem with every field decoded (id, timestamp)."""
    body = {
        "id": str(PROBLEM_ID),
        "type": "https://ica.illumina.com/problems/unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "ICA_SEC_002 : Unauthorized (ref. 52c1f587)",
        "instance": "/ica/rest/api/tokens",
        "parameters": {"header": "X-API-Key"},
        "timestamp": "2024-05-01T12:34:56.789Z",
        "somethingNew": [1, 2, 3],
    }
    answer(wire, BY_NAME["ica-create"], 401, body, content_type="application/problem+json")
    with pytest.raises(UnauthorizedError) as info:
        await BY_NAME["ica-create"].call(session)
    exc = info.value
    assert exc.problem == Problem(
        id=PROBLEM_ID,
        type="https://ica.illumina.com/problems/unauthorized",
        title="Unauthorized",
        status=401,
        detail="ICA_SEC_002 : Unauthorized (ref. 52c1f587)",
        instance="/ica/rest/api/tokens",
        parameters={"header": "X-API-Key"},
        timestamp=dt.datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=dt.UTC),
    )
    assert exc.excerpt == ""
    assert str(exc) == (
        f"HTTP 401 from POST {ICA}/api/tokens: Unauthorized: "
        "ICA_SEC_002 : Unauthorized (ref. 52c1f587)"
    )


async def test_problem_with_malformed_id_and_timestamp_keeps_title(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """A malformed id or timestamp is dropped to None; title and detail survive."""
    body = {"id": "not-a-uuid", "timestamp": "yesterday", "title": "Too many", "status": 429}
    answer(wire, BY_NAME["ica-create"], 429, body, content_type="application/problem+json")
    with pytest.raises(RateLimitError) as info:
        await BY_NAME["ica-create"].call(session)
    assert info.value.problem == Problem(title="Too many", status=429)


async def test_problem_that_does_not_fit_falls_back_to_excerpt(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """A problem-like body whose fields have the wrong type gives no `.problem` but an excerpt."""
    body = {"title": "Broken", "status": "not-a-number"}
    answer(wire, BY_NAME["ica-create"], 500, body, content_type="application/problem+json")
    with pytest.raises(ServerError) as info:
        await BY_NAME["ica-create"].call(session)
    assert info.value.problem is None
    assert info.value.excerpt == json.dumps(body)


async def test_v1_error_response_body_is_decoded(wire: Any, session: aiohttp.ClientSession) -> None:
    """A console `{code, message, details}` body becomes `.problem`, an ErrorResponse."""
    body = {"code": "InvalidInput", "message": "cid is unknown", "details": [{"field": "cid"}]}
    answer(wire, BY_NAME["console-create"], 400, body)
    with pytest.raises(BadRequestError) as info:
        await BY_NAME["console-create"].call(session)
    exc = info.value
    assert exc.problem == ErrorResponse(
        code="InvalidInput", message="cid is unknown", details=({"field": "cid"},)
    )
    assert exc.excerpt == ""
    assert str(exc) == f"HTTP 400 from POST {CONSOLE}/v1/tokens: InvalidInput: cid is unknown"


@pytest.mark.parametrize("endpoint", ENDPOINT_PARAMS)
async def test_empty_error_body(
    wire: Any, session: aiohttp.ClientSession, endpoint: Endpoint
) -> None:
    """An error with an empty body has no problem, no excerpt, and a status-only message."""
    answer(wire, endpoint, 401, b"")
    with pytest.raises(UnauthorizedError) as info:
        await endpoint.call(session)
    assert info.value.problem is None
    assert info.value.excerpt == ""
    assert str(info.value) == f"HTTP 401 from {endpoint.method} {endpoint.url}"


async def test_html_error_body_becomes_short_excerpt(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """An HTML error page becomes `.excerpt`: whitespace collapsed, cut at 200 characters + "…"."""
    page = "<html>\n  <head><title>502 Bad Gateway</title></head>\n<body>" + "x" * 500
    answer(wire, BY_NAME["ica-create"], 502, page, content_type="text/html")
    with pytest.raises(ServerError) as info:
        await BY_NAME["ica-create"].call(session)
    exc = info.value
    collapsed = " ".join(page.split())
    assert exc.excerpt == collapsed[:200] + "…"
    assert exc.problem is None
    assert repr(exc.excerpt) in str(exc)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"error": "nope", "status": 500}, id="object"),
        pytest.param([{"title": "in a list"}], id="array"),
        pytest.param("just a string", id="json-string"),
    ],
)
async def test_json_error_body_that_is_neither_model(
    wire: Any, session: aiohttp.ClientSession, body: Any
) -> None:
    """JSON that is neither a Problem nor an ErrorResponse gives no `.problem`, only the excerpt."""
    text = json.dumps(body)
    answer(wire, BY_NAME["console-details"], 500, text)
    with pytest.raises(ServerError) as info:
        await BY_NAME["console-details"].call(session)
    assert info.value.problem is None
    assert info.value.excerpt == text


# --------------------------------------------------------------------------- bad success answers


def _jwt_with(claims: dict[str, Any]) -> str:
    return make_jwt(claims)


BAD_SUCCESS = [
    ("ica-create", 200, "<html>maintenance</html>", "text/html", "not JSON"),
    ("ica-create", 200, '{"token": "eyJhbGciOi', "application/json", "not JSON"),
    ("ica-create", 200, "", "application/json", "object"),
    ("ica-create", 200, "null", "application/json", "object"),
    ("ica-create", 200, "[]", "application/json", "object"),
    ("ica-create", 200, json.dumps(JWT_OUT), "application/json", "object"),
    ("ica-create", 200, "{}", "application/json", "no token"),
    ("ica-create", 200, '{"jwt": "x"}', "application/json", "no token"),
    ("ica-create", 200, '{"token": null}', "application/json", "no token"),
    ("ica-create", 200, '{"token": ""}', "application/json", "no token"),
    ("ica-create", 200, '{"token": "opaque-not-a-jwt"}', "application/json", "JWT"),
    ("ica-create", 200, '{"token": 12345}', "application/json", "JWT"),
    ("ica-create", 200, '{"token": {"nested": 1}}', "application/json", "JWT"),
    (
        "ica-create",
        200,
        json.dumps({"token": _jwt_with({"exp": "tomorrow"})}),
        "application/json",
        "'exp'",
    ),
    (
        "ica-create",
        200,
        json.dumps({"token": _jwt_with({"exp": 1e300})}),
        "application/json",
        "'exp'",
    ),
    (
        "ica-create",
        200,
        json.dumps({"token": _jwt_with({"nbf": [1]})}),
        "application/json",
        "'nbf'",
    ),
    ("ica-refresh", 201, '{"access_token": "eyJ.not.jwt"}', "application/json", "JWT"),
    ("ica-refresh", 200, "\x00\x01binary", "application/octet-stream", "not JSON"),
    ("console-create", 201, "{}", "application/json", "access_token"),
    (
        "console-create",
        201,
        '{"access_token": null, "token_type": "x"}',
        "application/json",
        "access_token",
    ),
    ("console-create", 201, "OK", "text/plain", "not JSON"),
    ("console-refresh", 201, '{"token_type": "ps"}', "application/json", "access_token"),
    ("console-refresh", 201, '{"access_token": "', "application/json", "not JSON"),
    ("console-details", 200, "[1, 2]", "application/json", "object"),
    ("console-details", 200, '{"acls": 5}', "application/json", "TokenDetailResponse"),
    ("console-details", 200, '{"domain": 5}', "application/json", "TokenDetailResponse"),
    ("console-details", 200, "<html/>", "text/html", "not JSON"),
]


@pytest.mark.parametrize(
    ("name", "status", "body", "content_type", "reason"),
    [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(BAD_SUCCESS)],
)
async def test_unusable_success_answer_is_invalid_response(
    wire: Any,
    session: aiohttp.ClientSession,
    name: str,
    status: int,
    body: str,
    content_type: str,
    reason: str,
) -> None:
    """A 2xx whose body is not what the API defines raises InvalidResponseError, nothing rawer."""
    endpoint = BY_NAME[name]
    answer(wire, endpoint, status, body, content_type=content_type)
    with pytest.raises(InvalidResponseError) as info:
        await endpoint.call(session)
    exc = info.value
    assert isinstance(exc, ApiError)
    assert exc.status == status
    assert exc.method == endpoint.method
    assert reason in str(exc)
    assert not isinstance(exc.__cause__, (KeyError, json.JSONDecodeError))
    assert_clean(*everything_about(exc))


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("ica-create", "<html/>"),
        ("ica-create", "[]"),
        ("console-details", '{"acls": 5}'),
        ("console-refresh", "{"),
    ],
)
async def test_invalid_response_names_the_full_url(
    wire: Any, session: aiohttp.ClientSession, name: str, body: str
) -> None:
    """An unreadable or ill-shaped success body names the full request URL (no query)."""
    endpoint = BY_NAME[name]
    answer(wire, endpoint, 200, body)
    with pytest.raises(InvalidResponseError) as info:
        await endpoint.call(session)
    assert info.value.url == endpoint.url


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("ica-create", "{}"),
        ("ica-create", '{"token": "opaque"}'),
        ("console-create", "{}"),
    ],
)
async def test_missing_or_bad_token_names_the_full_url(
    wire: Any, session: aiohttp.ClientSession, name: str, body: str
) -> None:
    """A success answer without a usable token names the full request URL, like every ApiError."""
    endpoint = BY_NAME[name]
    answer(wire, endpoint, 200, body)
    with pytest.raises(InvalidResponseError) as info:
        await endpoint.call(session)
    assert info.value.url == endpoint.url


async def test_non_json_success_echoing_a_secret_is_scrubbed(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """The excerpt of a non-JSON 200 that echoes the key and a JWT shows neither."""
    answer(
        wire,
        BY_NAME["ica-create"],
        200,
        f"key={API_KEY} token={FOREIGN_JWT}",
        content_type="text/plain",
    )
    with pytest.raises(InvalidResponseError) as info:
        await BY_NAME["ica-create"].call(session)
    assert info.value.excerpt == "key=*** token=***"
    assert_clean(*everything_about(info.value))


# --------------------------------------------------------------------------- transport


@pytest.mark.parametrize("endpoint", ENDPOINT_PARAMS)
@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        pytest.param(
            aiohttp.ClientConnectionError("Connection refused"),
            "other",
            "ClientConnectionError: no answer from the server",
            id="connection",
        ),
        pytest.param(
            aiohttp.ServerDisconnectedError(),
            "disconnected",
            "the server closed the connection before answering",
            id="disconnected",
        ),
        pytest.param(
            aiohttp.ClientPayloadError("truncated"),
            "disconnected",
            "the answer was cut short",
            id="payload",
        ),
    ],
)
async def test_connection_failure_is_transport_error(
    wire: Any,
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    error: Exception,
    kind: str,
    message: str,
) -> None:
    """A connection failure is TransportError (not a timeout), naming method, URL and cause;
    its cause is a fresh builtin error, never aiohttp's (which holds the request headers)."""
    wire.add(ANY_URL, endpoint.method, exception=error)
    with pytest.raises(TransportError) as info:
        await endpoint.call(session)
    exc = info.value
    assert type(exc) is TransportError
    assert isinstance(exc, IcaError)
    assert not isinstance(exc, (ApiError, TimeoutError))
    assert exc.kind == kind
    assert exc.__cause__ is not error
    assert not isinstance(exc.__cause__, aiohttp.ClientError)
    assert exc.__context__ is None
    assert str(exc) == f"{endpoint.method} {endpoint.url}: {message}"
    assert_clean(*everything_about(exc))


async def test_real_refused_port_is_transport_error(session: aiohttp.ClientSession) -> None:
    """Connecting to a closed port on 127.0.0.1 raises TransportError(kind="refused") naming
    the address, from a fresh ConnectionRefusedError (not aiohttp's exception)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = IcaTokenApi(session, f"http://127.0.0.1:{port}/ica/rest")
    with pytest.raises(TransportError) as info:
        await api.create_jwt_token(ApiKey(API_KEY))
    exc = info.value
    assert type(exc) is TransportError
    assert exc.kind == "refused"
    assert type(exc.__cause__) is ConnectionRefusedError
    assert str(exc) == (
        f"POST http://127.0.0.1:{port}/ica/rest/api/tokens: connection refused by 127.0.0.1:{port}"
    )
    assert_clean(*everything_about(exc))


@pytest.mark.parametrize("endpoint", ENDPOINT_PARAMS)
@pytest.mark.parametrize(
    "error",
    [
        pytest.param(TimeoutError(), id="asyncio"),  # asyncio.TimeoutError is TimeoutError
        pytest.param(aiohttp.ServerTimeoutError("read"), id="server-timeout"),
        pytest.param(aiohttp.ConnectionTimeoutError("connect"), id="connect-timeout"),
        pytest.param(aiohttp.SocketTimeoutError("socket"), id="socket-timeout"),
    ],
)
async def test_timeout_is_transport_timeout_error(
    wire: Any, session: aiohttp.ClientSession, endpoint: Endpoint, error: Exception
) -> None:
    """A timeout is TransportTimeoutError: also a TransportError, an IcaError and a TimeoutError,
    kind "timeout", chained to a fresh TimeoutError (not the one aiohttp raised)."""
    wire.add(ANY_URL, endpoint.method, exception=error)
    with pytest.raises(TransportTimeoutError) as info:
        await endpoint.call(session)
    exc = info.value
    assert isinstance(exc, TransportError)
    assert isinstance(exc, IcaError)
    assert isinstance(exc, TimeoutError)
    assert exc.kind == "timeout"
    assert type(exc.__cause__) is TimeoutError
    assert exc.__cause__ is not error
    assert str(exc) == f"{endpoint.method} {endpoint.url}: timed out after 30.0 s"


async def test_real_timeout_is_caught_as_builtin_timeout_error(
    hanging: str, session: aiohttp.ClientSession
) -> None:
    """A server that never answers trips the timeout; `except TimeoutError` catches it."""
    api = ConsoleTokenApi(session, hanging, timeout=0.2)
    started = time.monotonic()
    try:
        await api.create_token(ApiKey(API_KEY))
    except TimeoutError as exc:
        caught: BaseException = exc
    else:  # pragma: no cover
        pytest.fail("no timeout")
    assert isinstance(caught, TransportTimeoutError)
    assert time.monotonic() - started < 5
    assert "timed out after 0.2 s" in str(caught)


# --------------------------------------------------------------------------- parse helpers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        ("  45 ", 45.0),
        ("99999999999999999999", 1e9),
        (None, None),
        ("", None),
        ("soon", None),
        ("-1", None),
        ("2.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Delta seconds as float (capped), past dates as 0, anything unreadable as None."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_date_relative_to_now() -> None:
    """An HTTP-date counts from the given `now`."""
    now = 1_700_000_000.0
    value = email.utils.formatdate(now + 300, usegmt=True)
    assert parse_retry_after(value, now=now) == 300.0
    assert parse_retry_after(value, now=now + 1000) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", id="asctime"),
    ],
)
def test_parse_http_date_accepts_all_three_forms(value: str) -> None:
    """Every HTTP-date form of RFC 9110 parses to the same instant."""
    assert parse_http_date(value) == 784111777.0


@pytest.mark.parametrize(
    "value", [None, "", "garbage", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994"]
)
def test_parse_http_date_garbage(value: str | None) -> None:
    """An unreadable or zone-less date is None, never an exception."""
    assert parse_http_date(value) is None


def test_parse_http_date_with_offset() -> None:
    """A numeric zone offset is honoured."""
    assert parse_http_date("Sun, 06 Nov 1994 10:49:37 +0200") == 784111777.0


# --------------------------------------------------------------------------- echo redaction


ECHO_CASES = [
    pytest.param("ica-create", API_KEY, id="api-key"),
    pytest.param("ica-create-basic", PASSWORD, id="password"),
    pytest.param("ica-create-basic", BASIC_B64, id="basic-base64"),
    pytest.param("console-details", PS_TOKEN, id="pstoken"),
    pytest.param("ica-refresh", JWT_IN, id="jwt"),
    pytest.param("console-create", JWT_IN, id="jwt-beside-key"),
    pytest.param("console-revoke", PS_TOKEN, id="revoke-bearer"),
    pytest.param("ica-create", FOREIGN_JWT, id="foreign-jwt"),
]


@pytest.mark.parametrize(("name", "secret"), ECHO_CASES)
async def test_echo_in_html_is_scrubbed_from_excerpt(
    wire: Any, session: aiohttp.ClientSession, name: str, secret: str
) -> None:
    """A secret echoed in an HTML error page is replaced by *** in the excerpt and message."""
    endpoint = BY_NAME[name]
    answer(wire, endpoint, 401, f"<p>Rejected: {secret} (ref 42)</p>", content_type="text/html")
    with pytest.raises(UnauthorizedError) as info:
        await endpoint.call(session)
    assert info.value.excerpt == "<p>Rejected: *** (ref 42)</p>"
    assert_clean(*everything_about(info.value))


@pytest.mark.parametrize(("name", "secret"), ECHO_CASES)
async def test_echo_in_problem_is_scrubbed_from_title_and_detail(
    wire: Any, session: aiohttp.ClientSession, name: str, secret: str
) -> None:
    """A secret echoed in a Problem's title and detail is replaced by *** there and in str(exc)."""
    endpoint = BY_NAME[name]
    body = {"title": f"Bad credential {secret}", "detail": f"The value {secret} is wrong"}
    answer(wire, endpoint, 403, body, content_type="application/problem+json")
    with pytest.raises(ForbiddenError) as info:
        await endpoint.call(session)
    problem = info.value.problem
    assert isinstance(problem, Problem)
    assert problem.title == "Bad credential ***"
    assert problem.detail == "The value *** is wrong"
    assert_clean(*everything_about(info.value))


@pytest.mark.parametrize(("name", "secret"), ECHO_CASES)
async def test_echo_in_error_response_is_scrubbed_from_code_and_message(
    wire: Any, session: aiohttp.ClientSession, name: str, secret: str
) -> None:
    """A secret echoed in a v1 ErrorResponse's code and message is replaced by *** everywhere."""
    endpoint = BY_NAME[name]
    body = {"code": f"BAD:{secret}", "message": f"Bearer {secret} refused"}
    answer(wire, endpoint, 400, body)
    with pytest.raises(BadRequestError) as info:
        await endpoint.call(session)
    problem = info.value.problem
    assert isinstance(problem, ErrorResponse)
    assert problem.code == "BAD:***"
    assert problem.message == "Bearer *** refused"
    assert_clean(*everything_about(info.value))


@pytest.mark.parametrize(("name", "secret"), ECHO_CASES)
async def test_echo_in_other_json_is_scrubbed_from_excerpt(
    wire: Any, session: aiohttp.ClientSession, name: str, secret: str
) -> None:
    """A secret echoed in JSON that is no known model is scrubbed from the excerpt."""
    endpoint = BY_NAME[name]
    answer(wire, endpoint, 500, {"error": "boom", "request": {"credential": secret}})
    with pytest.raises(ServerError) as info:
        await endpoint.call(session)
    assert info.value.excerpt == '{"error": "boom", "request": {"credential": "***"}}'
    assert_clean(*everything_about(info.value))


async def test_echoed_authorization_header_is_scrubbed(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """An error page that echoes the whole `Authorization: Basic ...` header shows none of it."""
    page = f"<pre>Authorization: Basic {BASIC_B64}\nuser={USER} password={PASSWORD}</pre>"
    answer(wire, BY_NAME["ica-create-basic"], 401, page, content_type="text/html")
    with pytest.raises(UnauthorizedError) as info:
        await BY_NAME["ica-create-basic"].call(session)
    assert "Basic ***" in info.value.excerpt
    assert "password=***" in info.value.excerpt
    assert_clean(*everything_about(info.value))


@pytest.mark.parametrize(
    ("name", "body", "content_type"),
    [
        pytest.param(
            "ica-create",
            {"title": "Bad", "parameters": {"X-API-Key": API_KEY}},
            "application/problem+json",
            id="problem-parameters",
        ),
        pytest.param(
            "ica-create",
            {"title": "Bad", "instance": f"/ica/rest/api/tokens?api_key={API_KEY}"},
            "application/problem+json",
            id="problem-instance",
        ),
        pytest.param(
            "console-details",
            {"code": "Bad", "details": [{"token": PS_TOKEN}]},
            "application/json",
            id="error-response-details",
        ),
    ],
)
async def test_echo_in_any_problem_field_is_scrubbed(
    wire: Any, session: aiohttp.ClientSession, name: str, body: Any, content_type: str
) -> None:
    """No attribute of the decoded error body holds an echoed secret."""
    endpoint = BY_NAME[name]
    answer(wire, endpoint, 400, body, content_type=content_type)
    with pytest.raises(BadRequestError) as info:
        await endpoint.call(session)
    assert_clean(repr(info.value.problem))


async def test_json_escaped_password_echo_is_scrubbed(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """A password with a quote and a backslash, echoed JSON-escaped, is not in the excerpt."""
    password = 'pa"ss\\word-Secret'
    escaped = json.dumps(password)[1:-1]
    wire.post(ANY_URL, status=500, body=json.dumps({"echo": password}))
    with pytest.raises(ServerError) as info:
        await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, password))
    assert escaped not in info.value.excerpt
    assert password not in info.value.excerpt


# --------------------------------------------------------------------------- encoded echoes

ODD_PASSWORD = 'p@ss w/rd&<x>"+'
ENCODINGS = [
    pytest.param(lambda s: urllib.parse.quote(s, safe=""), id="url-encoded"),
    pytest.param(lambda s: urllib.parse.quote(s, safe="").lower(), id="url-encoded-lower-hex"),
    pytest.param(lambda s: urllib.parse.quote_plus(s, safe=""), id="form-encoded"),
    pytest.param(html.escape, id="html-escaped"),
    pytest.param(lambda s: html.escape(s, quote=False), id="html-escaped-no-quotes"),
    pytest.param(lambda s: json.dumps(s)[1:-1], id="json-escaped"),
]


def test_odd_password_changes_under_every_encoding() -> None:
    """The test password is one that each encoding really changes (else the tests prove
    nothing)."""
    for param in ENCODINGS:
        (encode,) = param.values
        assert encode(ODD_PASSWORD) != ODD_PASSWORD, param.id


@pytest.mark.parametrize("encode", ENCODINGS)
async def test_encoded_password_echo_is_scrubbed_from_excerpt(
    wire: Any, session: aiohttp.ClientSession, encode: Callable[[str], str]
) -> None:
    """An error page echoing the request's password URL-, form-, HTML- or JSON-encoded shows
    neither that form nor the password itself, in the excerpt or anywhere else."""
    echoed = encode(ODD_PASSWORD)
    page = f"<p>login failed for password={echoed} (ref 42)</p>"
    wire.post(ANY_URL, status=401, body=page, content_type="text/html")
    with pytest.raises(UnauthorizedError) as info:
        await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, ODD_PASSWORD))
    assert info.value.excerpt == "<p>login failed for password=*** (ref 42)</p>"
    for text in everything_about(info.value):
        assert echoed not in text
        assert ODD_PASSWORD not in text


@pytest.mark.parametrize("encode", ENCODINGS)
async def test_encoded_password_echo_is_scrubbed_from_problem_fields(
    wire: Any, session: aiohttp.ClientSession, encode: Callable[[str], str]
) -> None:
    """A Problem whose decoded title, detail and instance echo the password in any encoding
    holds none of it."""
    echoed = encode(ODD_PASSWORD)
    body = {
        "title": f"Bad password {echoed}",
        "detail": f"password={echoed}",
        "instance": f"/ica/rest/api/tokens?password={echoed}",
    }
    answer(wire, BY_NAME["ica-create-basic"], 401, body, content_type="application/problem+json")
    with pytest.raises(UnauthorizedError) as info:
        await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, ODD_PASSWORD))
    problem = info.value.problem
    assert isinstance(problem, Problem)
    assert problem.title == "Bad password ***"
    assert problem.detail == "password=***"
    for text in [repr(problem), *everything_about(info.value)]:
        assert echoed not in text
        assert ODD_PASSWORD not in text


@pytest.mark.parametrize("encode", ENCODINGS)
async def test_encoded_password_echo_in_non_json_success_is_scrubbed(
    wire: Any, session: aiohttp.ClientSession, encode: Callable[[str], str]
) -> None:
    """A 200 that is not JSON and echoes the password encoded: the excerpt holds none of it."""
    wire.post(ANY_URL, status=200, body=f"welcome {encode(ODD_PASSWORD)}")
    with pytest.raises(InvalidResponseError) as info:
        await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, ODD_PASSWORD))
    assert info.value.excerpt == "welcome ***"
