"""Exact wire checks of the raw endpoint calls: method, URL, query, headers, body, options."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web

from aioica_auth import (
    ApiKey,
    BasicAuth,
    ConsoleTokenApi,
    Domain,
    IcaTokenApi,
    Jwt,
    PsToken,
    Token,
    TokenDetailResponse,
    TokenResponse,
    Workgroup,
)
from aioica_auth._checks import MAX_TIMEOUT
from aioica_auth._wire.core import normalise_timeout
from aioica_auth._wire.urls import check_base_url

from ..support import find_secret
from ..support import unsigned_jwt as make_jwt

ICA = "https://ica.illumina.com/ica/rest"
CONSOLE = "https://aps2.platform.illumina.com"
ANY_URL = re.compile(r".*")
V2_ACCEPT = "application/vnd.illumina.v3+json, application/problem+json"
V1_ACCEPT = "application/json"

API_KEY = "ak-wire-0123456789abcdefSECRET"
USER = "alice@example.org"
PASSWORD = "pw-wire-S3cret!"
PS_TOKEN = "ps-wire-token-SECRET-4242"
EXP = 2_000_000_000
IAT = EXP - 3600


JWT_IN = make_jwt({"sub": "wire-in", "exp": EXP, "iat": IAT})
JWT_OUT = make_jwt({"sub": "wire-out", "exp": EXP + 60, "iat": IAT + 60, "nbf": IAT + 60})
SECRETS = (API_KEY, PASSWORD, PS_TOKEN, JWT_IN, JWT_OUT)
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """After each test, the DEBUG log holds none of the secrets used here."""
    yield
    assert find_secret(caplog.text, (*SECRETS, BASIC.split()[1])) is None


def only_call(wire: Any) -> tuple[str, yarl.URL, dict[str, Any]]:
    """The single request the mock saw."""
    calls = wire.calls()
    assert len(calls) == 1, calls
    method, url, kwargs = calls[0]
    return method, yarl.URL(url), kwargs


def assert_options(kwargs: dict[str, Any], total: float = 30.0) -> None:
    """The per-request options every token call must set."""
    assert kwargs["allow_redirects"] is False
    assert kwargs["raise_for_status"] is False
    # Only our own credential guard: never the session's (a token middleware would recurse).
    (guard,) = kwargs["middlewares"]
    assert guard.__name__ == "only_ours"
    assert kwargs["timeout"] == aiohttp.ClientTimeout(total=total)


def base(url: yarl.URL) -> str:
    """The URL without its query."""
    return str(url.with_query(None))


# --------------------------------------------------------------------------- ICA v2 create


CREDENTIAL_HEADERS = [
    pytest.param(ApiKey(API_KEY), {"X-API-Key": API_KEY}, id="api-key"),
    pytest.param(BasicAuth(USER, PASSWORD), {"Authorization": BASIC}, id="basic"),
    pytest.param(PsToken(PS_TOKEN), {"Authorization": "Bearer " + PS_TOKEN}, id="pstoken"),
]


@pytest.mark.parametrize(("credential", "auth"), CREDENTIAL_HEADERS)
@pytest.mark.parametrize("tenant", [None, "acme-lab"])
async def test_ica_create_sends_exact_request(
    wire: Any,
    session: aiohttp.ClientSession,
    credential: Any,
    auth: dict[str, str],
    tenant: str | None,
) -> None:
    """POST /api/tokens carries exactly Accept + the credential header, empty body, tenant query."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT})
    token = await IcaTokenApi(session).create_jwt_token(credential, tenant=tenant)

    method, url, kwargs = only_call(wire)
    assert method == "POST"
    assert base(url) == f"{ICA}/api/tokens"
    if tenant is None:
        assert url.query_string == ""
        assert kwargs["params"] is None
    else:
        assert list(url.query.items()) == [("tenant", tenant)]
        assert kwargs["params"] == [("tenant", tenant)]
    assert kwargs["headers"] == {"Accept": V2_ACCEPT, **auth}
    assert kwargs["data"] is None  # no body at all (Content-Length: 0, no Content-Type)
    assert_options(kwargs)
    assert token.value == JWT_OUT
    assert token.claims["sub"] == "wire-out"


async def test_ica_basic_auth_header_is_base64_of_user_colon_password(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """Basic auth is `Basic base64(user:password)`, UTF-8 encoded, decodable back to the pair."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT})
    await IcaTokenApi(session).create_jwt_token(BasicAuth("jörg@example.org", "pä:ss"))
    _, _, kwargs = only_call(wire)
    scheme, encoded = kwargs["headers"]["Authorization"].split(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode("utf-8") == "jörg@example.org:pä:ss"


async def test_ica_tenant_with_reserved_characters_round_trips(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """A tenant with space, plus and ampersand arrives as exactly one, unchanged `tenant` value."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT})
    await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, PASSWORD), tenant="a b+c&d=e")
    _, url, _ = only_call(wire)
    assert url.query.getall("tenant") == ["a b+c&d=e"]
    assert len(url.query) == 1


