"""Conformance with code no one here wrote: libica's generated ICA v2 `TokenApi` (a sync,
urllib3-based OpenAPI client) against our local server proves the server speaks the real wire
format, and our client decodes what libica's server-side contract promises."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from aioica_auth import Token
from aioica_auth.testing import LocalIcaServer

v2 = pytest.importorskip("libica.openapi.v2")
from libica.openapi.v2.api.token_api import TokenApi  # noqa: E402
from libica.openapi.v2.exceptions import ApiException  # noqa: E402


def _call(host: str, method: str, **config: Any) -> Any:
    configuration = v2.Configuration(host=host, **config)
    with v2.ApiClient(configuration) as client:
        return getattr(TokenApi(client), method)()


async def libica(server: LocalIcaServer, method: str, **config: Any) -> Any:
    """Run a libica call in a thread while the server keeps serving in this loop."""
    return await asyncio.to_thread(_call, server.ica_base_url, method, **config)


async def test_libica_mints_with_an_api_key(server: LocalIcaServer) -> None:
    """libica's create_jwt_token with X-API-Key gets a JWT our Token decodes (aud ica)."""
    result = await libica(server, "create_jwt_token", api_key={"ApiKeyAuth": server.api_key})
    token = Token.from_jwt(result.token)
    assert token.claims["aud"] == "ica"
    assert {"sub", "tid", "tns", "iat", "nbf", "exp"} <= set(token.claims)
    sent = next(r for r in server.requests if r.endpoint == "ica.create")
    assert sent.headers["X-API-Key"] == server.api_key
    assert "application/vnd.illumina.v3+json" in sent.headers["Accept"]


async def test_libica_mints_with_basic_auth_and_refreshes(server: LocalIcaServer) -> None:
    """libica's Basic mint, then refresh_jwt_token with the JWT, both succeed."""
    minted = await libica(
        server, "create_jwt_token", username=server.username, password=server.password
    )
    refreshed = await libica(server, "refresh_jwt_token", access_token=minted.token)
    assert (
        Token.from_jwt(refreshed.token).claims["sub"] == Token.from_jwt(minted.token).claims["sub"]
    )
    assert server.counts["ica.refresh"] == 1
    sent = next(r for r in server.requests if r.endpoint == "ica.refresh")
    assert sent.path.endswith("/api/tokens:refresh")


async def test_libica_sees_api_key_jwt_refresh_refused_as_problem(server: LocalIcaServer) -> None:
    """Refreshing an API-key JWT through libica fails with a problem+json body it can read."""
    minted = await libica(server, "create_jwt_token", api_key={"ApiKeyAuth": server.api_key})
    with pytest.raises(ApiException) as info:
        await libica(server, "refresh_jwt_token", access_token=minted.token)
    assert info.value.status == 400
    assert info.value.headers["Content-Type"].startswith("application/problem+json")
    problem = json.loads(info.value.body)
    assert {"type", "title", "status", "timestamp", "parameters"} <= set(problem)
