"""The aiohttp boundary over real loopback HTTP: the caller's session settings cannot break or
leak a token request, every failure is named, and no chained exception holds a secret."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import re
import ssl
import types
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.abc
import multidict
import pytest
import yarl
from aiohttp import web

from aioica_auth import (
    ApiError,
    ApiKey,
    BasicAuth,
    ConsoleTokenApi,
    IcaTokenApi,
    InvalidResponseError,
    PsToken,
    RateLimitError,
    ServerError,
    TransportError,
    TransportTimeoutError,
    UnauthorizedError,
)

from ..support import FailingResolver, free_port, server_tls

API_KEY = "ak-boundary-5a5a5a5a5a5aSECRET"
USER = "dora@example.org"
PASSWORD = "pw-boundary-Tr0ub4dor!"
BASIC_B64 = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PS_TOKEN = "ps-boundary-session-SECRET-99"
SESSION_BEARER = "session-default-bearer-SECRET-1234"
SESSION_KEY = "session-default-api-key-SECRET-5678"
SECRETS = (API_KEY, PASSWORD, BASIC_B64, PS_TOKEN, SESSION_BEARER, SESSION_KEY)
ANY_URL = re.compile(r".*")

CREDENTIALS = [
    pytest.param(ApiKey(API_KEY), {"X-API-Key": API_KEY}, id="api-key"),
    pytest.param(BasicAuth(USER, PASSWORD), {"Authorization": f"Basic {BASIC_B64}"}, id="basic"),
    pytest.param(PsToken(PS_TOKEN), {"Authorization": f"Bearer {PS_TOKEN}"}, id="pstoken"),
]
CREDENTIAL_ONLY = [pytest.param(p.values[0], id=p.id) for p in CREDENTIALS]


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """After each test, the DEBUG log holds none of the secrets used here."""
    yield
    for secret in SECRETS:
        assert secret not in caplog.text


# --------------------------------------------------------------------------- servers


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start an aiohttp.web catch-all handler on 127.0.0.1 (https with `ssl_context`);
    yields a starter that returns the base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        runners.append(runner)
        scheme = "https" if ssl_context else "http"
        return f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[bytes], Awaitable[str]]]:
    """Start a raw TCP server on 127.0.0.1 that reads the request head, writes `reply`
    (perhaps nothing) and closes the connection; yields a starter returning the base URL."""
    servers: list[asyncio.Server] = []

    async def start(reply: bytes) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


# --------------------------------------------------------------------------- what was sent


@pytest.fixture
async def recorder(serve: Callable[..., Awaitable[str]]) -> tuple[str, list[Mapping[str, str]]]:
    """A server that records every request's headers and answers a console-style 201."""
    seen: list[Mapping[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.copy())
        return web.json_response({"access_token": "opaque-answer"}, status=201)

    return await serve(handler), seen


def credential_headers(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of header `name` a server received."""
    getall = getattr(headers, "getall", None)
    assert getall is not None
    values: list[str] = getall(name, [])
    return values


@pytest.mark.parametrize(("credential", "ours"), CREDENTIALS)
@pytest.mark.parametrize(
    "defaults",
    [
        pytest.param({"Authorization": f"Bearer {SESSION_BEARER}"}, id="session-authorization"),
        pytest.param({"X-API-Key": SESSION_KEY}, id="session-api-key"),
        pytest.param(
            {"authorization": f"Bearer {SESSION_BEARER}", "x-api-key": SESSION_KEY},
            id="session-both-lowercase",
        ),
    ],
)
async def test_session_default_credentials_never_reach_the_token_endpoint(
    recorder: tuple[str, list[Mapping[str, str]]],
    credential: Any,
    ours: dict[str, str],
    defaults: dict[str, str],
) -> None:
    """A session's default Authorization / X-API-Key never go out: only the credential
    header the request sets itself, exactly once."""
    url, seen = recorder
    async with aiohttp.ClientSession(headers=defaults) as session:
        await ConsoleTokenApi(session, url).create_token(credential)
    (headers,) = seen
    for name in ("Authorization", "X-API-Key"):
        assert credential_headers(headers, name) == ([ours[name]] if name in ours else [])


async def test_api_key_with_authorization_beside_keeps_both_of_ours(
    recorder: tuple[str, list[Mapping[str, str]]],
) -> None:
    """With `authorization=` beside an ApiKey, both our headers go out, the session's do not."""
    url, seen = recorder
    defaults = {"Authorization": f"Bearer {SESSION_BEARER}", "X-API-Key": SESSION_KEY}
    async with aiohttp.ClientSession(headers=defaults) as session:
        api = ConsoleTokenApi(session, url)
        await api.create_token(ApiKey(API_KEY), authorization=PsToken(PS_TOKEN))
    (headers,) = seen
    assert credential_headers(headers, "X-API-Key") == [API_KEY]
    assert credential_headers(headers, "Authorization") == [f"Bearer {PS_TOKEN}"]


async def test_other_session_defaults_still_go_out(
    recorder: tuple[str, list[Mapping[str, str]]],
) -> None:
    """Only credential headers are dropped: a session's other defaults (User-Agent) still go."""
    url, seen = recorder
    async with aiohttp.ClientSession(headers={"User-Agent": "my-pipeline/1.0"}) as session:
        await ConsoleTokenApi(session, url).create_token(ApiKey(API_KEY))
    assert seen[0]["User-Agent"] == "my-pipeline/1.0"


async def test_session_middlewares_do_not_run_for_token_requests(
    recorder: tuple[str, list[Mapping[str, str]]],
) -> None:
    """A session's own middlewares (say a token middleware) are not run for token requests."""
    url, seen = recorder
    calls: list[str] = []

    async def middleware(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        calls.append(str(req.url))
        req.headers["Authorization"] = f"Bearer {SESSION_BEARER}"
        return await handler(req)

    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        await ConsoleTokenApi(session, url).create_token(ApiKey(API_KEY))
    assert calls == []
    assert "Authorization" not in seen[0]


# --------------------------------------------------------------------------- raise_for_status


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    """A callable `raise_for_status`, as a session may have."""
    response.raise_for_status()


@pytest.mark.parametrize(
    "raise_for_status",
    [pytest.param(True, id="true"), pytest.param(_raise_for_status, id="callable")],
)
async def test_raise_for_status_session_still_gives_unauthorized_error(
    serve: Callable[..., Awaitable[str]], raise_for_status: Any
) -> None:
    """On a session with raise_for_status, a 401 is UnauthorizedError with its problem
    decoded, not a TransportError "no answer"."""

    async def handler(request: web.Request) -> web.StreamResponse:
        body = {"title": "Unauthorized", "detail": "bad key"}
        return web.json_response(body, status=401, content_type="application/problem+json")

    url = await serve(handler)
    async with aiohttp.ClientSession(raise_for_status=raise_for_status) as session:
        with pytest.raises(UnauthorizedError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.status == 401
    assert "bad key" in str(info.value)
    assert_no_secret_reachable(info.value)


async def test_raise_for_status_session_keeps_retry_after_of_429(
    serve: Callable[..., Awaitable[str]],
) -> None:
    """On a session with raise_for_status=True, a 429 is RateLimitError with its retry_after."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"title": "Slow down"}, status=429, headers={"Retry-After": "7"})

    url = await serve(handler)
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        with pytest.raises(RateLimitError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.retry_after == 7.0


# --------------------------------------------------------------------------- session= checks


@pytest.mark.parametrize("cls", [IcaTokenApi, ConsoleTokenApi])
async def test_session_with_auth_is_refused(cls: Any) -> None:
    """A session built with auth= is a ValueError naming `session` and saying why (aiohttp
    would refuse each request that sets its own Authorization), never echoing the password."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp 3.14 deprecates auth=
        session = aiohttp.ClientSession(auth=aiohttp.BasicAuth(USER, PASSWORD))
    async with session:
        with pytest.raises(ValueError, match=r"^session was built with auth=") as info:
            cls(session, "http://127.0.0.1:9")
    assert "Authorization" in str(info.value)
    assert PASSWORD not in repr(info.value)


@pytest.mark.parametrize("credential", CREDENTIAL_ONLY)
async def test_closed_session_is_transport_error_kind_closed(credential: Any) -> None:
    """A request on a closed session is TransportError(kind="closed") saying so, not aiohttp's
    RuntimeError."""
    session = aiohttp.ClientSession()
    api = IcaTokenApi(session, "http://127.0.0.1:9/ica/rest")
    await session.close()
    with pytest.raises(TransportError) as info:
        await api.create_jwt_token(credential)
    assert info.value.kind == "closed"
    assert str(info.value) == (
        "POST http://127.0.0.1:9/ica/rest/api/tokens: the aiohttp session is closed"
    )
    assert_no_secret_reachable(info.value)


# --------------------------------------------------------------------------- named failures


async def test_refused_names_the_address() -> None:
    """A closed port: kind "refused", "connection refused by 127.0.0.1:PORT"."""
    port = free_port()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, f"http://127.0.0.1:{port}").create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == "refused"
    assert str(info.value) == (
        f"POST http://127.0.0.1:{port}/api/tokens: connection refused by 127.0.0.1:{port}"
    )
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert_no_secret_reachable(info.value)


async def test_dns_failure_names_the_host() -> None:
    """A failed lookup: kind "dns", "cannot resolve host example.invalid"."""
    connector = aiohttp.TCPConnector(resolver=FailingResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, "https://example.invalid/ica/rest").create_jwt_token(
                ApiKey(API_KEY)
            )
    assert info.value.kind == "dns"
    assert str(info.value) == (
        "POST https://example.invalid/ica/rest/api/tokens: cannot resolve host example.invalid"
    )
    assert type(info.value.__cause__) is OSError
    assert_no_secret_reachable(info.value)


async def test_untrusted_certificate_names_tls_verify(
    serve: Callable[..., Awaitable[str]], self_signed: tuple[Path, Path]
) -> None:
    """A self-signed certificate: kind "tls", "TLS certificate verify failed for HOST:PORT",
    with the verifier's reason, chained to a fresh SSLCertVerificationError."""

    async def handler(request: web.Request) -> web.StreamResponse:  # pragma: no cover
        return web.json_response({"token": "never"})

    url = await serve(handler, ssl_context=server_tls(self_signed))
    port = url.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == "tls"
    assert str(info.value).startswith(
        f"POST {url}/api/tokens: TLS certificate verify failed for 127.0.0.1:{port} ("
    )
    assert "self-signed" in str(info.value)
    assert type(info.value.__cause__) is ssl.SSLCertVerificationError
    assert_no_secret_reachable(info.value)


async def test_tls_handshake_failure_is_named(serve: Callable[..., Awaitable[str]]) -> None:
    """https to a plain-http server: kind "tls", "TLS handshake with HOST:PORT failed"."""

    async def handler(request: web.Request) -> web.StreamResponse:  # pragma: no cover
        return web.json_response({"token": "never"})

    url = (await serve(handler)).replace("http://", "https://")
    port = url.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == "tls"
    assert str(info.value).startswith(
        f"POST {url}/api/tokens: TLS handshake with 127.0.0.1:{port} failed"
    )
    assert isinstance(info.value.__cause__, ssl.SSLError)
    assert_no_secret_reachable(info.value)


async def test_real_timeout_names_the_bound(hanging: str) -> None:
    """A server that never answers: TransportTimeoutError, kind "timeout", "timed out after
    0.2 s"."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportTimeoutError) as info:
            await IcaTokenApi(session, hanging, timeout=0.2).create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == "timeout"
    assert str(info.value) == f"POST {hanging}/api/tokens: timed out after 0.2 s"
    assert type(info.value.__cause__) is TimeoutError
    assert_no_secret_reachable(info.value)


async def test_read_timeout_names_the_read_bound(hanging: str) -> None:
    """With a sock_read bound in the ClientTimeout, the message names that bound, not the
    total."""
    timeout = aiohttp.ClientTimeout(total=30, sock_read=0.2)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportTimeoutError) as info:
            await IcaTokenApi(session, hanging, timeout=timeout).create_jwt_token(ApiKey(API_KEY))
    assert str(info.value).endswith(": timed out after 0.2 s")


async def test_server_closing_before_answering_is_named(
    raw_server: Callable[[bytes], Awaitable[str]],
) -> None:
    """A server that closes the socket without a word: kind "disconnected", "the server
    closed the connection before answering"."""
    url = await raw_server(b"")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == "disconnected"
    assert str(info.value) == (
        f"POST {url}/api/tokens: the server closed the connection before answering"
    )
    assert_no_secret_reachable(info.value)


async def test_answer_cut_short_is_named(raw_server: Callable[[bytes], Awaitable[str]]) -> None:
    """A body shorter than its Content-Length: kind "disconnected", "the answer was cut
    short"."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    url = await raw_server(head + b'{"token": "eyJ')
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == "disconnected"
    assert str(info.value) == f"POST {url}/api/tokens: the answer was cut short"
    assert_no_secret_reachable(info.value)


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        pytest.param(
            aiohttp.ClientOSError(errno.ECONNRESET, "Connection reset by peer"),
            "disconnected",
            "the connection was reset",
            id="reset",
        ),
        pytest.param(
            aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
            "disconnected",
            "the connection was reset",
            id="reset-on-write",
        ),
        pytest.param(
            aiohttp.ClientOSError(errno.EHOSTUNREACH, "No route to host"),
            "other",
            "the connection failed: No route to host",
            id="os-error",
        ),
    ],
)
async def test_os_level_failures_are_named(
    wire: Any, session: aiohttp.ClientSession, error: Exception, kind: str, message: str
) -> None:
    """Resets mid-request are "disconnected"; other OS errors "other", with their strerror."""
    wire.post(ANY_URL, exception=error)
    with pytest.raises(TransportError) as info:
        await IcaTokenApi(session).create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == kind
    assert str(info.value) == f"POST https://ica.illumina.com/ica/rest/api/tokens: {message}"
    assert not isinstance(info.value.__cause__, aiohttp.ClientError)


def test_transport_error_kind_defaults() -> None:
    """Built directly, a TransportError is kind "other" and a TransportTimeoutError "timeout"."""
    assert TransportError("x").kind == "other"
    assert TransportTimeoutError("x").kind == "timeout"
    assert TransportError("x", kind="dns").kind == "dns"


# --------------------------------------------------------------------------- nothing reachable


_OPAQUE = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.TracebackType,
    types.FrameType,
    asyncio.AbstractEventLoop,
    aiohttp.ClientSession,
)
_ATTRIBUTES = ("request_info", "headers", "real_url", "os_error", "certificate_error", "history")


def reachable(root: BaseException) -> Iterator[object]:
    """Every object reachable from an error: its cause and context chains, args, instance
    attributes (vars and slots) and aiohttp's properties, recursively (tracebacks aside)."""
    seen: set[int] = set()
    stack: list[object] = [root]
    while stack and len(seen) < 20_000:
        obj = stack.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, (str, bytes, int, float, *_OPAQUE)):
            continue
        stack.extend(_children(obj))


def _children(obj: object) -> list[object]:
    """The objects `reachable` looks into next."""
    out: list[object] = []
    if isinstance(obj, BaseException):
        out += [obj.__cause__, obj.__context__, *obj.args]
    if isinstance(obj, Mapping):
        out += [*obj.keys(), *obj.values()]
    elif isinstance(obj, list | tuple | set | frozenset):
        out += list(obj)
    with contextlib.suppress(TypeError):
        out += list(vars(obj).values())
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            out.append(getattr(obj, name, None))
    for name in _ATTRIBUTES:
        with contextlib.suppress(Exception):
            out.append(getattr(obj, name, None))
    return out


def assert_no_secret_reachable(exc: BaseException) -> None:
    """No secret in the repr or str of anything reachable from `exc`, and nothing aiohttp
    raised is reachable at all."""
    for obj in reachable(exc):
        texts = [repr(obj)]
        if isinstance(obj, BaseException):
            texts.append(str(obj))
            assert "aiohttp" not in type(obj).__module__, f"aiohttp's {obj!r} is chained"
        for text in texts:
            for secret in SECRETS:
                assert secret not in text, f"secret reachable from the error in {text[:300]!r}"


def test_the_walk_finds_a_secret_in_aiohttp_request_info() -> None:
    """The walk itself: a chained aiohttp ClientResponseError's request headers are found."""
    url = yarl.URL("https://ica.illumina.com/ica/rest/api/tokens")
    headers = multidict.CIMultiDictProxy(multidict.CIMultiDict({"X-API-Key": API_KEY}))
    info = aiohttp.RequestInfo(url, "POST", headers, url)
    inner = aiohttp.ClientResponseError(info, (), status=401)
    outer = TransportError("POST x: no answer")
    outer.__cause__ = inner
    with pytest.raises(AssertionError, match=r"aiohttp|secret"):
        assert_no_secret_reachable(outer)
    texts = "".join(repr(o) for o in reachable(outer))
    assert API_KEY in texts


@pytest.mark.parametrize("credential", CREDENTIAL_ONLY)
async def test_error_status_on_raise_for_status_session_chains_nothing_secret(
    serve: Callable[..., Awaitable[str]], credential: Any
) -> None:
    """An error status on a raise_for_status session with a default Authorization: an
    ApiError, and nothing reachable from it holds a credential."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="<p>no</p>", content_type="text/html")

    url = await serve(handler)
    defaults = {"Authorization": f"Bearer {SESSION_BEARER}", "X-API-Key": SESSION_KEY}
    async with aiohttp.ClientSession(raise_for_status=True, headers=defaults) as session:
        with pytest.raises(ApiError) as info:
            await IcaTokenApi(session, url).create_jwt_token(credential)
    assert info.value.status == 403
    assert_no_secret_reachable(info.value)


@pytest.mark.parametrize("credential", CREDENTIAL_ONLY)
async def test_refused_timeout_and_disconnect_chain_nothing_secret(
    hanging: str, raw_server: Callable[[bytes], Awaitable[str]], credential: Any
) -> None:
    """Refused, timed out, disconnected: nothing reachable from any of the errors (causes,
    contexts, args, attributes) holds a credential, the session's defaults included."""
    urls = [f"http://127.0.0.1:{free_port()}", hanging, await raw_server(b"")]
    defaults = {"Authorization": f"Bearer {SESSION_BEARER}"}
    async with aiohttp.ClientSession(headers=defaults) as session:
        for url in urls:
            with pytest.raises(TransportError) as info:
                await IcaTokenApi(session, url, timeout=0.3).create_jwt_token(credential)
            assert_no_secret_reachable(info.value)


async def test_not_json_success_chains_no_decode_error(
    serve: Callable[..., Awaitable[str]],
) -> None:
    """A 200 that is not JSON but echoes the key: the error's context is not the
    JSONDecodeError (whose `doc` is the whole body, secret and all)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=f"<p>welcome {request.headers['X-API-Key']}</p>")

    url = await serve(handler)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ApiError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.__context__ is None
    assert_no_secret_reachable(info.value)


async def test_ill_shaped_success_chains_no_cattrs_error(
    serve: Callable[..., Awaitable[str]],
) -> None:
    """A 200 whose JSON does not fit the model: only a sanitised cause (a type name) is
    chained, not cattrs' errors (which can quote the values)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        echo = request.headers["X-API-Key"]
        return web.json_response({"uid": "u", "currentWorkgroup": echo, "acls": {echo: 1}})

    url = await serve(handler)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ApiError) as info:
            await ConsoleTokenApi(session, url).get_token_details(ApiKey(API_KEY))
    assert info.value.__context__ is None
    assert type(info.value.__cause__) is ValueError
    assert_no_secret_reachable(info.value)


async def test_dns_tls_and_closed_chain_nothing_secret(
    serve: Callable[..., Awaitable[str]], self_signed: tuple[Path, Path]
) -> None:
    """DNS, TLS and closed-session failures: nothing reachable holds the credential."""

    async def handler(request: web.Request) -> web.StreamResponse:  # pragma: no cover
        return web.json_response({"token": "never"})

    url = await serve(handler, ssl_context=server_tls(self_signed))
    connector = aiohttp.TCPConnector(resolver=FailingResolver())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, "https://example.invalid").create_jwt_token(
                BasicAuth(USER, PASSWORD)
            )
        assert_no_secret_reachable(info.value)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TransportError) as info:
            await IcaTokenApi(session, url).create_jwt_token(BasicAuth(USER, PASSWORD))
        assert_no_secret_reachable(info.value)
    with pytest.raises(TransportError) as info:
        await IcaTokenApi(session, url).create_jwt_token(BasicAuth(USER, PASSWORD))
    assert_no_secret_reachable(info.value)