@pytest.mark.parametrize(
    "jwt_arg",
    [
        pytest.param(JWT_IN, id="str"),
        pytest.param(Token.from_jwt(JWT_IN), id="Token"),
        pytest.param(Jwt(JWT_IN), id="Jwt"),
    ],
)
async def test_ica_refresh_sends_exact_request(
    wire: Any, session: aiohttp.ClientSession, jwt_arg: Any
) -> None:
    """POST /api/tokens:refresh (literal colon) with `Bearer <jwt>`, no query, empty body."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT})
    token = await IcaTokenApi(session).refresh_jwt_token(jwt_arg)

    method, url, kwargs = only_call(wire)
    assert method == "POST"
    assert str(url) == f"{ICA}/api/tokens:refresh"
    assert url.raw_path == "/ica/rest/api/tokens:refresh"
    assert kwargs["params"] is None
    assert kwargs["headers"] == {"Accept": V2_ACCEPT, "Authorization": "Bearer " + JWT_IN}
    assert kwargs["data"] is None  # no body at all (Content-Length: 0, no Content-Type)
    assert_options(kwargs)
    assert token == Token.from_jwt(JWT_OUT)


@pytest.mark.parametrize("status", [200, 201])
@pytest.mark.parametrize("key", ["token", "access_token"])
@pytest.mark.parametrize("call", ["create", "refresh"])
async def test_ica_accepts_200_or_201_and_token_or_access_token(
    wire: Any, session: aiohttp.ClientSession, status: int, key: str, call: str
) -> None:
    """Both v2 calls accept status 200 or 201 and the JWT under `token` or `access_token`."""
    wire.post(ANY_URL, status=status, payload={key: JWT_OUT})
    api = IcaTokenApi(session)
    if call == "create":
        token = await api.create_jwt_token(ApiKey(API_KEY))
    else:
        token = await api.refresh_jwt_token(JWT_IN)
    assert token.value == JWT_OUT
    assert token.expires_at is not None
    assert token.expires_at.timestamp() == EXP + 60
    assert token.not_before is not None
    assert token.not_before.timestamp() == IAT + 60


async def test_ica_prefers_token_over_access_token(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """When an answer carries both keys, the spec's `token` wins."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT, "access_token": JWT_IN})
    token = await IcaTokenApi(session).create_jwt_token(ApiKey(API_KEY))
    assert token.value == JWT_OUT


async def test_ica_rejects_jwt_credential_for_create(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """A Jwt is refreshed, not used to mint: create_jwt_token raises TypeError and sends nothing."""
    api = IcaTokenApi(session)
    with pytest.raises(TypeError, match="Jwt"):
        await api.create_jwt_token(Jwt(JWT_IN))  # type: ignore[arg-type]
    assert wire.calls() == []


@pytest.mark.parametrize("bad", [API_KEY, None, Token.from_jwt(JWT_IN)])
async def test_ica_rejects_non_credential_for_create(
    wire: Any, session: aiohttp.ClientSession, bad: Any
) -> None:
    """A raw string, None or Token is a TypeError naming the type, never echoing the value."""
    with pytest.raises(TypeError, match=type(bad).__name__) as info:
        await IcaTokenApi(session).create_jwt_token(bad)
    assert API_KEY not in str(info.value)
    assert JWT_IN not in str(info.value)
    assert wire.calls() == []


@pytest.mark.parametrize("tenant", ["", "   ", "\t"])
async def test_ica_rejects_empty_tenant(
    wire: Any, session: aiohttp.ClientSession, tenant: str
) -> None:
    """An empty or blank tenant is a ValueError naming `tenant`, and nothing is sent."""
    with pytest.raises(ValueError, match="tenant"):
        await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, PASSWORD), tenant=tenant)
    assert wire.calls() == []


@pytest.mark.parametrize("bad", ["", "  "])
async def test_ica_refresh_rejects_empty_jwt(
    wire: Any, session: aiohttp.ClientSession, bad: str
) -> None:
    """Refreshing an empty string is a ValueError, and nothing is sent."""
    with pytest.raises(ValueError, match="token"):
        await IcaTokenApi(session).refresh_jwt_token(bad)
    assert wire.calls() == []


# --------------------------------------------------------------------------- console v1 create


V1_CREDENTIAL_HEADERS = [
    *CREDENTIAL_HEADERS,
    pytest.param(Jwt(JWT_IN), {"Authorization": "Bearer " + JWT_IN}, id="jwt"),
]


@pytest.mark.parametrize(("credential", "auth"), V1_CREDENTIAL_HEADERS)
async def test_console_create_sends_exact_request(
    wire: Any, session: aiohttp.ClientSession, credential: Any, auth: dict[str, str]
) -> None:
    """POST /v1/tokens with Accept: application/json + the credential header, no query, no body."""
    wire.post(ANY_URL, status=201, payload={"access_token": JWT_OUT, "token_type": "Bearer"})
    answer = await ConsoleTokenApi(session).create_token(credential)

    method, url, kwargs = only_call(wire)
    assert method == "POST"
    assert str(url) == f"{CONSOLE}/v1/tokens"
    assert kwargs["params"] is None
    assert kwargs["headers"] == {"Accept": V1_ACCEPT, **auth}
    assert kwargs["data"] is None  # no body at all (Content-Length: 0, no Content-Type)
    assert_options(kwargs)
    assert answer == TokenResponse(access_token=JWT_OUT, token_type="Bearer")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"client_id": "my-app"}, [("clientId", "my-app")], id="clientId"),
        pytest.param({"domain": "umccr"}, [("domain", "umccr")], id="domain"),
        pytest.param({"data": "run=42 & more"}, [("data", "run=42 & more")], id="data"),
        pytest.param(
            {"scopes": ["GDS.FILES.READ", "BSSH.RUNS.READ", "TES.TASKS.RUN"]},
            [("scopes", "GDS.FILES.READ,BSSH.RUNS.READ,TES.TASKS.RUN")],
            id="scopes-list",
        ),
        pytest.param({"scopes": ("A", "B")}, [("scopes", "A,B")], id="scopes-tuple"),
        pytest.param({"scopes": "GDS.FILES.READ"}, [("scopes", "GDS.FILES.READ")], id="scope-str"),
        pytest.param({"cwid": "wid:1234"}, [("cwid", "wid:1234")], id="cwid"),
        pytest.param({"cid": "proj-5678"}, [("cid", "proj-5678")], id="cid"),
        pytest.param(
            {"return_session_token": True}, [("returnSessionToken", "true")], id="session"
        ),
        pytest.param({"return_session_token": False}, [], id="no-session"),
        pytest.param({"scopes": []}, [], id="scopes-empty"),
    ],
)
async def test_console_create_sends_each_query_parameter(
    wire: Any,
    session: aiohttp.ClientSession,
    kwargs: dict[str, Any],
    expected: list[tuple[str, str]],
) -> None:
    """Each create_token option becomes exactly its spec-named query parameter, and nothing else."""
    wire.post(ANY_URL, status=201, payload={"access_token": JWT_OUT})
    await ConsoleTokenApi(session).create_token(ApiKey(API_KEY), **kwargs)

    _, url, sent = only_call(wire)
    assert base(url) == f"{CONSOLE}/v1/tokens"
    assert list(url.query.items()) == expected
    assert sent["params"] == (expected or None)
    assert sent["headers"] == {"Accept": V1_ACCEPT, "X-API-Key": API_KEY}


