"""A token is used once it has matured: lifecycle against the local server, both adapters.

Counts, not timings: sends per request and mints per `error_memory` while a resource refuses
every token, no 401 at all from a lagging resource in steady state, and a revocation renewed
at once however recent the last renewal.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest

from aioica_auth import ApiKey, TokenManager
from aioica_auth.testing import LocalIcaServer

from ..support import wait_until

Get = Callable[[TokenManager, str, int], Awaitable[list[int]]]
_ID = "X-Request-Id"


async def _get_aiohttp(m: TokenManager, url: str, n: int) -> list[int]:
    async with aiohttp.ClientSession(middlewares=(m.middleware,)) as http:

        async def one(k: int) -> int:
            async with http.get(url, headers={_ID: str(k)}) as r:
                return r.status

        return list(await asyncio.gather(*(one(k) for k in range(n))))


async def _get_httpx(m: TokenManager, url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(auth=m.httpx_auth) as http:
        answers = await asyncio.gather(*(http.get(url, headers={_ID: str(k)}) for k in range(n)))
    return [r.status_code for r in answers]


ADAPTERS: dict[str, Get] = {"aiohttp": _get_aiohttp, "httpx": _get_httpx}


def ica(server: LocalIcaServer, **kw: Any) -> TokenManager:
    return TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url, **kw)


def sends_per_request(server: LocalIcaServer) -> list[int]:
    """How many times each request went to the resource (by its X-Request-Id)."""
    ids = collections.Counter(
        r.headers.get(_ID) for r in server.requests if r.endpoint == "resource"
    )
    return list(ids.values())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("concurrent", [1, 10])
@pytest.mark.parametrize("get", ADAPTERS.values(), ids=ADAPTERS.keys())
async def test_refusing_everything_costs_at_most_4_sends_and_no_mint(
    server: LocalIcaServer, get: Get, concurrent: int
) -> None:
    """A resource that refuses every token: one request gets its 401 within 10 s after at
    most 4 sends; 10 concurrent ones after at most 4 each on average, 6 for any one (the
    token's one probe is shared); no mint (the token is young: a new one would be younger)."""
    async with ica(server) as m:
        await m.headers()
        server.outage("resource", 401)
        async with asyncio.timeout(10):
            statuses = await get(m, server.resource_url, concurrent)
        invalidations = m.stats.invalidations
    assert statuses == [401] * concurrent
    sends = sends_per_request(server)
    assert len(sends) == concurrent
    assert sum(sends) <= 4 * concurrent
    assert max(sends) <= (4 if concurrent == 1 else 6)
    assert server.counts["ica.create"] == 1
    assert invalidations == 0


@pytest.mark.timeout(30)
async def test_refusing_everything_mints_at_most_once_per_error_memory(
    server: LocalIcaServer,
) -> None:
    """20 workers against a resource that refuses every token, with tokens that stop being
    young at once (maturity 0, nbf_wait_max 0.1 s) so that refusals could re-mint: at most
    one mint per `error_memory` (1 s here) over the run, every request answered."""
    async with ica(server, maturity=0, nbf_wait_max=0.1, error_memory=1.0) as m:
        await m.headers()
        server.outage("resource", 401)
        server.reset_counters()
        answered = 0
        async with aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
            start = time.monotonic()
            end = start + 3.0

            async def worker() -> None:
                nonlocal answered
                while time.monotonic() < end:
                    async with http.get(server.resource_url) as r:
                        assert r.status == 401
                    answered += 1

            async with asyncio.timeout(15):
                await asyncio.gather(*(worker() for _ in range(20)))
            elapsed = time.monotonic() - start
    mints = server.counts["ica.create"]
    sends = server.counts["resource"]
    print(f"\nrefusing: {answered} requests, {sends} sends, {mints} mints in {elapsed:.1f} s")
    assert answered >= 20
    assert mints <= elapsed / 1.0 + 1
    assert sends <= 2 * answered


@pytest.mark.slow
@pytest.mark.timeout(40)
@pytest.mark.parametrize("get", ADAPTERS.values(), ids=ADAPTERS.keys())
async def test_steady_state_at_a_lagging_resource_sees_no_young_token(
    servers: Any, get: Get
) -> None:
    """6 s tokens (maturity L/20 = 0.3 s), a resource whose clock lags 0.1 s, requests across
    two background renewals: not one 401, no invalidation; each new token was handed out
    only once it had matured."""
    srv = await servers(lifetime=6.0, resource_clock_lag=0.1)
    async with ica(srv) as m:
        await m.headers()
        first = m._lease
        assert first is not None
        await wait_until(lambda: first.age(first.now(m._clock)) > 0.3)  # the first: matured
        srv.reset_counters()
        rounds = 0
        async with asyncio.timeout(30):
            while m.stats.mints < 3 or m._view.served() is not m._lease:
                assert set(await get(m, srv.resource_url, 10)) == {200}
                rounds += 1
                await asyncio.sleep(0.02)
            for _ in range(5):  # and once the last one is handed out
                assert set(await get(m, srv.resource_url, 10)) == {200}
        invalidations, mints = m.stats.invalidations, m.stats.mints
    assert rounds > 5  # requests all along (fewer rounds on a busy machine)
    assert srv.statuses[("resource", 401)] == 0
    assert invalidations == 0
    # The background renewals only (two, or three when a busy machine makes the loop above
    # end late): no mint came of a 401.
    assert srv.counts["ica.create"] == mints - 1 >= 2


@pytest.mark.parametrize("get", ADAPTERS.values(), ids=ADAPTERS.keys())
async def test_revocation_after_acceptance_is_renewed_at_once(
    server: LocalIcaServer, get: Get
) -> None:
    """A token the resource accepted, then revoked: renewed at once and the request replayed
    (200), twice in a row, well within `error_memory` of each other."""
    async with ica(server) as m:
        assert await get(m, server.resource_url, 1) == [200]
        for _ in range(2):
            server.revoke((await m.token()).value)
            assert await get(m, server.resource_url, 1) == [200]
        invalidations = m.stats.invalidations
    assert invalidations == 2
    assert server.counts["ica.create"] == 3
    assert server.statuses[("resource", 401)] == 2
