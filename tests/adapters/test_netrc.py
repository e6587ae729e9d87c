"""A `.netrc` entry for the ICA host (what `trust_env=True` reads) never reaches a token request
and never displaces the bearer at the manager's origin."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp
import pytest

from aioica_auth import BasicAuth, Jwt, TokenManager
from aioica_auth.testing import LocalIcaServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "netrc"
    path.write_text("machine 127.0.0.1 login someone-else password not-ours\n")
    path.chmod(0o600)
    monkeypatch.setenv("NETRC", str(path))
    return path


def basic_of(request_headers: object) -> str | None:
    value = request_headers.get("Authorization")  # type: ignore[attr-defined]
    return value if isinstance(value, str) else None


@pytest.mark.usefixtures("netrc")
async def test_a_basic_auth_mint_and_a_jwt_refresh_send_our_credential_only() -> None:
    async with LocalIcaServer(lifetime=2.0) as srv:
        async with TokenManager.for_ica(
            BasicAuth(srv.username, srv.password), base_url=srv.ica_base_url
        ) as m:
            minted = await m.token()
        async with TokenManager.for_ica(Jwt(minted.value), base_url=srv.ica_base_url) as m:
            await m.token(min_validity=1.9)  # due at once: a :refresh, the JWT its bearer
        assert srv.counts["ica.create"] == 1
        assert srv.statuses["ica.refresh", 200] >= 1
        token_requests = [r for r in srv.requests if r.endpoint.startswith("ica.")]
        sent = [basic_of(r.headers) for r in token_requests]
    assert all(s is not None and "someone-else" not in s for s in sent)
    netrc_basic = "Basic " + base64.b64encode(b"someone-else:not-ours").decode()
    assert netrc_basic not in sent


@pytest.mark.usefixtures("netrc")
async def test_the_middleware_puts_the_bearer_over_a_netrc_basic_auth() -> None:
    async with LocalIcaServer() as srv:
        manager = TokenManager.for_ica(
            BasicAuth(srv.username, srv.password), base_url=srv.ica_base_url
        )
        url = srv.ica_base_url + "/api/projects"
        async with (
            manager,
            aiohttp.ClientSession(trust_env=True, middlewares=(manager.middleware,)) as session,
            session.get(url) as response,
        ):
            assert response.status == 200
        resource = [r for r in srv.requests if r.endpoint == "resource"]
    assert resource[0].headers["Authorization"].startswith("Bearer ")