async def test_console_create_sends_all_query_parameters_together(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """All options at once: each name once, spec order, scopes as ONE comma-separated value."""
    wire.post(ANY_URL, status=201, payload={"access_token": PS_TOKEN, "token_type": "psToken"})
    answer = await ConsoleTokenApi(session).create_token(
        ApiKey(API_KEY),
        client_id="cli",
        domain="dom",
        data="meta",
        scopes=["S1", "S2"],
        cwid="wg",
        cid="ctx",
        return_session_token=True,
    )
    _, url, sent = only_call(wire)
    expected = [
        ("clientId", "cli"),
        ("domain", "dom"),
        ("data", "meta"),
        ("scopes", "S1,S2"),
        ("cwid", "wg"),
        ("cid", "ctx"),
        ("returnSessionToken", "true"),
    ]
    assert sent["params"] == expected
    assert sorted(url.query.items()) == sorted(expected)
    assert url.query.getall("scopes") == ["S1,S2"]
    assert "api_key" not in url.query
    assert API_KEY not in str(url)
    assert answer.access_token == PS_TOKEN
    assert answer.token_type == "psToken"


@pytest.mark.parametrize(
    ("authorization", "header"),
    [
        pytest.param(Jwt(JWT_IN), "Bearer " + JWT_IN, id="jwt"),
        pytest.param(PsToken(PS_TOKEN), "Bearer " + PS_TOKEN, id="pstoken"),
        pytest.param(BasicAuth(USER, PASSWORD), BASIC, id="basic"),
    ],
)
async def test_console_create_sends_authorization_beside_api_key(
    wire: Any, session: aiohttp.ClientSession, authorization: Any, header: str
) -> None:
    """`authorization=` beside an ApiKey sends both `X-API-Key` and `Authorization`."""
    wire.post(ANY_URL, status=201, payload={"access_token": JWT_OUT})
    await ConsoleTokenApi(session).create_token(
        ApiKey(API_KEY), cid="proj", scopes=["A"], authorization=authorization
    )
    _, url, sent = only_call(wire)
    assert sent["headers"] == {"Accept": V1_ACCEPT, "X-API-Key": API_KEY, "Authorization": header}
    assert sent["params"] == [("scopes", "A"), ("cid", "proj")]
    assert base(url) == f"{CONSOLE}/v1/tokens"


async def test_console_create_refuses_authorization_beside_non_api_key(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """`authorization=` beside anything but an ApiKey is a ValueError and nothing is sent."""
    with pytest.raises(ValueError, match="ApiKey"):
        await ConsoleTokenApi(session).create_token(PsToken(PS_TOKEN), authorization=Jwt(JWT_IN))
    assert wire.calls() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": ""},
        {"domain": "  "},
        {"data": ""},
        {"cwid": " "},
        {"cid": ""},
        {"scopes": [""]},
        {"scopes": ["A", " "]},
    ],
)
async def test_console_create_rejects_blank_options(
    wire: Any, session: aiohttp.ClientSession, kwargs: dict[str, Any]
) -> None:
    """A blank option value is a ValueError naming it, and nothing is sent."""
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        await ConsoleTokenApi(session).create_token(ApiKey(API_KEY), **kwargs)
    assert wire.calls() == []


