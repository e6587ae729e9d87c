"""The local ICA server (`aioica_auth.testing`) against ICA-API.md, over real loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email.utils
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from yarl import URL

import aioica_auth.testing as testing
from aioica_auth import ApiKey, BasicAuth, ConsoleTokenApi, ErrorResponse, UnauthorizedError
from aioica_auth.testing import Fault, LocalIcaServer, RecordedRequest, make_jwt
from aioica_auth.testing._state import Grant, Identity, Refusal, Registry

V2 = "application/vnd.illumina.v3+json"
PROBLEM = "application/problem+json"
API_KEY_REFRESH = "Refreshing the JWT is not possible if it has been created using an API-key."
NO_REFRESH = "The token is no longer able to be refreshed."
HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.fixture
async def server() -> AsyncIterator[LocalIcaServer]:
    """A running local server with default settings."""
    async with LocalIcaServer() as srv:
        yield srv


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    """A raw aiohttp session."""
    async with aiohttp.ClientSession() as session:
        yield session


# -- helpers ------------------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    """Claims of a JWT, unverified (as a client reads them)."""
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def basic(server: LocalIcaServer, password: str | None = None) -> dict[str, str]:
    """Basic auth headers for the server's user."""
    raw = f"{server.username}:{server.password if password is None else password}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    """A bearer header."""
    return {"Authorization": "Bearer " + token}


def tenant_uuid(tid: str) -> uuid.UUID:
    """The tenant UUID in a `tid` claim, decoded the way ICA clients do."""
    return uuid.UUID(base64.b64decode(tid).decode().split(":")[-1])


async def call(
    client: aiohttp.ClientSession, method: str, url: str | URL, **kwargs: Any
) -> tuple[int, str | None, bytes, aiohttp.ClientResponse]:
    """Make one request; return status, content type header, body and the response."""
    async with client.request(method, url, **kwargs) as resp:
        body = await resp.read()
        return resp.status, resp.headers.get("Content-Type"), body, resp


async def ica_token(client: aiohttp.ClientSession, server: LocalIcaServer, **kwargs: Any) -> str:
    """Mint a v2 JWT (API key unless headers are given)."""
    kwargs.setdefault("headers", {"X-API-Key": server.api_key})
    status, _, body, _ = await call(client, "POST", server.ica_base_url + "/api/tokens", **kwargs)
    assert status == 200
    token: str = json.loads(body)["token"]
    return token


async def console_token(
    client: aiohttp.ClientSession, server: LocalIcaServer, **kwargs: Any
) -> dict[str, Any]:
    """POST /v1/tokens (API key unless headers are given); the decoded 201 body."""
    kwargs.setdefault("headers", {"X-API-Key": server.api_key})
    status, ctype, body, _ = await call(client, "POST", server.base_url + "/v1/tokens", **kwargs)
    assert (status, ctype) == (201, "application/json")
    answer: dict[str, Any] = json.loads(body)
    return answer


async def ps_token(client: aiohttp.ClientSession, server: LocalIcaServer) -> str:
    """A new psToken (console create with returnSessionToken=true)."""
    answer = await console_token(client, server, params={"returnSessionToken": "true"})
    token: str = answer["access_token"]
    return token


def assert_problem(status: int, ctype: str | None, body: bytes, expected: int) -> dict[str, Any]:
    """Check an ICA v2 Problem answer; return it."""
    assert (status, ctype) == (expected, PROBLEM)
    problem: dict[str, Any] = json.loads(body)
    assert set(problem) == {
        "id",
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "parameters",
        "timestamp",
    }
    uuid.UUID(problem["id"])
    assert problem["type"].startswith("https://")
    assert problem["title"].startswith("ICA_")
    assert problem["status"] == expected
    assert problem["parameters"] == {}
    assert problem["instance"].startswith("http://127.0.0.1:")
    assert dt.datetime.fromisoformat(problem["timestamp"]).tzinfo is not None
    return problem


def assert_error(status: int, ctype: str | None, body: bytes, expected: int) -> dict[str, Any]:
    """Check a console v1 ErrorResponse answer; return it."""
    assert (status, ctype) == (expected, "application/json")
    error: dict[str, Any] = json.loads(body)
    assert set(error) == {"code", "message", "details"}
    assert error["details"] == []
    return error


# -- make_jwt -----------------------------------------------------------------------------


def test_exports() -> None:
    """The public names are exactly the documented four."""
    assert testing.__all__ == ["Fault", "LocalIcaServer", "RecordedRequest", "make_jwt"]


def test_make_jwt_default_claims() -> None:
    """make_jwt carries iss, aud, sub, tid, tns, jti, iat, nbf and exp as ICA tokens do."""
    claims = claims_of(make_jwt(issued_at=1_700_000_000, lifetime=600))
    assert claims["iss"] == "https://ica.local/"
    assert claims["aud"] == "ica"
    assert claims["tns"] == "test-tenant"
    uuid.UUID(claims["sub"])
    uuid.UUID(claims["jti"])
    tenant_uuid(claims["tid"])
    assert claims["iat"] == claims["nbf"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_600
    assert all(type(claims[k]) is int for k in ("iat", "nbf", "exp"))


def test_make_jwt_fractional_numeric_dates() -> None:
    """Sub-second times are floats rounded to milliseconds; whole ones stay integers."""
    claims = claims_of(make_jwt(issued_at=1_700_000_000.1234, lifetime=0.25, not_before=5.0))
    assert claims["iat"] == 1_700_000_000.123
    assert claims["exp"] == round(1_700_000_000.1234 + 0.25, 3)
    assert claims["nbf"] == 5
    assert type(claims["nbf"]) is int


def test_make_jwt_options() -> None:
    """expires_at, include_exp, claim overrides and removal, and the key all apply."""
    key = "k" * 40
    token = make_jwt(expires_at=42.0, claims={"tns": "other", "nbf": None, "x": 1}, key=key)
    claims = jwt.decode(
        token, key, algorithms=["HS256"], audience="ica", options={"verify_exp": False}
    )
    assert (claims["exp"], claims["tns"], claims["x"]) == (42, "other", 1)
    assert "nbf" not in claims
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert "exp" not in claims_of(make_jwt(include_exp=False))
    with pytest.raises(ValueError, match="32 bytes") as info:
        make_jwt(key="short")
    assert "short" not in str(info.value)


# -- ICA v2 create ------------------------------------------------------------------------


async def test_ica_create_with_api_key(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """POST /api/tokens with X-API-Key answers 200 {"token"} in the v3 content type."""
    before = server.now()
    status, ctype, body, resp = await call(
        client, "POST", server.ica_base_url + "/api/tokens", headers={"X-API-Key": server.api_key}
    )
    assert (status, ctype) == (200, V2)
    assert resp.headers.get("Content-Encoding") == "gzip"  # aiohttp accepts gzip by default
    answer = json.loads(body)
    assert list(answer) == ["token"]
    claims = claims_of(answer["token"])
    assert claims["aud"] == "ica"
    assert claims["tns"] == "test-tenant"
    tenant_uuid(claims["tid"])
    uuid.UUID(claims["sub"])
    assert before - 0.01 <= claims["iat"] <= server.now() + 0.01
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == pytest.approx(claims["iat"] + 3600, abs=0.002)


async def test_ica_create_with_basic_and_empty_body(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Basic credentials mint a JWT; an empty body is accepted."""
    token = await ica_token(client, server, headers=basic(server), data=b"")
    assert claims_of(token)["tns"] == "test-tenant"
    assert server.requests[-1].body == b""


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "test-apikey-wrong"},
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Digest abc"},
    ],
)
async def test_ica_create_refuses_bad_credentials(
    server: LocalIcaServer, client: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """Missing, wrong or malformed credentials get a 401 Problem."""
    status, ctype, body, _ = await call(
        client, "POST", server.ica_base_url + "/api/tokens", headers=headers
    )
    problem = assert_problem(status, ctype, body, 401)
    assert problem["title"] == "ICA_SEC_002: Unauthorized"


async def test_ica_create_refuses_wrong_password(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A wrong password is a 401 Problem that does not echo the password."""
    status, ctype, body, _ = await call(
        client, "POST", server.ica_base_url + "/api/tokens", headers=basic(server, "nope-pw-123")
    )
    assert_problem(status, ctype, body, 401)
    assert b"nope-pw-123" not in body


async def test_ica_create_tenant_choice(client: aiohttp.ClientSession) -> None:
    """With several tenants, Basic needs `tenant`; an unknown tenant is a 400 Problem."""
    async with LocalIcaServer(tenants=("alpha", "beta")) as server:
        url = server.ica_base_url + "/api/tokens"
        status, ctype, body, _ = await call(client, "POST", url, headers=basic(server))
        assert_problem(status, ctype, body, 400)
        params = {"tenant": "gamma"}
        status, ctype, body, _ = await call(
            client, "POST", url, headers=basic(server), params=params
        )
        assert_problem(status, ctype, body, 400)
        token = await ica_token(client, server, headers=basic(server), params={"tenant": "beta"})
        assert claims_of(token)["tns"] == "beta"
        assert server.requests[-1].query == (("tenant", "beta"),)
        key_token = await ica_token(client, server)
        assert claims_of(key_token)["tns"] == "alpha"  # the API key's tenant
        assert claims_of(key_token)["tid"] != claims_of(token)["tid"]


async def test_ica_create_with_ps_token(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A live psToken mints a JWT; a JWT or an ended session as bearer gets 401."""
    ps = await ps_token(client, server)
    token = await ica_token(client, server, headers=bearer(ps))
    url = server.ica_base_url + "/api/tokens"
    status, ctype, body, _ = await call(client, "POST", url, headers=bearer(token))
    assert_problem(status, ctype, body, 401)
    server.expire_session(ps)
    status, ctype, body, _ = await call(client, "POST", url, headers=bearer(ps))
    assert_problem(status, ctype, body, 401)


# -- ICA v2 refresh -----------------------------------------------------------------------


async def test_ica_refresh_keeps_identity(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Refreshing a Basic-minted JWT gives a new JWT for the same sub/tid/tns, refreshable."""
    old = await ica_token(client, server, headers=basic(server))
    server.lifetime = 120.0
    url = server.ica_base_url + "/api/tokens:refresh"
    token = old
    for _ in range(2):
        status, ctype, body, _ = await call(client, "POST", url, headers=bearer(token))
        assert (status, ctype) == (200, V2)
        token = json.loads(body)["token"]
    before, after = claims_of(old), claims_of(token)
    assert {k: after[k] for k in ("sub", "tid", "tns")} == {
        k: before[k] for k in ("sub", "tid", "tns")
    }
    assert after["jti"] != before["jti"]
    assert after["iat"] >= before["iat"]
    assert after["exp"] == pytest.approx(after["iat"] + 120.0, abs=0.002)
    assert server.counts["ica.refresh"] == 2


async def test_ica_refresh_refuses_api_key_jwt(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A JWT minted from an API key cannot be refreshed: 400 Problem with the spec's words."""
    token = await ica_token(client, server)
    status, ctype, body, _ = await call(
        client, "POST", server.ica_base_url + "/api/tokens:refresh", headers=bearer(token)
    )
    assert assert_problem(status, ctype, body, 400)["detail"] == API_KEY_REFRESH


async def test_ica_refresh_refuses_invalid_jwts(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """No bearer, a foreign JWT, a psToken, a revoked or an expired JWT: 401 Problem."""
    url = server.ica_base_url + "/api/tokens:refresh"
    revoked = await ica_token(client, server, headers=basic(server))
    server.revoke(revoked)
    server.lifetime = 0.2
    expired = await ica_token(client, server, headers=basic(server))
    await asyncio.sleep(0.4)
    cases = [
        {},
        bearer(make_jwt()),
        bearer(await ps_token(client, server)),
        bearer(revoked),
        bearer(expired),
        {"X-API-Key": server.api_key},
    ]
    for headers in cases:
        status, ctype, body, _ = await call(client, "POST", url, headers=headers)
        assert_problem(status, ctype, body, 401)


async def test_literal_colon_paths_are_routed(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """`tokens:refresh` paths reach the refresh endpoints, sent literally or as %3A."""
    token = await ica_token(client, server, headers=basic(server))
    await call(client, "POST", server.ica_base_url + "/api/tokens:refresh", headers=bearer(token))
    assert server.requests[-1].endpoint == "ica.refresh"
    assert server.requests[-1].path == "/ica/rest/api/tokens:refresh"
    encoded = URL(server.ica_base_url + "/api/tokens%3Arefresh", encoded=True)
    status, _, _, _ = await call(client, "POST", encoded, headers=bearer(token))
    assert status == 200
    assert server.requests[-1].endpoint == "ica.refresh"
    assert server.requests[-1].path == "/ica/rest/api/tokens%3Arefresh"
    await call(
        client,
        "POST",
        server.base_url + "/v1/tokens:refresh",
        json={"access_token": "x"},
        headers=bearer(token),
    )
    assert server.requests[-1].endpoint == "console.refresh"
    assert server.requests[-1].path == "/v1/tokens:refresh"
    assert server.counts["resource"] == 0


# -- console v1 create --------------------------------------------------------------------


async def test_console_create_jwt_with_all_parameters(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """POST /v1/tokens answers 201 TokenResponse; query parameters become claims."""
    params = {
        "clientId": "my-app",
        "data": "meta",
        "scopes": "GDS.FILES.READ,BSSH.RUNS.READ",
        "cwid": "wg-1",
        "cid": "project-9",
        "returnSessionToken": "false",
    }
    answer = await console_token(client, server, params=params)
    assert set(answer) == {"access_token", "token_type"}
    assert answer["token_type"] == "Bearer"
    claims = claims_of(answer["access_token"])
    assert claims["azp"] == "my-app"
    assert claims["session"] == "meta"
    assert claims["scopes"] == ["GDS.FILES.READ", "BSSH.RUNS.READ"]
    assert (claims["cwid"], claims["cid"]) == ("wg-1", "project-9")
    assert ("scopes", "GDS.FILES.READ,BSSH.RUNS.READ") in server.requests[-1].query


async def test_console_create_credentials(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Obsolete api_key query, Basic, bearer JWT (with X-API-Key) and psToken all work."""
    await console_token(client, server, headers={}, params={"api_key": server.api_key})
    await console_token(client, server, headers=basic(server))
    personal = (await console_token(client, server))["access_token"]
    headers = {"X-API-Key": server.api_key, **bearer(personal)}
    scoped = await console_token(client, server, headers=headers, params={"cid": "p1"})
    assert claims_of(scoped["access_token"])["sub"] == claims_of(personal)["sub"]
    await console_token(client, server, headers=bearer(await ps_token(client, server)))


async def test_console_create_errors(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """Bad credentials 401, bad parameters 400, a foreign domain 403: ErrorResponse JSON."""
    url = server.base_url + "/v1/tokens"
    key = {"X-API-Key": server.api_key}
    cases: list[tuple[dict[str, str], Any, int]] = [
        ({}, {}, 401),
        ({"X-API-Key": "wrong"}, {}, 401),
        ({}, {"api_key": "wrong"}, 401),
        (bearer(make_jwt()), {}, 401),
        (key, {"returnSessionToken": "yes"}, 400),
        (key, {"returnSessionToken": "1"}, 400),
        (key, [("scopes", "A"), ("scopes", "B")], 400),
        (key, {"domain": "elsewhere"}, 403),
    ]
    for headers, params, expected in cases:
        status, ctype, body, _ = await call(client, "POST", url, headers=headers, params=params)
        assert_error(status, ctype, body, expected)
    assert server.statuses["console.create", 401] == 4


async def test_console_create_domain_selects_tenant(client: aiohttp.ClientSession) -> None:
    """`domain` picks one of the user's tenants for the JWT."""
    async with LocalIcaServer(tenants=("alpha", "beta")) as server:
        answer = await console_token(client, server, params={"domain": "beta"})
        assert claims_of(answer["access_token"])["tns"] == "beta"


async def test_console_create_ps_token(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """returnSessionToken=true answers an opaque psToken, token_type psToken."""
    answer = await console_token(client, server, params={"returnSessionToken": "true"})
    assert answer["token_type"] == "psToken"
    assert answer["access_token"].startswith("ps.")
    assert answer["access_token"].count(".") == 1  # not a JWT


# -- console v1 details -------------------------------------------------------------------


async def test_console_details(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """GET /v1/tokens/details answers TokenDetailResponse for a JWT and for a psToken."""
    token = (await console_token(client, server, params={"cwid": "wg-7"}))["access_token"]
    url = server.base_url + "/v1/tokens/details"
    status, ctype, body, _ = await call(client, "GET", url, headers=bearer(token))
    assert (status, ctype) == (200, "application/json")
    details = json.loads(body)
    assert set(details) == {"uid", "name", "username", "currentWorkgroup", "tid", "acls", "domain"}
    assert set(details["currentWorkgroup"]) == {"id", "name", "description"}
    assert set(details["domain"]) == {"id", "name"}
    assert details["currentWorkgroup"]["id"] == "wg-7"
    assert details["username"] == server.username
    claims = claims_of(token)
    assert (details["uid"], details["tid"]) == (claims["sub"], claims["tid"])
    assert details["domain"]["name"] == "test-tenant"
    assert all(isinstance(acl, str) for acl in details["acls"])
    ps = await ps_token(client, server)
    status, _, body, _ = await call(client, "GET", url, headers=bearer(ps))
    assert status == 200
    assert json.loads(body)["uid"] == claims["sub"]


async def test_console_details_401_has_empty_body(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Without valid Bearer or Basic credentials (an API key alone is none), details answers
    401 with no body (the spec has no schema)."""
    url = server.base_url + "/v1/tokens/details"
    server.lifetime = 0.2
    expired = await ica_token(client, server, headers=basic(server))
    await asyncio.sleep(0.4)
    cases = [
        {},
        bearer("ps.unknown"),
        bearer(make_jwt()),
        bearer(expired),
        basic(server, "wrong-pw-1"),
        {"X-API-Key": server.api_key},
    ]
    for headers in cases:
        status, _, body, _ = await call(client, "GET", url, headers=headers)
        assert (status, body) == (401, b"")


# -- console v1 refresh and psToken sessions ----------------------------------------------


async def test_ps_session_expires_unless_refreshed(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A refresh extends the session by session_lifetime; without one it ends."""
    server.session_lifetime = 0.6
    ps = await ps_token(client, server)
    url = server.base_url + "/v1/tokens:refresh"
    details = server.base_url + "/v1/tokens/details"
    await asyncio.sleep(0.35)
    status, ctype, body, _ = await call(
        client, "POST", url, json={"access_token": ps}, headers=bearer(ps)
    )
    assert (status, ctype) == (201, "application/json")
    assert json.loads(body) == {"access_token": ps, "token_type": "psToken"}
    await asyncio.sleep(0.35)  # past the first 0.6 s, within the extension
    assert (await call(client, "GET", details, headers=bearer(ps)))[0] == 200
    await asyncio.sleep(0.5)  # past the extension
    status, ctype, body, _ = await call(
        client, "POST", url, json={"access_token": ps}, headers=bearer(ps)
    )
    assert assert_error(status, ctype, body, 401)["message"] == NO_REFRESH
    status, ctype, body, _ = await call(
        client, "POST", url, json={"access_token": ps}, headers=basic(server)
    )
    assert assert_error(status, ctype, body, 401)["message"] == NO_REFRESH
    assert (await call(client, "GET", details, headers=bearer(ps)))[0] == 401


async def test_ps_token_rotation(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """With rotate_ps_tokens, refresh answers a new psToken and the old one dies."""
    server.rotate_ps_tokens = True
    old = await ps_token(client, server)
    url = server.base_url + "/v1/tokens:refresh"
    status, _, body, _ = await call(
        client, "POST", url, json={"access_token": old}, headers=bearer(old)
    )
    assert status == 201
    new = json.loads(body)["access_token"]
    assert new != old
    assert new.startswith("ps.")
    status, ctype, body, _ = await call(
        client, "POST", url, json={"access_token": old}, headers=bearer(new)
    )
    assert assert_error(status, ctype, body, 401)["message"] == NO_REFRESH
    await ica_token(client, server, headers=bearer(new))


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json-patch+json", "text/json", "application/vnd.x+json"],
)
async def test_console_refresh_content_types(
    server: LocalIcaServer, client: aiohttp.ClientSession, content_type: str
) -> None:
    """The refresh body is accepted in every content type the spec lists."""
    ps = await ps_token(client, server)
    data = json.dumps({"access_token": ps}).encode()
    status, _, _, _ = await call(
        client,
        "POST",
        server.base_url + "/v1/tokens:refresh",
        data=data,
        headers={"Content-Type": content_type, **bearer(ps)},
    )
    assert status == 201


async def test_console_refresh_bad_bodies(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Authenticated, malformed bodies are 400, a non-JSON content type 415, unknown tokens 401."""
    url = server.base_url + "/v1/tokens:refresh"
    json_type = {"Content-Type": "application/json", **basic(server)}
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (b"{not json", json_type, 400),
        (b'{"token": "x"}', json_type, 400),
        (b'["x"]', json_type, 400),
        (b'{"access_token": "x"}', {"Content-Type": "text/plain", **basic(server)}, 415),
        (b'{"access_token": "ps.unknown"}', json_type, 401),
    ]
    for data, headers, expected in cases:
        status, ctype, body, _ = await call(client, "POST", url, data=data, headers=headers)
        assert_error(status, ctype, body, expected)


# -- revoke -------------------------------------------------------------------------------


async def test_revoke_ps_token(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """DELETE /v1/tokens with a psToken answers 204; the session is dead everywhere."""
    ps = await ps_token(client, server)
    status, ctype, body, _ = await call(
        client,
        "DELETE",
        server.base_url + "/v1/tokens",
        json={"access_token": ps},
        headers=bearer(ps),
    )
    assert (status, ctype, body) == (204, None, b"")
    refresh = await call(
        client,
        "POST",
        server.base_url + "/v1/tokens:refresh",
        json={"access_token": ps},
        headers=basic(server),
    )
    assert refresh[0] == 401
    mint = await call(client, "POST", server.ica_base_url + "/api/tokens", headers=bearer(ps))
    assert mint[0] == 401


async def test_revoke_jwt(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """A revoked JWT fails on the resource, refresh, details and console create."""
    token = await ica_token(client, server, headers=basic(server))
    assert (await call(client, "GET", server.resource_url, headers=bearer(token)))[0] == 200
    status, _, _, _ = await call(
        client,
        "DELETE",
        server.base_url + "/v1/tokens",
        json={"access_token": token},
        headers=bearer(token),
    )
    assert status == 204
    for method, url in [
        ("GET", server.resource_url),
        ("POST", server.ica_base_url + "/api/tokens:refresh"),
        ("GET", server.base_url + "/v1/tokens/details"),
        ("POST", server.base_url + "/v1/tokens"),
    ]:
        assert (await call(client, method, url, headers=bearer(token)))[0] == 401


async def test_revoke_malformed_and_server_revoke(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A malformed revoke body is 400; LocalIcaServer.revoke works like the endpoint."""
    url = server.base_url + "/v1/tokens"
    status, ctype, body, _ = await call(
        client, "DELETE", url, json={"nope": 1}, headers=basic(server)
    )
    assert_error(status, ctype, body, 400)
    token = await ica_token(client, server)
    server.revoke(token)
    server.revoke("not-a-token-at-all")  # ignored
    assert (await call(client, "GET", server.resource_url, headers=bearer(token)))[0] == 401


# -- protected resource -------------------------------------------------------------------


async def test_resource_accepts_valid_jwt(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """The resource answers 200 JSON for a valid JWT, and reads any request body."""
    token = await ica_token(client, server)
    status, ctype, body, _ = await call(client, "GET", server.resource_url, headers=bearer(token))
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body)["ok"] is True
    assert json.loads(body)["path"] == "/ica/rest/api/projects"
    url = server.ica_base_url + "/api/projects/p1/data"
    status, _, body, _ = await call(client, "PUT", url, headers=bearer(token), data=b"x" * 1000)
    assert (status, json.loads(body)["read"]) == (200, 1000)
    status, _, _, _ = await call(
        client, "POST", server.base_url + "/v1/files", headers=bearer(token)
    )
    assert status == 200
    assert server.counts["resource"] == 3


async def test_resource_refusals(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """Missing, foreign, psToken and expired bearers get 401 (Problem on v2, ErrorResponse v1)."""
    server.lifetime = 0.2
    expired = await ica_token(client, server)
    await asyncio.sleep(0.4)
    ps = await ps_token(client, server)
    for headers in ({}, bearer(make_jwt()), bearer(ps), bearer(expired), basic(server)):
        status, ctype, body, _ = await call(client, "GET", server.resource_url, headers=headers)
        assert_problem(status, ctype, body, 401)
    status, ctype, body, _ = await call(client, "GET", server.base_url + "/v1/files")
    assert_error(status, ctype, body, 401)


async def test_resource_honours_nbf_delay(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A JWT with nbf = iat + nbf_delay is refused until nbf, then accepted."""
    server.nbf_delay = 0.4
    token = await ica_token(client, server)
    claims = claims_of(token)
    assert claims["nbf"] == pytest.approx(claims["iat"] + 0.4, abs=0.002)
    assert (await call(client, "GET", server.resource_url, headers=bearer(token)))[0] == 401
    await asyncio.sleep(0.6)
    assert (await call(client, "GET", server.resource_url, headers=bearer(token)))[0] == 200


async def test_resource_clock_lag(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """A lagging resource clock refuses a fresh JWT (nbf) until the lag has passed."""
    server.resource_clock_lag = 0.4
    token = await ica_token(client, server)
    assert (await call(client, "GET", server.resource_url, headers=bearer(token)))[0] == 401
    await asyncio.sleep(0.6)
    assert (await call(client, "GET", server.resource_url, headers=bearer(token)))[0] == 200
    server.resource_clock_lag = -10.0  # a resource clock ahead: the token looks expired
    server.lifetime = 5.0
    short = await ica_token(client, server)
    assert (await call(client, "GET", server.resource_url, headers=bearer(short)))[0] == 401


async def test_redirect(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """GET /redirect?to= answers 302 to the given absolute URL; a bad target is 400."""
    target = "http://127.0.0.2:9/elsewhere"
    status, _, _, resp = await call(
        client,
        "GET",
        server.base_url + "/redirect",
        params={"to": target},
        allow_redirects=False,
    )
    assert (status, resp.headers["Location"]) == (302, target)
    status, _, _, _ = await call(client, "GET", server.base_url + "/redirect?to=/relative")
    assert status == 400
    assert server.counts["redirect"] == 2


async def test_unknown_paths_and_methods(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Unknown paths are 404 and wrong methods on token paths 405 with Allow ("other")."""
    status, _, _, _ = await call(client, "GET", server.base_url + "/nowhere")
    assert status == 404
    status, ctype, body, resp = await call(client, "GET", server.ica_base_url + "/api/tokens")
    assert_problem(status, ctype, body, 405)
    assert resp.headers["Allow"] == "POST"
    status, _, _, resp = await call(client, "PUT", server.base_url + "/v1/tokens")
    assert (status, resp.headers["Allow"]) == (405, "DELETE, POST")
    assert server.counts["other"] == 3


# -- clock, latency -----------------------------------------------------------------------


async def test_clock_offset_shows_in_date_and_iat(client: aiohttp.ClientSession) -> None:
    """A skewed server clock shows in the Date header of every answer and in iat."""
    async with LocalIcaServer(clock_offset=7200.0) as server:
        _, _, body, resp = await call(
            client,
            "POST",
            server.ica_base_url + "/api/tokens",
            headers={"X-API-Key": server.api_key},
        )
        date = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
        assert date == pytest.approx(time.time() + 7200, abs=2.0)
        assert claims_of(json.loads(body)["token"])["iat"] == pytest.approx(
            time.time() + 7200, abs=1.0
        )
        assert server.now() == pytest.approx(time.time() + 7200, abs=0.1)
        for method, path in (("GET", "/v1/tokens/details"), ("DELETE", "/v1/tokens")):
            _, _, _, resp = await call(client, method, server.base_url + path)
            date = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
            assert date == pytest.approx(time.time() + 7200, abs=2.0)
            assert resp.headers["Date"].endswith(" GMT")


async def test_latency_delays_token_endpoints_only(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """`latency` delays the token endpoints, not the resource."""
    token = await ica_token(client, server)
    server.latency = 0.5
    start = time.monotonic()
    await ica_token(client, server)
    assert time.monotonic() - start >= 0.5
    start = time.monotonic()
    await call(client, "GET", server.resource_url, headers=bearer(token))
    assert time.monotonic() - start < 0.5


# -- faults -------------------------------------------------------------------------------


async def test_status_fault_with_retry_after(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A 429 fault answers once in the endpoint's error format, with Retry-After."""
    fault = server.inject("ica.create", status=429, retry_after="2")
    url = server.ica_base_url + "/api/tokens"
    key = {"X-API-Key": server.api_key}
    status, ctype, body, resp = await call(client, "POST", url, headers=key)
    assert assert_problem(status, ctype, body, 429)["title"].startswith("ICA_API_429")
    assert resp.headers["Retry-After"] == "2"
    assert (await call(client, "POST", url, headers=key))[0] == 200
    assert (fault.hits, fault.remaining, fault.active) == (1, 0, False)
    server.inject("console.create", status=429, retry_after="3")
    status, ctype, body, resp = await call(client, "POST", server.base_url + "/v1/tokens")
    assert assert_error(status, ctype, body, 429)["code"] == "TooManyRequests"
    assert resp.headers["Retry-After"] == "3"
    assert server.statuses["ica.create", 429] == 1
    assert server.counts["ica.create"] == 2


async def test_star_fault_covers_token_endpoints_only(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A "*" fault hits any token endpoint but never the resource."""
    token = await ica_token(client, server)
    server.inject("*", status=500, times=2)
    assert (await call(client, "GET", server.resource_url, headers=bearer(token)))[0] == 200
    assert (await call(client, "POST", server.base_url + "/v1/tokens"))[0] == 500
    assert (await call(client, "GET", server.base_url + "/v1/tokens/details"))[0] == 500
    assert (await call(client, "GET", server.base_url + "/v1/tokens/details"))[0] == 401


async def test_drop_fault(
    server: LocalIcaServer, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A dropped connection shows as a disconnect, quietly on the server side."""
    server.inject("ica.create", kind="drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(client, "POST", server.ica_base_url + "/api/tokens", headers={"X-API-Key": "k"})
    assert server.counts["ica.create"] == 1
    assert not server.statuses
    await ica_token(client, server)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_malformed_fault(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """A malformed answer has the success status and type but truncated JSON."""
    server.inject("ica.create", kind="malformed")
    status, ctype, body, _ = await call(client, "POST", server.ica_base_url + "/api/tokens")
    assert (status, ctype) == (200, V2)
    with pytest.raises(ValueError, match=r"."):
        json.loads(body)
    server.inject("console.create", kind="malformed")
    status, ctype, body, _ = await call(client, "POST", server.base_url + "/v1/tokens")
    assert (status, ctype) == (201, "application/json")
    with pytest.raises(ValueError, match=r"."):
        json.loads(body)


async def test_html_and_empty_faults(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """The html fault is a 502 gateway page; the empty fault a status with no body and no
    Content-Type (a zero-length body is no JSON, whatever the status)."""
    server.inject("ica.refresh", kind="html")
    url = server.ica_base_url + "/api/tokens:refresh"
    status, ctype, body, _ = await call(client, "POST", url)
    assert (status, ctype, body.decode()) == (502, "text/html", HTML)
    server.inject("ica.refresh", kind="empty", status=503)
    status, ctype, body, _ = await call(client, "POST", url)
    assert (status, ctype, body) == (503, None, b"")
    server.inject("resource", kind="empty", status=200)
    status, ctype, body, _ = await call(client, "GET", server.resource_url)
    assert (status, ctype, body) == (200, None, b"")
    server.inject("console.create", kind="empty", status=201)
    status, ctype, body, _ = await call(client, "POST", server.base_url + "/v1/tokens")
    assert (status, ctype, body) == (201, None, b"")


async def test_hang_fault_times_out_client(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A hanging endpoint never answers: the client's timeout fires."""
    server.inject("ica.create", kind="hang")
    start = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await call(
            client,
            "POST",
            server.ica_base_url + "/api/tokens",
            timeout=aiohttp.ClientTimeout(total=0.3),
        )
    assert time.monotonic() - start < 5.0
    assert server.counts["ica.create"] == 1


async def test_outage_until_cleared(server: LocalIcaServer, client: aiohttp.ClientSession) -> None:
    """An outage answers every request until removed; times=N hits N requests."""
    url = server.ica_base_url + "/api/tokens"
    key = {"X-API-Key": server.api_key}
    outage = server.outage("ica.create", status=503)
    for _ in range(3):
        assert (await call(client, "POST", url, headers=key))[0] == 503
    assert (outage.hits, outage.remaining) == (3, None)
    server.clear_faults()
    assert (await call(client, "POST", url, headers=key))[0] == 200
    removed = server.outage("ica.create", status=504)
    server.remove_fault(removed)
    server.inject("ica.create", status=500, times=2)
    statuses = [(await call(client, "POST", url, headers=key))[0] for _ in range(3)]
    assert statuses == [500, 500, 200]


def test_fault_validation(server: LocalIcaServer) -> None:
    """Unknown endpoints or kinds, bad statuses and times below 1 are refused."""
    with pytest.raises(ValueError, match="endpoint"):
        server.inject("ica.nope")
    with pytest.raises(ValueError, match="kind"):
        server.inject(kind="explode")
    with pytest.raises(ValueError, match="status"):
        server.inject(status=99)
    with pytest.raises(ValueError, match="times"):
        server.inject(times=0)
    with pytest.raises(ValueError, match="rates"):
        server.random_faults(endpoints=["*"], rate_5xx=0.7, rate_429=0.7)
    assert isinstance(server.inject("resource", kind="drop"), Fault)


async def run_random(seed: int, client: aiohttp.ClientSession) -> list[int]:
    """Statuses of 30 mints under random faults with this seed (-1 for a drop)."""
    async with LocalIcaServer() as server:
        server.random_faults(
            endpoints=["ica.create"], rate_5xx=0.3, rate_429=0.3, rate_drop=0.1, seed=seed
        )
        statuses = []
        for _ in range(30):
            try:
                status, _, _, resp = await call(
                    client,
                    "POST",
                    server.ica_base_url + "/api/tokens",
                    headers={"X-API-Key": server.api_key},
                )
            except aiohttp.ServerDisconnectedError:
                status = -1
            else:
                assert status != 429 or resp.headers["Retry-After"] == "1"
            statuses.append(status)
        return statuses


async def test_random_faults_are_deterministic_with_seed(client: aiohttp.ClientSession) -> None:
    """The same seed gives the same fault sequence, mixing 5xx, 429, drops and successes."""
    first = await run_random(7, client)
    assert first == await run_random(7, client)
    assert {200, 429, -1} <= set(first)
    assert any(500 <= s <= 504 for s in first)


async def test_random_faults_rates_and_off(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A rate of 1 always faults; other endpoints are untouched; clear_faults stops it."""
    server.random_faults(endpoints=["console.create"], rate_429=1.0, retry_after="5")
    url = server.base_url + "/v1/tokens"
    for _ in range(3):
        status, _, _, resp = await call(client, "POST", url)
        assert (status, resp.headers["Retry-After"]) == (429, "5")
    await ica_token(client, server)
    server.clear_faults()
    assert (await call(client, "POST", url))[0] == 401


# -- counters, request log, lifecycle -----------------------------------------------------


async def test_counts_and_request_log(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Requests are counted per endpoint and recorded verbatim; the repr hides values."""
    await ica_token(client, server, data=b"{}", params={"tenant": "test-tenant"})
    (recorded,) = server.requests
    assert isinstance(recorded, RecordedRequest)
    assert recorded.endpoint == "ica.create"
    assert (recorded.method, recorded.path) == ("POST", "/ica/rest/api/tokens")
    assert recorded.query == (("tenant", "test-tenant"),)
    assert recorded.headers["x-api-key"] == server.api_key
    assert recorded.body == b"{}"
    assert recorded.at == pytest.approx(server.now(), abs=1.0)
    text = repr(recorded)
    assert server.api_key not in text
    assert "test-tenant" not in text
    assert "{}" not in text
    assert "X-API-Key" in text
    assert str(recorded) == text
    assert server.counts == {"ica.create": 1}
    assert server.statuses == {("ica.create", 200): 1}
    server.reset_counters()
    assert (server.counts, server.statuses, server.requests) == ({}, {}, deque())


async def test_no_secret_in_logs_or_repr(
    server: LocalIcaServer, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Logs and reprs never contain the API key, the password or any token."""
    caplog.set_level(logging.DEBUG)
    token = await ica_token(client, server, headers=basic(server))
    ps = await ps_token(client, server)
    await call(client, "POST", server.base_url + "/v1/tokens", params={"api_key": server.api_key})
    await call(client, "POST", server.ica_base_url + "/api/tokens", headers=basic(server, "pw9"))
    await call(client, "GET", server.resource_url, headers=bearer(token))
    secrets = [server.api_key, server.password, token, ps, "pw9"]
    assert "ica.create POST -> 200" in caplog.text
    text = caplog.text + repr(server) + repr(server.requests)
    assert not [s for s in secrets if s in text]


async def test_lifecycle_errors() -> None:
    """base_url needs a started server; start runs once; close is idempotent; loopback only."""
    server = LocalIcaServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.base_url
    assert "not started" in repr(server)
    await server.start()
    with pytest.raises(RuntimeError, match="once"):
        await server.start()
    assert server.resource_url == server.base_url + "/ica/rest/api/projects"
    assert server.base_url.startswith("http://127.0.0.1:")
    await server.close()
    await server.close()
    with pytest.raises(ValueError, match="loopback"):
        LocalIcaServer(host="0.0.0.0")
    with pytest.raises(ValueError, match="tenants"):
        LocalIcaServer(tenants=())
    with pytest.raises(ValueError, match="lifetime"):
        LocalIcaServer(lifetime=0)


async def test_close_with_hanging_request_is_prompt(client: aiohttp.ClientSession) -> None:
    """close() with a hanging request in flight returns promptly and leaves no task behind."""
    server = LocalIcaServer(latency=30.0)
    await server.start()
    server.inject("console.details", kind="hang")
    hanging = asyncio.create_task(call(client, "GET", server.base_url + "/v1/tokens/details"))
    slow = asyncio.create_task(call(client, "POST", server.ica_base_url + "/api/tokens"))
    for _ in range(500):  # until both requests are in the server (bounded: 5 s)
        if server.counts.total() == 2:
            break
        await asyncio.sleep(0.01)
    assert server.counts == {"console.details": 1, "ica.create": 1}
    start = time.monotonic()
    await server.close()
    assert time.monotonic() - start < 2.0
    for task in (hanging, slow):
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await task
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []


async def test_request_log_is_bounded(servers: Any) -> None:
    """The request log keeps the newest max_recorded requests; the counters count all."""
    srv = await servers(max_recorded=3)
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(srv.resource_url) as r:
                assert r.status == 401
    assert len(srv.requests) == 3
    assert srv.counts["resource"] == 5


# -- what real clients send: booleans, authorization on every console endpoint -----------


def basic_key(key: str) -> dict[str, str]:
    """The console's "Basic with apiKey": the key as user-id, an empty password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.mark.parametrize(
    ("value", "token_type"),
    [
        ("true", "psToken"),
        ("True", "psToken"),
        ("TRUE", "psToken"),
        ("false", "Bearer"),
        ("False", "Bearer"),
        ("fAlSe", "Bearer"),
    ],
)
async def test_console_create_reads_return_session_token_in_any_case(
    server: LocalIcaServer, client: aiohttp.ClientSession, value: str, token_type: str
) -> None:
    """returnSessionToken is a boolean in any letter case (libconsole sends Python's True)."""
    answer = await console_token(client, server, params={"returnSessionToken": value})
    assert answer["token_type"] == token_type
    assert answer["access_token"].startswith("ps.") == (token_type == "psToken")


CONSOLE_BODY_ENDPOINTS = [
    pytest.param("POST", "/v1/tokens:refresh", id="refresh"),
    pytest.param("DELETE", "/v1/tokens", id="revoke"),
]


@pytest.mark.parametrize(("method", "path"), CONSOLE_BODY_ENDPOINTS)
async def test_console_refresh_and_revoke_refuse_missing_or_wrong_authorization(
    server: LocalIcaServer, client: aiohttp.ClientSession, method: str, path: str
) -> None:
    """Console refresh and revoke without valid Bearer or Basic credentials are a 401
    ErrorResponse, and the token in the body is left as it was."""
    ps = await ps_token(client, server)
    cases = [
        {},
        bearer("garbage"),
        bearer(make_jwt()),
        bearer("ps.unknown"),
        {"Authorization": "Bearer "},
        {"Authorization": "Digest abc"},
        basic(server, "wrong-pw-2"),
        basic_key("test-apikey-wrong"),
        {"X-API-Key": server.api_key},  # not a scheme of these endpoints
    ]
    for headers in cases:
        status, ctype, body, _ = await call(
            client, method, server.base_url + path, json={"access_token": ps}, headers=headers
        )
        assert_error(status, ctype, body, 401)
    assert server.statuses[f"console.{'refresh' if method == 'POST' else 'revoke'}", 401] == 9
    details = server.base_url + "/v1/tokens/details"
    assert (await call(client, "GET", details, headers=bearer(ps)))[0] == 200


async def test_console_authorization_is_checked_before_the_body(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Without credentials, a malformed or non-JSON body is still a 401, not a 400 or 415."""
    for method, path in (("POST", "/v1/tokens:refresh"), ("DELETE", "/v1/tokens")):
        for data, ctype in ((b"{not json", "application/json"), (b"x", "text/plain")):
            status, got, body, _ = await call(
                client, method, server.base_url + path, data=data, headers={"Content-Type": ctype}
            )
            assert_error(status, got, body, 401)


async def test_console_refresh_and_revoke_accept_every_console_scheme(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A bearer psToken or JWT, Basic, and Basic with apiKey all authorize refresh and revoke."""
    jwt_token = (await console_token(client, server))["access_token"]
    schemes = {
        "ps": bearer(await ps_token(client, server)),
        "jwt": bearer(jwt_token),
        "basic": basic(server),
        "basic-key": basic_key(server.api_key),
    }
    refresh = server.base_url + "/v1/tokens:refresh"
    revoke = server.base_url + "/v1/tokens"
    for name, headers in schemes.items():
        ps = await ps_token(client, server)
        status, ctype, body, _ = await call(
            client, "POST", refresh, json={"access_token": ps}, headers=headers
        )
        assert (status, ctype, name) == (201, "application/json", name)
        assert json.loads(body) == {"access_token": ps, "token_type": "psToken"}
        status, _, _, _ = await call(
            client, "DELETE", revoke, json={"access_token": ps}, headers=headers
        )
        assert (status, name) == (204, name)
        status, _, _, _ = await call(
            client, "POST", refresh, json={"access_token": ps}, headers=basic(server)
        )
        assert (status, name) == (401, name)  # revoked
    status, _, _, _ = await call(
        client, "DELETE", revoke, json={"access_token": jwt_token}, headers=bearer(jwt_token)
    )
    assert status == 204
    assert (await call(client, "GET", server.resource_url, headers=bearer(jwt_token)))[0] == 401


# -- tenants and the console's Basic with apiKey ------------------------------------------


async def test_ica_create_keeps_a_bound_credential_in_its_tenant(
    client: aiohttp.ClientSession,
) -> None:
    """An API key or psToken with `tenant` naming another of the user's tenants is a 403
    Problem (no silent mint for the key's own tenant); its own tenant is fine."""
    async with LocalIcaServer(tenants=("alpha", "beta")) as server:
        url = server.ica_base_url + "/api/tokens"
        key = {"X-API-Key": server.api_key}
        status, ctype, body, _ = await call(
            client, "POST", url, headers=key, params={"tenant": "beta"}
        )
        assert assert_problem(status, ctype, body, 403)["title"] == "ICA_SEC_003: Forbidden"
        status, ctype, body, _ = await call(
            client, "POST", url, headers=key, params={"tenant": "gamma"}
        )
        assert_problem(status, ctype, body, 400)
        own = await ica_token(client, server, params={"tenant": "alpha"})
        assert claims_of(own)["tns"] == "alpha"
        ps = await ps_token(client, server)  # the key's tenant: alpha
        status, ctype, body, _ = await call(
            client, "POST", url, headers=bearer(ps), params={"tenant": "beta"}
        )
        assert_problem(status, ctype, body, 403)
        from_ps = await ica_token(client, server, headers=bearer(ps), params={"tenant": "alpha"})
        assert claims_of(from_ps)["tns"] == "alpha"
        assert server.statuses["ica.create", 200] == 2


async def test_console_basic_with_api_key(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """Console "Basic with apiKey" (Basic base64(<key>:)) mints like X-API-Key, a JWT that
    cannot be refreshed, or a psToken; other encodings, a wrong key and ICA v2 get 401."""
    answer = await console_token(client, server, headers=basic_key(server.api_key))
    assert answer["token_type"] == "Bearer"
    assert claims_of(answer["access_token"])["tns"] == "test-tenant"
    status, ctype, body, _ = await call(
        client,
        "POST",
        server.ica_base_url + "/api/tokens:refresh",
        headers=bearer(answer["access_token"]),
    )
    assert assert_problem(status, ctype, body, 400)["detail"] == API_KEY_REFRESH
    ps = await console_token(
        client, server, headers=basic_key(server.api_key), params={"returnSessionToken": "true"}
    )
    assert ps["token_type"] == "psToken"
    url = server.base_url + "/v1/tokens"
    for raw in (f":{server.api_key}", f"{server.api_key}:x", "test-apikey-wrong:"):
        headers = {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}
        status, ctype, body, _ = await call(client, "POST", url, headers=headers)
        assert_error(status, ctype, body, 401)
        assert server.api_key.encode() not in body
    status, ctype, body, _ = await call(
        client, "POST", server.ica_base_url + "/api/tokens", headers=basic_key(server.api_key)
    )
    assert_problem(status, ctype, body, 401)  # ICA v2 documents Basic as email:password only


async def test_console_details_with_basic(client: aiohttp.ClientSession) -> None:
    """Details takes Basic (the spec lists it): username:password describes the user in the
    first tenant, Basic with apiKey the key's user and tenant."""
    async with LocalIcaServer(tenants=("alpha", "beta")) as server:
        url = server.base_url + "/v1/tokens/details"
        sub = claims_of((await console_token(client, server))["access_token"])["sub"]
        for headers in (basic(server), basic_key(server.api_key)):
            status, ctype, body, _ = await call(client, "GET", url, headers=headers)
            assert (status, ctype) == (200, "application/json")
            details = json.loads(body)
            assert (details["uid"], details["domain"]["name"]) == (sub, "alpha")
            assert details["username"] == server.username


# -- bounded registries -------------------------------------------------------------------


class FakeClock:
    """A settable clock."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_registry_sweeps_what_has_expired() -> None:
    """JWTs are forgotten `retention` after exp, and ended sessions, once the registries have
    doubled; an expired JWT is still refused as expired, a JWT within retention still known."""
    clock = FakeClock()
    registry = Registry(clock=clock, tenants=["t"], retention=lambda: 10.0)
    grant = Grant(Identity("user", "t"), refreshable=True)
    old = [registry.mint(grant, lifetime=1.0, nbf_delay=0.0) for _ in range(600)]
    ps_old = [registry.open_session(grant, 1.0) for _ in range(400)]
    revoked = old[0]
    registry.revoke(revoked)
    clock.now += 5.0  # past exp and the sessions' end, within retention
    assert registry.check_jwt(old[1], lag=5.0) == grant  # a lagging resource still knows it
    for _ in range(24):  # the 1024th entry sweeps: sessions go, JWTs within retention stay
        registry.mint(grant, lifetime=1000.0, nbf_delay=0.0)
    assert (len(registry.issued), len(registry.sessions)) == (624, 0)
    clock.now += 10.0  # past retention
    for _ in range(1024):
        registry.mint(grant, lifetime=1000.0, nbf_delay=0.0)
    assert len(registry.issued) < 1100
    for token, message in ((old[1], "expired"), (revoked, "expired")):
        with pytest.raises(Refusal, match=message):
            registry.check_jwt(token)
    with pytest.raises(Refusal, match="session has ended"):
        registry.check_session(ps_old[0])


async def test_registries_keep_the_newest_max_tokens_and_counters_stay_exact(
    servers: Any,
) -> None:
    """With max_tokens=3 the oldest JWTs and psToken sessions are forgotten (refused as
    unknown), the newest work, and counts and statuses still count every request."""
    server = await servers(max_tokens=3)
    async with aiohttp.ClientSession() as client:
        tokens = [await ica_token(client, server, headers=basic(server)) for _ in range(5)]
        sessions = [await ps_token(client, server) for _ in range(5)]
        resource = [
            (await call(client, "GET", server.resource_url, headers=bearer(t)))[0] for t in tokens
        ]
        assert resource == [401, 401, 200, 200, 200]
        minted = [
            (await call(client, "POST", server.ica_base_url + "/api/tokens", headers=bearer(p)))[0]
            for p in sessions
        ]
        assert minted == [401, 401, 200, 200, 200]
    # The 3 JWTs minted from sessions pushed out the older ones; counters count everything.
    assert server.counts == {"ica.create": 10, "console.create": 5, "resource": 5}
    assert server.statuses["ica.create", 200] == 8
    assert server.statuses["ica.create", 401] == 2
    assert server.statuses["resource", 401] == 2


def test_max_tokens_must_be_positive() -> None:
    """max_tokens below 1 is a ValueError."""
    with pytest.raises(ValueError, match="max_tokens"):
        LocalIcaServer(max_tokens=0)


# -- our own client against these answers (the documented behaviours) ---------------------


async def test_our_console_client_details_take_basic_not_a_key(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """get_token_details works with BasicAuth (and bearer tokens); an ApiKey gets 401."""
    api = ConsoleTokenApi(client, server.base_url)
    details = await api.get_token_details(BasicAuth(server.username, server.password))
    assert details.username == server.username
    with pytest.raises(UnauthorizedError) as info:
        await api.get_token_details(ApiKey(server.api_key))
    assert info.value.problem is None  # the spec's 401 of details has no body
    assert server.api_key not in str(info.value)


async def test_api_error_problem_holds_the_console_error_response(
    server: LocalIcaServer, client: aiohttp.ClientSession
) -> None:
    """A refused console call's ApiError.problem is the decoded v1 ErrorResponse."""
    api = ConsoleTokenApi(client, server.base_url)
    with pytest.raises(UnauthorizedError) as info:
        await api.refresh_token("ps.unknown-session")
    problem = info.value.problem
    assert isinstance(problem, ErrorResponse)
    assert (problem.code, problem.message) == ("Unauthorized", NO_REFRESH)
