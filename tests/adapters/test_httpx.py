"""The httpx auth (`manager.httpx_auth`) over real loopback HTTP with `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aioica_auth import ApiKey, TokenManager, TokenUnavailableError
from aioica_auth.testing import LocalIcaServer

from ..support import find_secret, wait_until


def ica(server: LocalIcaServer, **kw: Any) -> TokenManager:
    return TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url, **kw)


def bearers(server: LocalIcaServer, endpoint: str = "resource") -> list[str | None]:
    return [r.headers.get("Authorization") for r in server.requests if r.endpoint == endpoint]


LIMITS = {"default pool": httpx.Limits(), "5 connections": httpx.Limits(max_connections=5)}


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
async def test_storm_over_three_lifetimes_with_lag_and_revocations(
    servers: Any, limits: httpx.Limits, caplog: pytest.LogCaptureFixture
) -> None:
    """200 tasks (20 requests in flight) for three 2 s token lifetimes, a resource whose
    clock lags 0.3 s and that revokes the token in use once per lifetime: no 401 reaches a
    task, and mints stay at the ideal (one per refresh interval, L/2) plus one per
    revocation, plus a small margin."""
    lifetime, duration = 2.0, 6.0
    srv = await servers(lifetime=lifetime, resource_clock_lag=0.3)
    statuses: dict[int, int] = {}
    revoked: list[str] = []
    m = ica(srv)
    timeout = httpx.Timeout(30.0)
    async with m, httpx.AsyncClient(auth=m.httpx_auth, limits=limits, timeout=timeout) as http:
        await m.headers()
        await asyncio.sleep(0.4)  # the first token: past the lag before the load starts
        srv.reset_counters()
        start = time.monotonic()
        end = start + duration

        # In-process server and client share one loop (and, in CI, coverage): bounding the
        # requests in flight keeps each one well inside a token's life on a loaded machine.
        in_flight = asyncio.Semaphore(20)

        async def worker() -> None:
            while time.monotonic() < end:
                async with in_flight:
                    r = await http.get(srv.resource_url)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                await asyncio.sleep(0.01)

        def accepted() -> bool:
            lease = m._lease
            return lease is not None and lease.accepted

        async def revoker() -> None:
            for k in range(3):  # at 1 s, 3 s and 5 s: once per lifetime, within the load
                await asyncio.sleep(max(0.0, start + lifetime * k + 1.0 - time.monotonic()))
                await wait_until(accepted, limit=max(0.0, end - time.monotonic()))
                lease = m._lease
                assert lease is not None
                srv.revoke(lease.token.value)  # a token in use, that the resource accepted
                revoked.append(lease.token.value)

        await asyncio.gather(revoker(), *(worker() for _ in range(200)))
        elapsed = time.monotonic() - start
        mints = srv.counts["ica.create"]
        invalidations = m.stats.invalidations
    print(f"\nhttpx storm: statuses {statuses}, {mints} mints in {elapsed:.1f} s")
    back = [r.getMessage() for r in caplog.records if "goes back to the caller" in r.getMessage()]
    assert statuses.get(401, 0) == 0, (statuses, back)
    assert sum(statuses.values()) > 200
    assert len(revoked) == 3
    assert invalidations <= 3  # only revoked tokens (a superseded one is resent instead)
    ideal = elapsed / (lifetime / 2) + 1
    assert mints <= ideal + len(revoked) + 3


async def test_cross_origin_redirect_gets_no_bearer(servers: Any) -> None:
    """A followed redirect to another origin carries no bearer, and that origin's 401 is
    given to the caller without invalidating the token; a direct request elsewhere gets no
    bearer either; a same-origin redirect keeps it."""
    ours, other = await servers(), await servers()
    m = ica(ours)
    async with m, httpx.AsyncClient(auth=m.httpx_auth, follow_redirects=True) as http:
        r = await http.get(f"{ours.base_url}/redirect", params={"to": other.resource_url})
        assert r.status_code == 401  # the other origin saw no bearer
        assert (await http.get(other.resource_url)).status_code == 401
        r = await http.get(f"{ours.base_url}/redirect", params={"to": ours.resource_url})
        assert r.status_code == 200
        invalidations = m.stats.invalidations
    assert bearers(other) == [None, None]
    assert bearers(ours)[0] is not None
    assert bearers(ours, "redirect")[0] is not None
    assert invalidations == 0
    assert ours.counts["ica.create"] == 1


async def test_each_hop_followed_by_hand_is_checked_for_its_origin(servers: Any) -> None:
    """Redirects followed by the caller (httpx's default): each request is judged by its own
    URL, so the hop to another origin gets no bearer."""
    ours, other = await servers(), await servers()
    m = ica(ours)
    async with m, httpx.AsyncClient(auth=m.httpx_auth) as http:
        r = await http.get(f"{ours.base_url}/redirect", params={"to": other.resource_url})
        assert r.status_code == 302
        assert r.next_request is not None
        r = await http.send(r.next_request)
        assert r.status_code == 401
    assert bearers(ours, "redirect")[0] is not None
    assert bearers(other) == [None]


async def test_explicit_authorization_is_left_alone(server: LocalIcaServer) -> None:
    """A request that carries its own Authorization is sent as is, and a 401 is not retried."""
    m = ica(server)
    async with m, httpx.AsyncClient(auth=m.httpx_auth) as http:
        r = await http.get(server.resource_url, headers={"Authorization": "Bearer mine"})
        assert r.status_code == 401
    assert bearers(server) == ["Bearer mine"]
    assert server.counts["ica.create"] == 0


async def test_revoked_token_is_replaced_and_request_replayed_once(server: LocalIcaServer) -> None:
    """401 for an accepted token: exactly that token is invalidated, the body replayed."""
    m = ica(server)
    async with m, httpx.AsyncClient(auth=m.httpx_auth) as http:
        assert (await http.post(server.resource_url, content=b"payload")).status_code == 200
        old = (await m.token()).value
        server.revoke(old)
        assert (await http.post(server.resource_url, content=b"payload")).status_code == 200
        assert (await m.token()).value != old
        assert m.stats.invalidations == 1
    posts = [r for r in server.requests if r.endpoint == "resource"]
    assert [p.body for p in posts] == [b"payload"] * 3
    assert server.counts["ica.create"] == 2


async def test_concurrent_401s_cause_one_renewal(server: LocalIcaServer) -> None:
    """100 tasks hit 401 with the same revoked token: one new token, all replayed with it."""
    m = ica(server)
    async with m, httpx.AsyncClient(auth=m.httpx_auth) as http:
        assert (await http.get(server.resource_url)).status_code == 200
        server.revoke((await m.token()).value)
        answers = await asyncio.gather(*(http.get(server.resource_url) for _ in range(100)))
    assert [r.status_code for r in answers] == [200] * 100
    assert server.counts["ica.create"] == 2


async def test_unreplayable_body_gets_the_401(server: LocalIcaServer) -> None:
    """A streamed body cannot be replayed: the caller gets the 401 instead of a broken retry."""

    async def stream() -> AsyncIterator[bytes]:
        yield b"chunk"

    m = ica(server)
    async with m, httpx.AsyncClient(auth=m.httpx_auth) as http:
        assert (await http.get(server.resource_url)).status_code == 200
        server.revoke((await m.token()).value)
        r = await http.post(server.resource_url, content=stream())
        assert r.status_code == 401
    assert server.counts["resource"] == 2


async def test_unavailable_token_surfaces_to_the_caller(server: LocalIcaServer) -> None:
    """A wrong key: the request raises TokenUnavailableError instead of going out bare."""
    m = TokenManager.for_ica(ApiKey("not-a-key-789"), base_url=server.ica_base_url)
    async with m, httpx.AsyncClient(auth=m.httpx_auth) as http:
        with pytest.raises(TokenUnavailableError):
            await http.get(server.resource_url)
    assert server.counts["resource"] == 0


def test_sync_client_is_refused_with_a_clear_error() -> None:
    """httpx.Client with the auth: a RuntimeError naming httpx.AsyncClient, nothing sent."""
    m = TokenManager.for_ica(ApiKey("k" * 16), base_url="http://127.0.0.1:9/ica/rest")
    with (
        httpx.Client(auth=m.httpx_auth) as http,
        pytest.raises(RuntimeError, match=r"httpx\.AsyncClient"),
    ):
        http.get("http://127.0.0.1:9/ica/rest/api/projects")


async def test_auth_is_one_object_with_a_clean_repr(server: LocalIcaServer) -> None:
    """`httpx_auth` is the same object on each access, an httpx.Auth, and its repr names the
    origin only (no secret)."""
    async with ica(server) as m:
        await m.headers()
        auth = m.httpx_auth
        assert auth is m.httpx_auth
        assert isinstance(auth, httpx.Auth)
        host = server.base_url.removeprefix("http://")
        assert repr(auth) == f"HttpxAuth(origin='http://{host}')"
        assert find_secret(repr(auth), [server.api_key]) is None


def test_without_httpx_the_package_imports_and_the_auth_names_the_extra() -> None:
    """With httpx not installed, `import aioica_auth` works, the middleware is there, and
    `manager.httpx_auth` raises ImportError naming the extra aioica_auth[httpx]."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import aioica_auth\n"
        "m = aioica_auth.TokenManager.for_ica(aioica_auth.ApiKey('k' * 16))\n"
        "assert m.middleware is not None\n"
        "try:\n"
        "    m.httpx_auth\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "pip install 'aioica_auth[httpx]'" in done.stdout