async def test_console_create_accepts_200_as_well_as_201(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """Liberal in what we accept: a 200 answer to create_token is fine too."""
    wire.post(ANY_URL, status=200, payload={"access_token": JWT_OUT})
    answer = await ConsoleTokenApi(session).create_token(ApiKey(API_KEY))
    assert answer.access_token == JWT_OUT


async def test_console_create_returns_opaque_pstoken(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """With returnSessionToken the answer's opaque psToken is returned as is, not decoded."""
    wire.post(ANY_URL, status=201, payload={"access_token": PS_TOKEN, "token_type": "psToken"})
    answer = await ConsoleTokenApi(session).create_token(
        BasicAuth(USER, PASSWORD), return_session_token=True
    )
    assert answer == TokenResponse(access_token=PS_TOKEN, token_type="psToken")


# --------------------------------------------------------------------------- console details


@pytest.mark.parametrize(("credential", "auth"), V1_CREDENTIAL_HEADERS)
async def test_console_details_sends_exact_request_and_maps_fields(
    wire: Any, session: aiohttp.ClientSession, credential: Any, auth: dict[str, str]
) -> None:
    """GET /v1/tokens/details; camelCase `currentWorkgroup`, `domain`, `acls` decoded."""
    wire.get(
        ANY_URL,
        status=200,
        payload={
            "uid": "u-1",
            "name": "Alice",
            "username": "alice",
            "currentWorkgroup": {"id": "wg-1", "name": "Lab", "description": "The lab"},
            "tid": "t-1",
            "acls": ["wid:wg-1", "cid:proj"],
            "domain": {"id": "d-1", "name": "umccr"},
            "somethingNew": {"ignored": True},
        },
    )
    details = await ConsoleTokenApi(session).get_token_details(credential)

    method, url, kwargs = only_call(wire)
    assert method == "GET"
    assert str(url) == f"{CONSOLE}/v1/tokens/details"
    assert kwargs["params"] is None
    assert kwargs["headers"] == {"Accept": V1_ACCEPT, **auth}
    assert kwargs["data"] is None  # no body at all (Content-Length: 0, no Content-Type)
    assert_options(kwargs)
    assert details == TokenDetailResponse(
        uid="u-1",
        name="Alice",
        username="alice",
        current_workgroup=Workgroup(id="wg-1", name="Lab", description="The lab"),
        tid="t-1",
        acls=("wid:wg-1", "cid:proj"),
        domain=Domain(id="d-1", name="umccr"),
    )


async def test_console_details_nulls_and_missing_fields_are_absent(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """JSON nulls and missing fields in the details answer become the field defaults."""
    wire.get(
        ANY_URL,
        status=200,
        payload={"uid": "u-1", "currentWorkgroup": None, "acls": None, "domain": None},
    )
    details = await ConsoleTokenApi(session).get_token_details(Jwt(JWT_IN))
    assert details == TokenDetailResponse(uid="u-1")
    assert details.acls == ()


# --------------------------------------------------------------------------- console refresh


@pytest.mark.parametrize(
    "access_token", [pytest.param(PS_TOKEN, id="str"), pytest.param(PsToken(PS_TOKEN), id="obj")]
)
async def test_console_refresh_defaults_to_bearer_of_the_pstoken(
    wire: Any, session: aiohttp.ClientSession, access_token: Any
) -> None:
    """POST /v1/tokens:refresh: JSON body `{"access_token": ps}`, Authorization Bearer ps."""
    wire.post(ANY_URL, status=201, payload={"access_token": PS_TOKEN + "-2", "token_type": "ps"})
    answer = await ConsoleTokenApi(session).refresh_token(access_token)

    method, url, kwargs = only_call(wire)
    assert method == "POST"
    assert str(url) == f"{CONSOLE}/v1/tokens:refresh"
    assert url.raw_path == "/v1/tokens:refresh"
    assert kwargs["params"] is None
    assert kwargs["headers"] == {
        "Content-Type": "application/json",
        "Accept": V1_ACCEPT,
        "Authorization": "Bearer " + PS_TOKEN,
    }
    assert kwargs["data"] == json.dumps({"access_token": PS_TOKEN}, separators=(",", ":")).encode()
    assert json.loads(kwargs["data"]) == {"access_token": PS_TOKEN}
    assert_options(kwargs)
    assert answer == TokenResponse(access_token=PS_TOKEN + "-2", token_type="ps")


@pytest.mark.parametrize(
    ("authorization", "header"),
    [
        pytest.param(Jwt(JWT_IN), {"Authorization": "Bearer " + JWT_IN}, id="jwt"),
        pytest.param(BasicAuth(USER, PASSWORD), {"Authorization": BASIC}, id="basic"),
        pytest.param(ApiKey(API_KEY), {"X-API-Key": API_KEY}, id="api-key"),
    ],
)
async def test_console_refresh_with_explicit_authorization(
    wire: Any, session: aiohttp.ClientSession, authorization: Any, header: dict[str, str]
) -> None:
    """An explicit `authorization=` replaces the default Bearer; the body names the psToken."""
    wire.post(ANY_URL, status=201, payload={"access_token": PS_TOKEN})
    await ConsoleTokenApi(session).refresh_token(PS_TOKEN, authorization=authorization)
    _, _, kwargs = only_call(wire)
    assert kwargs["headers"] == {"Content-Type": "application/json", "Accept": V1_ACCEPT, **header}
    assert json.loads(kwargs["data"]) == {"access_token": PS_TOKEN}


async def test_console_refresh_accepts_200(wire: Any, session: aiohttp.ClientSession) -> None:
    """Liberal: a 200 answer to the psToken refresh is accepted like the spec's 201."""
    wire.post(ANY_URL, status=200, payload={"access_token": PS_TOKEN})
    answer = await ConsoleTokenApi(session).refresh_token(PS_TOKEN)
    assert answer.access_token == PS_TOKEN


@pytest.mark.parametrize("bad", ["", "   "])
async def test_console_refresh_and_revoke_reject_empty_token(
    wire: Any, session: aiohttp.ClientSession, bad: str
) -> None:
    """An empty access token is a ValueError naming `access_token`; nothing is sent."""
    api = ConsoleTokenApi(session)
    with pytest.raises(ValueError, match="access_token"):
        await api.refresh_token(bad)
    with pytest.raises(ValueError, match="access_token"):
        await api.revoke_token(bad)
    assert wire.calls() == []


# --------------------------------------------------------------------------- console revoke


@pytest.mark.parametrize("status", [204, 200])
@pytest.mark.parametrize(
    ("access_token", "value"),
    [
        pytest.param(PS_TOKEN, PS_TOKEN, id="str"),
        pytest.param(PsToken(PS_TOKEN), PS_TOKEN, id="pstoken"),
        pytest.param(Jwt(JWT_IN), JWT_IN, id="jwt"),
        pytest.param(Token.from_jwt(JWT_IN), JWT_IN, id="Token"),
    ],
)
async def test_console_revoke_sends_exact_request(
    wire: Any, session: aiohttp.ClientSession, status: int, access_token: Any, value: str
) -> None:
    """DELETE /v1/tokens with JSON `{"access_token": ...}` and Bearer of it; 204 or 200 → None."""
    wire.delete(ANY_URL, status=status, body=b"")
    result: object = await ConsoleTokenApi(session).revoke_token(access_token)  # type: ignore[func-returns-value]

    method, url, kwargs = only_call(wire)
    assert result is None
    assert method == "DELETE"
    assert str(url) == f"{CONSOLE}/v1/tokens"
    assert kwargs["params"] is None
    assert kwargs["headers"] == {
        "Content-Type": "application/json",
        "Accept": V1_ACCEPT,
        "Authorization": "Bearer " + value,
    }
    assert kwargs["data"] == b'{"access_token":"' + value.encode() + b'"}'
    assert_options(kwargs)


async def test_console_revoke_with_explicit_authorization(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """Revoking a JWT on behalf of a psToken session: body names the JWT, header the psToken."""
    wire.delete(ANY_URL, status=204)
    await ConsoleTokenApi(session).revoke_token(JWT_IN, authorization=PsToken(PS_TOKEN))
    _, _, kwargs = only_call(wire)
    assert kwargs["headers"]["Authorization"] == "Bearer " + PS_TOKEN
    assert json.loads(kwargs["data"]) == {"access_token": JWT_IN}


# --------------------------------------------------------------------------- base URLs


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (ICA, f"{ICA}/api/tokens"),
        (ICA + "/", f"{ICA}/api/tokens"),
        (ICA + "//", f"{ICA}/api/tokens"),
        (
            "https://gateway.example.org/prefix/ica/rest",
            "https://gateway.example.org/prefix/ica/rest/api/tokens",
        ),
        ("https://gateway.example.org:8443", "https://gateway.example.org:8443/api/tokens"),
    ],
)
async def test_ica_base_url_joins(
    wire: Any, session: aiohttp.ClientSession, base_url: str, expected: str
) -> None:
    """The base URL joins to `<base>/api/tokens` with or without trailing slash, prefix kept."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT})
    api = IcaTokenApi(session, base_url)
    await api.create_jwt_token(ApiKey(API_KEY))
    _, url, _ = only_call(wire)
    assert str(url) == expected
    assert str(api.base_url) == expected.removesuffix("/api/tokens")


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (CONSOLE, f"{CONSOLE}/v1/tokens:refresh"),
        (CONSOLE + "/", f"{CONSOLE}/v1/tokens:refresh"),
        (
            "https://use1.platform.illumina.com/",
            "https://use1.platform.illumina.com/v1/tokens:refresh",
        ),
        (
            "https://proxy.example.org/console",
            "https://proxy.example.org/console/v1/tokens:refresh",
        ),
    ],
)
async def test_console_base_url_joins(
    wire: Any, session: aiohttp.ClientSession, base_url: str, expected: str
) -> None:
    """The console base URL joins to `<base>/v1/...` with or without trailing slash or prefix."""
    wire.post(ANY_URL, status=201, payload={"access_token": PS_TOKEN})
    await ConsoleTokenApi(session, base_url).refresh_token(PS_TOKEN)
    _, url, _ = only_call(wire)
    assert str(url) == expected


@pytest.mark.parametrize("cls", [IcaTokenApi, ConsoleTokenApi])
@pytest.mark.parametrize(
    "base_url",
    [
        "http://ica.illumina.com/ica/rest",
        "http://10.0.0.1",
        "http://192.168.1.10:8080",
        "http://[2001:db8::1]",
        "http://localhost.example.org",
    ],
)
def test_plain_http_off_loopback_is_refused(
    session: aiohttp.ClientSession, cls: Any, base_url: str
) -> None:
    """A plain-http base URL on a non-loopback host is a ValueError (no tokens in clear)."""
    with pytest.raises(ValueError, match="http"):
        cls(session, base_url)


@pytest.mark.parametrize("cls", [IcaTokenApi, ConsoleTokenApi])
@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1",
        "http://127.0.0.1:8080/ica/rest",
        "http://127.1.2.3:9",
        "http://localhost",
        "http://LOCALHOST:8080",
        "http://[::1]",
        "http://[::1]:8443/ica/rest/",
    ],
)
def test_plain_http_on_loopback_is_allowed(
    session: aiohttp.ClientSession, cls: Any, base_url: str
) -> None:
    """Plain http is allowed on loopback (127.0.0.0/8, ::1, localhost), trailing slash dropped."""
    api = cls(session, base_url)
    assert str(api.base_url) == str(yarl.URL(base_url)).rstrip("/")
    assert repr(api) == f"{cls.__name__}(base_url={str(api.base_url)!r})"


@pytest.mark.parametrize("host", ["localhost", "[::1]"])
async def test_plain_http_loopback_request_goes_to_that_host(
    wire: Any, session: aiohttp.ClientSession, host: str
) -> None:
    """A loopback http base URL is used as given for the request."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT})
    await IcaTokenApi(session, f"http://{host}:8080/ica/rest").create_jwt_token(ApiKey(API_KEY))
    _, url, _ = only_call(wire)
    assert str(url) == f"http://{host}:8080/ica/rest/api/tokens"


@pytest.mark.parametrize("cls", [IcaTokenApi, ConsoleTokenApi])
@pytest.mark.parametrize(
    ("base_url", "match"),
    [
        ("https://ica.illumina.com/ica/rest?tenant=x", "query"),
        ("https://ica.illumina.com/ica/rest#frag", "fragment"),
        ("https://user:pass@ica.illumina.com/ica/rest", "credentials"),
        ("https://user@ica.illumina.com/ica/rest", "credentials"),
        ("https://:pass@ica.illumina.com", "credentials"),
        ("ftp://ica.illumina.com", "absolute"),
        ("ica.illumina.com/ica/rest", "absolute"),
        ("/ica/rest", "absolute"),
        ("", "absolute"),
    ],
)
def test_bad_base_url_is_refused(
    session: aiohttp.ClientSession, cls: Any, base_url: str, match: str
) -> None:
    """A base URL with a query, fragment, userinfo, or that is not absolute http(s): ValueError."""
    with pytest.raises(ValueError, match=match) as info:
        cls(session, base_url)
    assert "pass" not in str(info.value)


# --------------------------------------------------------------------------- constructor args


@pytest.mark.parametrize("cls", [IcaTokenApi, ConsoleTokenApi])
@pytest.mark.parametrize("not_a_session", [None, object(), "https://ica.illumina.com", 42])
def test_non_session_is_refused(cls: Any, not_a_session: Any) -> None:
    """Anything but an aiohttp.ClientSession is a TypeError naming what was given."""
    with pytest.raises(TypeError, match=type(not_a_session).__name__):
        cls(not_a_session)


@pytest.mark.parametrize("cls", [IcaTokenApi, ConsoleTokenApi])
@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1.0, id="negative"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(1e9, id="absurd"),
        pytest.param(True, id="bool"),
        pytest.param("30", id="str"),
        pytest.param(None, id="none"),
        pytest.param(aiohttp.ClientTimeout(total=None), id="no-total"),
        pytest.param(aiohttp.ClientTimeout(total=0), id="zero-total"),
        pytest.param(aiohttp.ClientTimeout(total=-5), id="negative-total"),
    ],
)
def test_bad_timeout_is_refused(session: aiohttp.ClientSession, cls: Any, timeout: Any) -> None:
    """A timeout that is not positive and finite (or a ClientTimeout without total): ValueError."""
    with pytest.raises(ValueError, match="timeout"):
        cls(session, timeout=timeout)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5, aiohttp.ClientTimeout(total=5.0)),
        (0.25, aiohttp.ClientTimeout(total=0.25)),
        (aiohttp.ClientTimeout(total=7, connect=2), aiohttp.ClientTimeout(total=7, connect=2)),
    ],
)
async def test_timeout_is_sent_with_each_request(
    wire: Any, session: aiohttp.ClientSession, given: Any, expected: aiohttp.ClientTimeout
) -> None:
    """The configured timeout goes with each request as a ClientTimeout."""
    wire.post(re.compile(r".*/api/tokens$"), status=200, payload={"token": JWT_OUT})
    wire.post(re.compile(r".*/v1/tokens$"), status=201, payload={"access_token": JWT_OUT})
    await IcaTokenApi(session, timeout=given).create_jwt_token(ApiKey(API_KEY))
    await ConsoleTokenApi(session, timeout=given).create_token(ApiKey(API_KEY))
    calls = wire.calls()
    assert len(calls) == 2
    assert all(kwargs["timeout"] == expected for _, _, kwargs in calls)


