"""Conformance with code no one here wrote: libica 3.3's generated ICA v2 clients, `v2`
(openapi-generator's older python client) and `v3` (its pydantic one), both sync and
urllib3-based, against our local server. It proves the server speaks the real wire format, and
our client decodes what libica's server-side contract promises.

Cases, for each of `v2` and `v3`: create with an API key, with Basic without and with
`tenant`, with a psToken; refresh; and the refusals a client must be able to read (Basic
without `tenant` among several tenants, refreshing an API-key JWT).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from aioica_auth import Token
from aioica_auth.testing import LocalIcaServer

from ..support import LazyModule

if importlib.util.find_spec("libica.openapi.v3") is None:  # pragma: no cover
    pytest.skip("libica is not installed (the test extra installs it)", allow_module_level=True)
pytestmark = pytest.mark.xdist_group("libica")  # one worker imports libica, once

V3_JSON = "application/vnd.illumina.v3+json"
TWO_TENANTS = ("test-tenant", "beta")

#: Per generated client: its package and the module of its TokenApi (imported on first use).
CLIENTS: dict[str, tuple[Any, Any]] = {
    "v2": (LazyModule("libica.openapi.v2"), LazyModule("libica.openapi.v2.api.token_api")),
    "v3": (LazyModule("libica.openapi.v3"), LazyModule("libica.openapi.v3.api.token_api")),
}
CLIENT_NAMES = pytest.mark.parametrize("client", sorted(CLIENTS))


def _call(client: str, host: str, method: str, kwargs: dict[str, Any], config: Any) -> Any:
    package, token_api = CLIENTS[client]
    configuration = package.Configuration(host=host, **config)
    with package.ApiClient(configuration) as api_client:
        return getattr(token_api.TokenApi(api_client), method)(**kwargs)


async def libica(
    client: str,
    server: LocalIcaServer,
    method: str,
    kwargs: dict[str, Any] | None = None,
    **config: Any,
) -> Any:
    """Run one libica call in a thread while the server keeps serving in this loop."""
    return await asyncio.to_thread(_call, client, server.ica_base_url, method, kwargs or {}, config)


async def refused(
    client: str,
    server: LocalIcaServer,
    method: str,
    kwargs: dict[str, Any] | None = None,
    **config: Any,
) -> Any:
    """Run one libica call that must fail; return libica's exception."""
    with pytest.raises(CLIENTS[client][0].ApiException) as info:
        await libica(client, server, method, kwargs, **config)
    return info.value


def last(server: LocalIcaServer, endpoint: str) -> Any:
    """The newest recorded request of `endpoint`."""
    return next(r for r in reversed(server.requests) if r.endpoint == endpoint)


async def ps_token(server: LocalIcaServer) -> str:
    """A psToken from the console endpoint."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.base_url + "/v1/tokens",
            params={"returnSessionToken": "true"},
            headers={"X-API-Key": server.api_key},
        ) as resp,
    ):
        assert resp.status == 201
        token: str = (await resp.json())["access_token"]
        return token


def assert_problem(exc: Any, status: int) -> dict[str, Any]:
    """libica's exception carries a readable RFC 7807 Problem with `status`."""
    assert exc.status == status
    assert exc.headers["Content-Type"].startswith("application/problem+json")
    problem: dict[str, Any] = json.loads(exc.body)
    assert {"type", "title", "status", "timestamp", "parameters"} <= set(problem)
    assert problem["status"] == status
    return problem


@CLIENT_NAMES
async def test_libica_mints_with_an_api_key(client: str, server: LocalIcaServer) -> None:
    """create_jwt_token with X-API-Key gets a JWT our Token decodes (aud ica); libica sends
    only the v3 media type in Accept (what our own `_ACCEPT` comment relies on)."""
    result = await libica(
        client, server, "create_jwt_token", api_key={"ApiKeyAuth": server.api_key}
    )
    token = Token.from_jwt(result.token)
    assert token.claims["aud"] == "ica"
    assert {"sub", "tid", "tns", "iat", "nbf", "exp"} <= set(token.claims)
    sent = last(server, "ica.create")
    assert sent.headers["X-API-Key"] == server.api_key
    assert "Authorization" not in sent.headers
    assert sent.headers["Accept"] == V3_JSON


@CLIENT_NAMES
async def test_libica_mints_with_basic_without_tenant(client: str, server: LocalIcaServer) -> None:
    """Basic without `tenant`, the user having one tenant, mints a JWT for that tenant."""
    result = await libica(
        client, server, "create_jwt_token", username=server.username, password=server.password
    )
    assert Token.from_jwt(result.token).claims["tns"] == "test-tenant"
    sent = last(server, "ica.create")
    assert sent.headers["Authorization"].startswith("Basic ")
    assert sent.query == ()


@CLIENT_NAMES
async def test_libica_mints_with_basic_and_tenant(client: str, servers: Callable[..., Any]) -> None:
    """Basic with `tenant` picks that one of the user's tenants; without it, among several,
    the 400 Problem is readable by libica."""
    server = await servers(tenants=TWO_TENANTS)
    result = await libica(
        client,
        server,
        "create_jwt_token",
        {"tenant": "beta"},
        username=server.username,
        password=server.password,
    )
    assert Token.from_jwt(result.token).claims["tns"] == "beta"
    assert last(server, "ica.create").query == (("tenant", "beta"),)
    exc = await refused(
        client, server, "create_jwt_token", username=server.username, password=server.password
    )
    assert "tenant" in assert_problem(exc, 400)["detail"]


@CLIENT_NAMES
async def test_libica_mints_with_a_ps_token(client: str, server: LocalIcaServer) -> None:
    """A psToken as bearer (libica's PsTokenAuth) mints a JWT for the session's user."""
    ps = await ps_token(server)
    result = await libica(client, server, "create_jwt_token", access_token=ps)
    assert Token.from_jwt(result.token).claims["tns"] == "test-tenant"
    assert last(server, "ica.create").headers["Authorization"] == "Bearer " + ps


@CLIENT_NAMES
async def test_libica_refreshes_a_basic_jwt(client: str, server: LocalIcaServer) -> None:
    """refresh_jwt_token with a Basic-minted JWT gets a new JWT for the same user."""
    minted = await libica(
        client, server, "create_jwt_token", username=server.username, password=server.password
    )
    refreshed = await libica(client, server, "refresh_jwt_token", access_token=minted.token)
    before, after = Token.from_jwt(minted.token), Token.from_jwt(refreshed.token)
    assert after.claims["sub"] == before.claims["sub"]
    assert after.claims["jti"] != before.claims["jti"]
    sent = last(server, "ica.refresh")
    assert sent.path.endswith("/api/tokens:refresh")
    assert sent.headers["Authorization"] == "Bearer " + minted.token
    assert sent.headers["Accept"] == V3_JSON


@CLIENT_NAMES
async def test_libica_sees_api_key_jwt_refresh_refused_as_problem(
    client: str, server: LocalIcaServer
) -> None:
    """Refreshing an API-key JWT through libica fails with a problem+json body it can read."""
    minted = await libica(
        client, server, "create_jwt_token", api_key={"ApiKeyAuth": server.api_key}
    )
    exc = await refused(client, server, "refresh_jwt_token", access_token=minted.token)
    assert "API-key" in assert_problem(exc, 400)["detail"]
