"""The aiohttp middleware over real loopback HTTP (aioresponses cannot see middlewares)."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import payload
from multidict import CIMultiDict

from aioica_auth import ApiKey, Token, TokenManager, TokenUnavailableError
from aioica_auth.testing import LocalIcaServer

from ..support import wait_until


def ica(server: LocalIcaServer, **kw: Any) -> TokenManager:
    return TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url, **kw)


def _expired_at(request: Any) -> bool:
    """Whether the bearer of a recorded request had expired when it arrived."""
    value = request.headers.get("Authorization", "").removeprefix("Bearer ")
    exp = Token.from_jwt(value).expires_at
    return exp is not None and request.at >= exp.timestamp()


def bearers(server: LocalIcaServer, endpoint: str = "resource") -> list[str | None]:
    return [r.headers.get("Authorization") for r in server.requests if r.endpoint == endpoint]


@pytest.mark.slow
async def test_proactive_refresh_keeps_200_tasks_free_of_401(servers: Any) -> None:
    """Lifetime 4 s, 200 tasks for ~9 s through the middleware: no 401 reaches a task, the
    header changes before expiry, no headers() call after the first waits on I/O, and the
    resource refuses no token that was still valid when it arrived."""
    srv = await servers(lifetime=4.0, latency=0.05)
    statuses: dict[int, int] = {}
    worst = 0.0
    headers_seen: list[tuple[float, str]] = []
    # The in-process server shares the loop with 200 busy tasks, so under load a renewal can
    # take most of a second. Callers wait only in the last 50 ms (default: L/10 = 400 ms),
    # which leaves the background refresh ~1.75 s of a 4 s token (window L/2, less leeway).
    m = ica(srv, min_validity=0.05)
    async with m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        await m.headers()
        end = time.monotonic() + 9.0
        # Server and client share one loop; with parallel workers (and coverage) beside it the
        # loop gets a fraction of a core. 200 requests in flight then make each loop pass so
        # long that the renewal's own answer misses its window; 20 keep it well inside.
        in_flight = asyncio.Semaphore(20)

        async def worker() -> None:
            nonlocal worst
            while time.monotonic() < end:
                started = time.perf_counter()
                h = await m.headers()
                worst = max(worst, time.perf_counter() - started)
                headers_seen.append((time.monotonic(), h["Authorization"]))
                async with in_flight, http.get(srv.resource_url) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                await asyncio.sleep(0.005)

        await asyncio.gather(*(worker() for _ in range(200)))
        waits = m.stats.waits
    distinct = {h for _, h in headers_seen}
    print(
        f"\nlifecycle: {sum(statuses.values())} requests, statuses {statuses}, "
        f"{srv.counts['ica.create']} token calls, max headers() {worst * 1e3:.2f} ms"
    )
    assert set(statuses) == {200}
    # A request that waited in aiohttp's pool (100 connections, 200 tasks) longer than its
    # token lived is refused and resent (the middleware's stale path); no other 401.
    refused = [r for r in srv.requests if r.endpoint == "resource" and _expired_at(r)]
    assert srv.statuses[("resource", 401)] == len(refused)
    assert 3 <= len(distinct) <= 8  # a new token every ~2 s, not one per call
    assert waits == 1  # only the very first call ever waited
    assert worst < 0.05


async def test_bearer_never_follows_a_cross_origin_redirect(servers: Any) -> None:
    """A redirect to another origin: the bearer is not sent there; same-origin hops keep it."""
    ours, other = await servers(), await servers()
    async with ica(ours) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        target = other.resource_url
        async with http.get(f"{ours.base_url}/redirect", params={"to": target}) as r:
            assert r.status == 401  # the other origin saw no bearer
        async with http.get(other.resource_url) as r:
            assert r.status == 401  # a direct request elsewhere gets none either
        async with http.get(f"{ours.base_url}/redirect", params={"to": ours.resource_url}) as r:
            assert r.status == 200
    assert bearers(other) == [None, None]
    assert bearers(ours)[0] is not None
    assert bearers(ours, "redirect")[0] is not None


async def test_explicit_authorization_is_left_alone(server: LocalIcaServer) -> None:
    """A request that carries its own Authorization is sent as is, and a 401 is not retried."""
    mine = {"Authorization": "Bearer mine"}
    async with (
        ica(server) as m,
        aiohttp.ClientSession(middlewares=(m.middleware,)) as http,
        http.get(server.resource_url, headers=mine) as r,
    ):
        assert r.status == 401
    assert bearers(server) == ["Bearer mine"]
    assert server.counts["ica.create"] == 0


async def test_revoked_token_is_replaced_and_request_replayed_once(server: LocalIcaServer) -> None:
    """401 for an accepted token: exactly that token is invalidated, the request replayed."""
    async with ica(server) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        async with http.post(server.resource_url, data=b"payload") as r:
            assert r.status == 200
        old = (await m.token()).value
        server.revoke(old)
        async with http.post(server.resource_url, data=b"payload") as r:
            assert r.status == 200
        assert (await m.token()).value != old
        assert m.stats.invalidations == 1
    posts = [r for r in server.requests if r.endpoint == "resource"]
    assert [p.body for p in posts] == [b"payload"] * 3
    assert server.counts["ica.create"] == 2


async def test_only_the_token_sent_is_invalidated(server: LocalIcaServer) -> None:
    """invalidate() of a token that was already replaced changes nothing."""
    async with ica(server) as m:
        first = await m.token()
        assert m.invalidate(first)
        second = await m.token()
        assert not m.invalidate(first)
        assert await m.token() == second
    assert server.counts["ica.create"] == 2


async def test_concurrent_401s_cause_one_renewal(server: LocalIcaServer) -> None:
    """100 tasks hit 401 with the same revoked token: one new token, all replayed with it."""
    async with ica(server) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        async with http.get(server.resource_url) as r:
            assert r.status == 200
        server.revoke((await m.token()).value)

        async def call() -> int:
            async with http.get(server.resource_url) as r:
                return r.status

        statuses = await asyncio.gather(*(call() for _ in range(100)))
    assert statuses == [200] * 100
    assert server.counts["ica.create"] == 2


async def test_unreplayable_body_gets_the_401(server: LocalIcaServer) -> None:
    """A streamed body cannot be replayed: the caller gets the 401 instead of a broken retry."""

    async def stream() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with ica(server) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        async with http.get(server.resource_url) as r:
            assert r.status == 200
        server.revoke((await m.token()).value)
        async with http.post(server.resource_url, data=stream()) as r:
            assert r.status == 401


async def test_token_calls_never_recurse_into_the_middleware(server: LocalIcaServer) -> None:
    """A manager given a session that carries its own middleware still mints (no deadlock)."""
    holder: list[TokenManager] = []

    async def late(req: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        return await holder[0].middleware(req, handler)

    async with aiohttp.ClientSession(middlewares=(late,)) as http:
        m = TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url, session=http)
        holder.append(m)
        async with asyncio.timeout(10):
            async with http.get(server.resource_url) as r:
                assert r.status == 200
        await m.aclose()
    assert server.counts["ica.create"] == 1


async def test_unavailable_token_surfaces_to_the_caller(server: LocalIcaServer) -> None:
    """A wrong key: the request raises TokenUnavailableError instead of going out bare."""
    m = TokenManager.for_ica(ApiKey("not-a-key-789"), base_url=server.ica_base_url)
    async with m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        with pytest.raises(TokenUnavailableError):
            async with http.get(server.resource_url):
                pass
    assert server.counts["resource"] == 0


async def test_requests_that_outwait_their_token_in_the_pool_are_resent(servers: Any) -> None:
    """A request that waited (for a pooled connection) until its token was superseded, and
    whose resend waited again: resent with the current token each time, not given the 401."""
    srv = await servers(lifetime=1.0)
    async with ica(srv, maturity=0) as m:  # each new token handed out at once
        sends: list[str] = []

        async def slow_pool(request: Any) -> Any:
            sent = request.headers["Authorization"]
            sends.append(sent)
            if len(sends) <= 2:  # queued until a newer token arrived
                mints = m.stats.mints
                await wait_until(lambda: m.stats.mints > mints)
            current = (await m.headers())["Authorization"]
            return FakeResponse(200 if sent == current else 401)

        request = types.SimpleNamespace(
            url=yarl.URL(srv.resource_url), headers=CIMultiDict(), body=payload.BytesPayload(b"x")
        )
        response = await m.middleware(request, slow_pool)  # type: ignore[arg-type]
    assert response.status == 200
    assert len(sends) == 3
    assert len(set(sends)) == 3  # each resend carried the token current at that moment
    assert m.stats.invalidations == 0  # stale sends are not refusals of the current token


@pytest.mark.slow
async def test_many_tasks_few_connections_no_401_reaches_a_task(servers: Any) -> None:
    """More tasks than connections, short tokens: no 401 reaches a task."""
    srv = await servers(lifetime=1.0)
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=5)
    async with (
        ica(srv) as m,
        aiohttp.ClientSession(middlewares=(m.middleware,), connector=connector) as http,
    ):
        end = time.monotonic() + 3.0

        async def worker() -> None:
            while time.monotonic() < end:
                async with http.get(srv.resource_url) as r:
                    statuses.append(r.status)

        await asyncio.gather(*(worker() for _ in range(150)))
    assert statuses
    assert set(statuses) == {200}


class FakeResponse:
    """Just enough of a ClientResponse for the middleware's 401 handling."""

    def __init__(self, status: int) -> None:
        self.status = status

    async def read(self) -> bytes:
        return b""

    def release(self) -> None:
        pass