# --------------------------------------------------------------------------- real loopback wire


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def local_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start an aiohttp server on 127.0.0.1 with a given catch-all handler; yields its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_real_wire_token_post_is_empty_with_content_length_zero(
    local_server: Any, session: aiohttp.ClientSession
) -> None:
    """Over real HTTP: POST path with literal colon, exact query, key header, 0-length body."""
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append((request.method, request.raw_path, dict(request.headers), await request.read()))
        return web.json_response({"token": JWT_OUT})

    url = await local_server(handler)
    api = IcaTokenApi(session, url + "/ica/rest/")
    await api.create_jwt_token(ApiKey(API_KEY), tenant="t 1")
    await api.refresh_jwt_token(JWT_IN)
    assert [(m, p) for m, p, _, _ in seen] == [
        ("POST", "/ica/rest/api/tokens?tenant=t+1"),
        ("POST", "/ica/rest/api/tokens:refresh"),
    ]
    first, second = seen[0][2], seen[1][2]
    assert first["X-API-Key"] == API_KEY
    assert "Authorization" not in first
    assert second["Authorization"] == "Bearer " + JWT_IN
    assert "X-API-Key" not in second
    for _, _, headers, body in seen:
        assert body == b""
        assert headers["Content-Length"] == "0"
        assert headers["Accept"] == V2_ACCEPT