def test_walk_helpers_cover_json_bodies() -> None:
    """The walk looks inside mappings and sequences (a JSON-ish structure with a secret)."""
    exc = ValueError({"nested": [("deep", json.dumps({"k": API_KEY}))]})
    assert any(API_KEY in repr(o) for o in reachable(exc))


# --------------------------------------------------------------------------- the read cap

CAP = 1 << 20


def body_server(status: int, body: bytes, content_type: str = "application/json") -> Handler:
    """A handler answering every request with `status` and `body`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type=content_type)

    return handler


@pytest.mark.parametrize("status", [200, 201])
async def test_success_answer_over_the_cap_is_too_large(
    serve: Callable[..., Awaitable[str]], status: int
) -> None:
    """A success body over the 1 MiB read cap is InvalidResponseError saying it is too large,
    not that it is not JSON."""
    body = json.dumps({"token": "x" * CAP}).encode()
    url = await serve(body_server(status, body))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(InvalidResponseError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.status == status
    assert "larger than the 1 MiB cap (too large" in info.value.reason
    assert "not JSON" not in str(info.value)


async def test_error_answer_over_the_cap_is_too_large(
    serve: Callable[..., Awaitable[str]],
) -> None:
    """An error body over the cap keeps its status class, says it is too large, and its
    excerpt is short and scrubbed."""
    body = json.dumps({"title": "Bad", "detail": f"{API_KEY} " + "y" * CAP}).encode()
    url = await serve(body_server(502, body, "application/problem+json"))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerError) as info:
            await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert info.value.status == 502
    assert "too large" in info.value.reason
    assert "too large" in str(info.value)
    assert info.value.problem is None
    assert len(info.value.excerpt) <= 201
    assert_no_secret_reachable(info.value)


async def test_answer_of_exactly_the_cap_is_read(serve: Callable[..., Awaitable[str]]) -> None:
    """A body of exactly 1 MiB is still read whole and decoded (the cap is inclusive)."""
    token = (
        base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        + "."
        + base64.urlsafe_b64encode(b'{"sub":"cap","exp":2000000000}').rstrip(b"=").decode()
        + ".c2ln"
    )
    head = json.dumps({"token": token, "pad": ""})
    body = json.dumps({"token": token, "pad": "p" * (CAP - len(head))}).encode()
    assert len(body) == CAP
    url = await serve(body_server(200, body))
    async with aiohttp.ClientSession() as session:
        result = await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert result.value == token


# --------------------------------------------------------------------------- rarer failures


def connection_key(host: str = "ica.illumina.com", port: int = 443) -> Any:
    """aiohttp's connection key, carrying proxy credentials as a real one can."""
    from aiohttp.client_reqrep import ConnectionKey

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp 3.14 deprecates BasicAuth
        proxy_auth = aiohttp.BasicAuth("proxy", PASSWORD)
    return ConnectionKey(host, port, True, True, None, proxy_auth, None, None)