async def test_real_wire_empty_post_has_no_content_type(
    local_server: Any, session: aiohttp.ClientSession
) -> None:
    """Over real HTTP, a body-less token POST carries no Content-Type header at all."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if request.path.startswith("/v1"):
            return web.json_response({"access_token": JWT_OUT}, status=201)
        return web.json_response({"token": JWT_OUT})

    url = await local_server(handler)
    await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    await ConsoleTokenApi(session, url).create_token(ApiKey(API_KEY))
    assert [headers.get("Content-Type") for headers in seen] == [None, None]


async def test_real_wire_json_body_has_json_content_type(
    local_server: Any, session: aiohttp.ClientSession
) -> None:
    """Over real HTTP, refresh and revoke send `application/json` with the exact JSON body."""
    seen: list[tuple[str, str, str, bytes]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append((request.method, request.raw_path, request.headers["Content-Type"], body))
        if request.method == "DELETE":
            return web.Response(status=204)
        return web.json_response({"access_token": PS_TOKEN}, status=201)

    url = await local_server(handler)
    api = ConsoleTokenApi(session, url)
    await api.refresh_token(PS_TOKEN)
    await api.revoke_token(PS_TOKEN)
    body = b'{"access_token":"' + PS_TOKEN.encode() + b'"}'
    assert seen == [
        ("POST", "/v1/tokens:refresh", "application/json", body),
        ("DELETE", "/v1/tokens", "application/json", body),
    ]


async def test_real_wire_body_arriving_in_pieces_is_read_whole(
    local_server: Any, session: aiohttp.ClientSession
) -> None:
    """A token answer that arrives in several TCP chunks is read whole and decoded."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        body = json.dumps({"token": JWT_OUT}).encode()
        with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
            await response.write(body[:12])
            await asyncio.sleep(0.1)
            await response.write(body[12:])
            await response.write_eof()
        return response

    url = await local_server(handler)
    token = await IcaTokenApi(session, url).create_jwt_token(ApiKey(API_KEY))
    assert token.value == JWT_OUT


async def test_real_wire_percent_encoded_base_path_stays_encoded(
    local_server: Any, session: aiohttp.ClientSession
) -> None:
    """A percent-encoded character in the base path is sent still encoded."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        return web.json_response({"token": JWT_OUT})

    url = await local_server(handler)
    await IcaTokenApi(session, url + "/my%20api").create_jwt_token(ApiKey(API_KEY))
    assert seen == ["/my%20api/api/tokens"]


async def test_debug_log_names_request_without_secrets(
    wire: Any, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Each request leaves one DEBUG line with method, path and status, and no secret."""
    wire.post(ANY_URL, status=200, payload={"token": JWT_OUT})
    await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, PASSWORD), tenant="acme")
    records = [r for r in caplog.records if r.name == "aioica_auth"]
    assert len(records) == 1
    assert records[0].levelname == "DEBUG"
    assert records[0].getMessage().startswith("POST /api/tokens -> 200 in ")
    assert "acme" not in records[0].getMessage()


# --------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param(" https://ica.illumina.com/ica/rest", id="leading-space"),
        pytest.param("https://ica.illumina.com/ica/rest ", id="trailing-space"),
        pytest.param("https://ica.illumina.com/ica/rest\n", id="trailing-lf"),
        pytest.param("https://ica.illumina.com/ica/\rrest", id="cr-inside"),
        pytest.param("https://ica.illumina.com/ica\t/rest", id="tab-inside"),
        pytest.param("https://ica.illumina.com\x00/ica/rest", id="nul"),
        pytest.param("https://ica.illumina.com/ica/rest\x7f", id="del"),
        pytest.param("https://ica illumina.com/ica/rest", id="space-in-host"),
        pytest.param("https://ica.illumina.com/ica rest", id="space-in-path"),
        pytest.param("https://ica%20illumina.com/ica/rest", id="encoded-space-in-host"),
        pytest.param("https://ica<illumina>.com", id="bad-host-character"),
        pytest.param("https://xn--abc-.com", id="bad-idna"),
        pytest.param("https://ica.illumina.com:99999", id="port-too-large"),
        pytest.param("https://ica.illumina.com:-1", id="port-negative"),
        pytest.param("https://ica.illumina.com:0", id="port-zero"),
        pytest.param("https://ica.illumina.com:abc", id="port-not-a-number"),
        pytest.param("https://ica.illumina.com:1:2", id="port-twice"),
        pytest.param("https://[::1", id="unclosed-ipv6"),
        pytest.param("https://user:pa ss@ica.illumina.com", id="space-in-password"),
    ],
)
@pytest.mark.parametrize("name", [None, "server_url"])
def test_malformed_base_url_is_value_error_naming_the_parameter(
    base_url: str, name: str | None
) -> None:
    """Whitespace or a control character anywhere, a malformed host or port: a ValueError
    (never a yarl or Unicode error type) that names the parameter and does not echo the URL."""
    kwargs = {} if name is None else {"name": name}
    with pytest.raises(ValueError, match=rf"^{name or 'base_url'} ") as info:
        check_base_url(base_url, **kwargs)
    assert type(info.value) is ValueError
    assert "illumina" not in str(info.value).replace("https://ica.illumina.com/ica/rest", "")
    assert "pa ss" not in str(info.value)
    assert info.value.__context__ is None


@pytest.mark.parametrize("cls", [IcaTokenApi, ConsoleTokenApi])
@pytest.mark.parametrize("base_url", ["https://ica.illumina.com:99999", "https://a b.org"])
def test_endpoint_classes_refuse_malformed_base_url(
    session: aiohttp.ClientSession, cls: Any, base_url: str
) -> None:
    """The endpoint classes name `base_url` for a malformed URL, as ValueError."""
    with pytest.raises(ValueError, match=r"^base_url "):
        cls(session, base_url)


@pytest.mark.parametrize("base_url", [None, 8443, b"https://ica.illumina.com"])
def test_non_text_base_url_is_type_error(base_url: Any) -> None:
    """A base URL that is neither str nor yarl.URL is a TypeError naming the parameter."""
    with pytest.raises(TypeError, match=r"^base_url must be a str or yarl\.URL, not "):
        check_base_url(base_url)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://ica.illumina.com:443/ica/rest",
        "https://gateway_1.internal:8443",
        "https://[2001:db8::1]:8443/ica",
        "https://bücher.example/ica",
        yarl.URL("https://ica.illumina.com/ica/rest/"),
    ],
)
def test_well_formed_base_urls_pass(base_url: Any) -> None:
    """Ports, underscores, IPv6 literals, IDNA hosts and yarl.URL values are fine."""
    assert str(check_base_url(base_url)) == str(yarl.URL(str(base_url))).rstrip("/")