def proxy_request_info() -> aiohttp.RequestInfo:
    """Request info as aiohttp attaches it to a ClientResponseError: our headers inside."""
    url = yarl.URL("https://ica.illumina.com/ica/rest/api/tokens")
    headers = multidict.CIMultiDictProxy(multidict.CIMultiDict({"X-API-Key": API_KEY}))
    return aiohttp.RequestInfo(url, "POST", headers, url)


@pytest.mark.parametrize(
    ("make_error", "kind", "message"),
    [
        pytest.param(
            lambda: aiohttp.ClientProxyConnectionError(
                connection_key("proxy.example.org", 3128),
                ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
            ),
            "refused",
            "connection refused by the proxy proxy.example.org:3128",
            id="proxy-refused",
        ),
        pytest.param(
            lambda: aiohttp.ClientConnectorError(
                connection_key("::1", 8443), OSError(errno.EHOSTUNREACH, "No route to host")
            ),
            "other",
            "cannot connect to [::1]:8443: No route to host",
            id="unreachable",
        ),
        pytest.param(
            lambda: aiohttp.ClientConnectorError(connection_key(), OSError()),
            "other",
            "cannot connect to ica.illumina.com:443",
            id="connector-without-strerror",
        ),
        pytest.param(
            lambda: aiohttp.ServerFingerprintMismatch(
                b"a" * 32, b"b" * 32, "ica.illumina.com", 443
            ),
            "tls",
            "the TLS certificate of ica.illumina.com:443 does not match the pinned fingerprint",
            id="fingerprint",
        ),
        pytest.param(
            lambda: aiohttp.ClientHttpProxyError(proxy_request_info(), (), status=407),
            "other",
            "the proxy answered HTTP 407",
            id="proxy-http-407",
        ),
        pytest.param(
            lambda: aiohttp.ClientOSError(),
            "other",
            "the connection failed: ClientOSError",
            id="os-error-without-strerror",
        ),
        pytest.param(
            lambda: aiohttp.ClientResponseError(proxy_request_info(), (), status=500),
            "other",
            "ClientResponseError: no answer from the server",
            id="anything-else",
        ),
    ],
)
async def test_rarer_failures_are_named_and_chain_nothing_secret(
    wire: Any,
    session: aiohttp.ClientSession,
    make_error: Callable[[], Exception],
    kind: str,
    message: str,
) -> None:
    """Proxy, routing, pinning and other failures are named; whatever aiohttp's exception
    carried (proxy credentials, our request headers) is not reachable from ours."""
    wire.post(ANY_URL, exception=make_error())
    with pytest.raises(TransportError) as info:
        await IcaTokenApi(session).create_jwt_token(ApiKey(API_KEY))
    assert info.value.kind == kind
    assert str(info.value) == f"POST https://ica.illumina.com/ica/rest/api/tokens: {message}"
    assert_no_secret_reachable(info.value)


async def test_runtime_error_on_an_open_session_is_not_called_closed(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """A RuntimeError from an open session is not ours to rename: it propagates as it is."""
    wire.post(ANY_URL, exception=RuntimeError("something else"))
    with pytest.raises(RuntimeError, match=r"^something else$"):
        await IcaTokenApi(session).create_jwt_token(ApiKey(API_KEY))