@pytest.mark.parametrize("tenant", [123, b"acme", ["acme"]])
async def test_ica_non_str_tenant_is_type_error(
    wire: Any, session: aiohttp.ClientSession, tenant: Any
) -> None:
    """A tenant that is not a str is a TypeError naming `tenant` and the type; nothing is sent."""
    with pytest.raises(TypeError, match=rf"^tenant must be a str, not {type(tenant).__name__}$"):
        await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, PASSWORD), tenant=tenant)
    assert wire.calls() == []


@pytest.mark.parametrize("tenant", [" acme", "acme\n", "ac\tme", "acme\x7f"])
async def test_ica_padded_or_control_tenant_is_value_error(
    wire: Any, session: aiohttp.ClientSession, tenant: str
) -> None:
    """A padded tenant or one with a control character is a ValueError naming `tenant`."""
    with pytest.raises(ValueError, match=r"^tenant "):
        await IcaTokenApi(session).create_jwt_token(BasicAuth(USER, PASSWORD), tenant=tenant)
    assert wire.calls() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": 1},
        {"domain": b"acme"},
        {"data": {"k": "v"}},
        {"cwid": 42},
        {"cid": ["p"]},
        {"scopes": [1]},
        {"scopes": 5},
        {"scopes": b"A,B"},
    ],
)
async def test_console_create_non_str_option_is_type_error(
    wire: Any, session: aiohttp.ClientSession, kwargs: dict[str, Any]
) -> None:
    """An option of the wrong type is a TypeError naming it; nothing is sent."""
    name = next(iter(kwargs))
    with pytest.raises(TypeError, match=rf"^{name} must be a str"):
        await ConsoleTokenApi(session).create_token(ApiKey(API_KEY), **kwargs)
    assert wire.calls() == []


@pytest.mark.parametrize(
    "kwargs",
    [{"client_id": "app\n"}, {"domain": " acme"}, {"cid": "p\x00"}, {"scopes": ["A\tB"]}],
)
async def test_console_create_control_character_option_is_value_error(
    wire: Any, session: aiohttp.ClientSession, kwargs: dict[str, Any]
) -> None:
    """A padded option, or one with a control character, is a ValueError naming it."""
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"^{name} "):
        await ConsoleTokenApi(session).create_token(ApiKey(API_KEY), **kwargs)
    assert wire.calls() == []


@pytest.mark.parametrize("scopes", ["A,B", ["A", "B,C"]])
async def test_console_scope_with_comma_is_value_error(
    wire: Any, session: aiohttp.ClientSession, scopes: Any
) -> None:
    """Scopes go out comma-separated, so a scope holding a comma is refused (it would split)."""
    with pytest.raises(ValueError, match=r"^scopes must not contain ','"):
        await ConsoleTokenApi(session).create_token(ApiKey(API_KEY), scopes=scopes)
    assert wire.calls() == []


@pytest.mark.parametrize("value", ["yes", "false", 1, 0, None])
async def test_console_return_session_token_must_be_bool(
    wire: Any, session: aiohttp.ClientSession, value: Any
) -> None:
    """return_session_token that is not a bool (even "false" or 0) is a TypeError."""
    with pytest.raises(TypeError, match=r"^return_session_token must be a bool, not "):
        await ConsoleTokenApi(session).create_token(ApiKey(API_KEY), return_session_token=value)
    assert wire.calls() == []


@pytest.mark.parametrize("bad", [None, 42, b"ps-token"])
async def test_console_refresh_and_revoke_non_str_token_is_type_error(
    wire: Any, session: aiohttp.ClientSession, bad: Any
) -> None:
    """An access token that is no str or token object is a TypeError naming `access_token`."""
    api = ConsoleTokenApi(session)
    with pytest.raises(TypeError, match=r"^access_token must be a str"):
        await api.refresh_token(bad)
    with pytest.raises(TypeError, match=r"^access_token must be a str"):
        await api.revoke_token(bad)
    assert wire.calls() == []


def test_max_timeout_is_a_day() -> None:
    """MAX_TIMEOUT is 86 400 seconds; exactly that is accepted, as number or ClientTimeout."""
    assert MAX_TIMEOUT == 86_400.0
    assert normalise_timeout(MAX_TIMEOUT) == aiohttp.ClientTimeout(total=86_400.0)
    day = aiohttp.ClientTimeout(total=86_400)
    assert normalise_timeout(day) is day


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param(86_400.5, id="over-a-day"),
        pytest.param(10**6, id="a-million"),
        pytest.param(aiohttp.ClientTimeout(total=86_401), id="client-timeout-over-a-day"),
        pytest.param(aiohttp.ClientTimeout(total=float("nan")), id="client-timeout-nan"),
        pytest.param(aiohttp.ClientTimeout(total=float("inf")), id="client-timeout-inf"),
        pytest.param(aiohttp.ClientTimeout(total="30"), id="client-timeout-str"),  # type: ignore[arg-type]
    ],
)
def test_timeout_over_max_is_value_error(timeout: Any) -> None:
    """A timeout above MAX_TIMEOUT (a number or a ClientTimeout's total), or a ClientTimeout
    whose total is no number, is a ValueError naming `timeout`."""
    with pytest.raises(ValueError, match=r"^timeout must "):
        normalise_timeout(timeout)
