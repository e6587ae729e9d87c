"""TokenManager against the local server over real loopback HTTP: rules, timing, faults."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
from typing import Any

import aiohttp
import pytest

from aioica_auth import (
    ApiKey,
    BasicAuth,
    ConsoleTokenApi,
    Jwt,
    PsToken,
    Token,
    TokenManager,
    TokenUnavailableError,
)
from aioica_auth.testing import LocalIcaServer

from ..fakes import RunningClock, ScriptedSource
from ..fakes import manager as fake_manager
from ..support import wait_until


def ica(server: LocalIcaServer, credential: Any = None, **kw: Any) -> TokenManager:
    return TokenManager.for_ica(
        credential or ApiKey(server.api_key), base_url=server.ica_base_url, **kw
    )


async def ps_token(server: LocalIcaServer) -> str:
    async with aiohttp.ClientSession() as s:
        api = ConsoleTokenApi(s, server.base_url)
        r = await api.create_token(ApiKey(server.api_key), return_session_token=True)
    assert r.access_token
    server.reset_counters()
    return r.access_token


# -- per-credential rules ---------------------------------------------------------------------


async def test_ica_api_key_remints_and_never_refreshes(servers: Any) -> None:
    """ICA ApiKey: every renewal is POST /api/tokens; :refresh is never called."""
    srv = await servers(lifetime=0.8)
    async with ica(srv) as m:
        first = await m.token()
        await wait_until(lambda: m.stats.mints >= 3)
        assert (await m.token()).value != first.value
    assert srv.counts["ica.create"] >= 3
    assert srv.counts["ica.refresh"] == 0
    assert m.stats.refreshes == 0


@pytest.mark.parametrize("kind", ["basic", "pstoken"])
async def test_ica_basic_and_pstoken_refresh(servers: Any, kind: str) -> None:
    """ICA BasicAuth and PsToken: mint once, then POST /api/tokens:refresh."""
    # 2 s tokens: the refresh starts ~1 s before expiry, time enough on a loaded machine
    # (a refresh that arrives after the token expired is refused, and is re-minted).
    srv = await servers(lifetime=2.0)
    cred = (
        BasicAuth(srv.username, srv.password) if kind == "basic" else PsToken(await ps_token(srv))
    )
    async with ica(srv, cred) as m:
        await m.headers()
        await wait_until(lambda: m.stats.refreshes >= 2)
    assert srv.counts["ica.create"] == 1
    assert srv.counts["ica.refresh"] >= 2
    refresh = next(r for r in srv.requests if r.endpoint == "ica.refresh")
    assert refresh.headers["Authorization"].startswith("Bearer ey")


async def test_ica_refused_refresh_falls_back_to_mint(servers: Any) -> None:
    """ICA BasicAuth: a refused :refresh (4xx) is followed by a fresh mint."""
    srv = await servers(lifetime=0.8)
    async with ica(srv, BasicAuth(srv.username, srv.password)) as m:
        await m.headers()
        srv.inject("ica.refresh", status=400)
        await wait_until(lambda: m.stats.mints >= 2)
        assert m.stats.failures == 0  # a refusal with a successful mint is not a failure
    assert srv.counts["ica.create"] >= 2


async def test_ica_given_jwt_is_refreshed(servers: Any) -> None:
    """ICA Jwt: used with no request at first, then refreshed through :refresh."""
    srv = await servers(lifetime=0.8)
    async with ica(srv, BasicAuth(srv.username, srv.password)) as seed:
        given = await seed.token()
    srv.reset_counters()
    async with ica(srv, Jwt(given.value)) as m:
        assert (await m.token()).value == given.value
        assert srv.counts["ica.refresh"] == 0
        await wait_until(lambda: m.stats.refreshes >= 1)
    assert srv.counts["ica.create"] == 0


async def test_ica_jwt_from_api_key_expires_with_clear_error(servers: Any) -> None:
    """ICA Jwt minted from an API key: refresh refused, used until expiry, then a clear error."""
    srv = await servers(lifetime=1.0)
    async with ica(srv) as seed:
        given = await seed.token()
    async with ica(srv, Jwt(given.value), acquire_timeout=2) as m:
        assert (await m.token()).value == given.value
        await wait_until(lambda: srv.counts["ica.refresh"] >= 1)
        assert (await m.token()).value == given.value  # still served while unexpired
        await asyncio.sleep(1.1)
        with pytest.raises(TokenUnavailableError, match="cannot be refreshed") as info:
            await m.headers()
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("kind", ["apikey", "basic"])
async def test_console_mints_with_query_options(servers: Any, kind: str) -> None:
    """Console ApiKey/BasicAuth: every renewal is POST /v1/tokens carrying the query options."""
    srv = await servers(lifetime=0.8)
    cred = ApiKey(srv.api_key) if kind == "apikey" else BasicAuth(srv.username, srv.password)
    m = TokenManager.for_console(
        cred,
        base_url=srv.base_url,
        client_id="app",
        domain="test-tenant",
        data="meta",
        scopes=["A.READ", "B.WRITE"],
        cwid="wg1",
        cid="proj1",
    )
    async with m:
        token = await m.token()
        await wait_until(lambda: m.stats.mints >= 2)
    assert token.claims["azp"] == "app"
    creates = [r for r in srv.requests if r.endpoint == "console.create"]
    assert len(creates) >= 2
    assert dict(creates[-1].query) == {
        "clientId": "app",
        "domain": "test-tenant",
        "data": "meta",
        "scopes": "A.READ,B.WRITE",
        "cwid": "wg1",
        "cid": "proj1",
    }
    assert srv.counts["console.refresh"] == 0


async def test_console_pstoken_keeps_session_alive_and_adopts_new_pstoken(servers: Any) -> None:
    """Console PsToken: session refreshed on each renewal and on the keep-alive interval;
    a rotated psToken is adopted for the next calls."""
    srv = await servers(lifetime=1.0, session_lifetime=1.5, rotate_ps_tokens=True)
    original = await ps_token(srv)
    m = TokenManager.for_console(PsToken(original), base_url=srv.base_url, keepalive_interval=0.3)
    async with m:
        await m.headers()
        await wait_until(lambda: m.stats.mints >= 3 and m.stats.keepalives >= 1)
        assert (await m.headers())["Authorization"].startswith("Bearer ey")
    bodies = [
        json.loads(r.body)["access_token"] for r in srv.requests if r.endpoint == "console.refresh"
    ]
    assert bodies[0] == original
    assert (
        len(set(bodies)) == len(bodies) > 2
    )  # each refresh used the psToken the last one returned
    creates = [r for r in srv.requests if r.endpoint == "console.create"]
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in creates)


async def test_console_pstoken_session_over_is_a_clear_error(servers: Any) -> None:
    """Console PsToken whose session ended: TokenUnavailableError saying so, without a mint."""
    srv = await servers()
    ps = await ps_token(srv)
    srv.expire_session(ps)
    async with TokenManager.for_console(PsToken(ps), base_url=srv.base_url) as m:
        with pytest.raises(TokenUnavailableError, match="psToken session is over"):
            await m.headers()
    assert srv.counts["console.create"] == 0


# -- concurrency --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_storm_of_10000_callers_causes_one_request(servers: Any) -> None:
    """10,000 concurrent headers() on an empty manager: one token request, one header."""
    srv = await servers(latency=0.1)
    async with ica(srv) as m:
        results = await asyncio.gather(*(m.headers() for _ in range(10_000)))
    assert srv.counts["ica.create"] == 1
    assert len({r["Authorization"] for r in results}) == 1
    print(f"\nstorm: 10000 callers -> {srv.counts['ica.create']} token request")


async def test_cancelled_waiters_do_not_cancel_the_mint(servers: Any) -> None:
    """Half of 1,000 waiters cancelled mid-mint: the rest get the header; one request."""
    srv = await servers(latency=0.3)
    async with ica(srv) as m:
        tasks = [asyncio.create_task(m.headers()) for _ in range(1000)]
        await wait_until(lambda: srv.counts["ica.create"] == 1)
        for task in tasks[::2]:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [d for d in done if isinstance(d, asyncio.CancelledError)]
    served = [d for d in done if not isinstance(d, BaseException)]
    assert len(cancelled) == 500
    assert len(served) == 500
    assert all(s["Authorization"].startswith("Bearer ") for s in served)
    assert srv.counts["ica.create"] == 1


async def test_hot_path_does_no_io_and_returns_the_same_mapping(server: LocalIcaServer) -> None:
    """A fresh token: headers() is served from cache, the same immutable mapping each time."""
    async with ica(server) as m:
        first = await m.headers()
        for _ in range(1000):
            assert await m.headers() is first
        with pytest.raises(TypeError):
            first["Authorization"] = "x"  # type: ignore[index]
    assert server.counts["ica.create"] == 1
    assert m.stats.waits == 1


async def test_min_validity_forces_a_refresh_first(servers: Any) -> None:
    """headers(min_validity=N) renews first when the current token would not last N seconds."""
    srv = await servers(lifetime=60)
    async with ica(srv) as m:
        first = await m.headers()
        srv.lifetime = 3600
        long = await m.headers(min_validity=600)
        assert long != first
        assert await m.headers(min_validity=600) is long
    assert srv.counts["ica.create"] == 2


# -- faults -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_outage_in_advisory_window_is_invisible_to_callers(servers: Any) -> None:
    """5xx and timeouts during the advisory window: callers keep the token; new one after."""
    srv = await servers(lifetime=4.0)
    async with ica(srv, request_timeout=0.3) as m:
        first = await m.headers()
        srv.outage("ica.create", status=503)
        srv.inject("ica.create", kind="hang")
        await wait_until(lambda: m.stats.failures >= 2)
        assert await m.headers() is first  # still the old token, no error
        srv.clear_faults()
        await wait_until(lambda: m.stats.mints >= 2)
        # The new token is handed out once it has matured (0.2 s: maturity L/20).
        await wait_until(lambda: m._view.served() is m._lease, limit=2.0)
        assert await m.headers() != first
    assert m.stats.waits == 1  # only the very first call waited


async def test_retry_after_is_honoured(servers: Any) -> None:
    """429 with Retry-After: the next attempt waits at least that long; counted as a failure."""
    srv = await servers()
    srv.inject("ica.create", status=429, retry_after="1")
    async with ica(srv) as m:
        await m.headers()
    attempts = [r.at for r in srv.requests if r.endpoint == "ica.create"]
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.95
    assert m.stats.failures == 1
    assert srv.statuses[("ica.create", 429)] == 1


@pytest.mark.slow
async def test_expired_token_with_server_down_fails_in_bounded_time(servers: Any) -> None:
    """No valid token and a dead endpoint: TokenUnavailableError within acquire_timeout."""
    srv = await servers(lifetime=1.0)
    async with ica(srv, acquire_timeout=1.5, request_timeout=0.5) as m:
        await m.headers()
        srv.outage("ica.create", status=503)
        await asyncio.sleep(1.0)
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError, match="acquire_timeout") as info:
            await m.headers()
        assert time.monotonic() - started < 1.5 + 1.0
    assert "503" in str(info.value.__cause__)


async def test_wrong_key_fails_fast_and_is_remembered(server: LocalIcaServer) -> None:
    """A 401 on mint is permanent: raised at once, and re-raised without a request."""
    async with ica(server, ApiKey("wrong-key-123")) as m:
        for _ in range(3):
            with pytest.raises(TokenUnavailableError) as info:
                await m.headers()
    assert "401" in str(info.value)
    assert server.counts["ica.create"] == 1


async def test_connection_drops_are_retried(servers: Any) -> None:
    """A dropped connection on mint is transient: retried, and the caller gets a token."""
    srv = await servers()
    srv.inject("ica.create", kind="drop", times=2)
    async with ica(srv, retry_initial=0.05) as m:
        assert (await m.headers())["Authorization"].startswith("Bearer ")
    assert srv.counts["ica.create"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("offset", [600.0, -600.0])
async def test_server_clock_ten_minutes_off_causes_no_401_storm(
    servers: Any, offset: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Server clock 10 min ahead or behind: tokens judged in server time, no 401s, no storm;
    the offset is logged as a diagnostic."""
    srv = await servers(lifetime=1.0, clock_offset=offset)
    statuses: list[int] = []
    async with ica(srv) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            async with http.get(srv.resource_url) as r:
                statuses.append(r.status)
            await asyncio.sleep(0.01)
    assert set(statuses) == {200}
    assert 2 <= srv.counts["ica.create"] <= 9  # ~one per L/2 = 0.5 s, not one per call
    sign = "+" if offset > 0 else "-"
    assert re.search(rf"server clock \{sign}(599|600|601) s from ours", caplog.text)


async def test_not_yet_valid_token_is_held_until_valid(servers: Any) -> None:
    """nbf ahead of iat: the token is handed out only once valid; the resource accepts it."""
    srv = await servers(nbf_delay=0.5)
    async with (
        ica(srv) as m,
        aiohttp.ClientSession(middlewares=(m.middleware,)) as http,
        http.get(srv.resource_url) as r,
    ):
        assert r.status == 200
    assert srv.statuses[("resource", 401)] == 0


async def test_resource_clock_lag_is_waited_out_not_reminted(servers: Any) -> None:
    """A resource whose clock lags: the young token is retried after short waits, no re-mint."""
    srv = await servers(resource_clock_lag=0.4)
    async with ica(srv) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        results = []
        for _ in range(3):
            async with http.get(srv.resource_url) as r:
                results.append(r.status)
    assert results == [200, 200, 200]
    assert srv.counts["ica.create"] == 1
    assert srv.statuses[("resource", 401)] >= 1


async def test_refresh_without_progress_is_a_soft_failure() -> None:
    """A renewal that returns a token expiring no later is not adopted and not looped on."""
    from aioica_auth.testing import make_jwt

    clock = RunningClock()
    source = ScriptedSource(clock, [make_jwt(issued_at=clock.time(), lifetime=0.6)])
    async with fake_manager(source, clock) as m:
        await m.headers()
        await asyncio.sleep(0.8)
    calls = len(source.calls)
    assert m.stats.mints == 1
    assert m.stats.failures >= 1
    assert calls <= 20  # spaced by backoff (>= L/12 apart here), not a tight loop


# -- lifecycle and hygiene ----------------------------------------------------------------------


async def test_tasks_before_and_after_a_managers_life_are_equal(servers: Any) -> None:
    """No task outlives the manager: scheduler and renewals are cancelled and awaited."""
    srv = await servers(lifetime=0.5, latency=0.2)
    before = asyncio.all_tasks()
    m = ica(srv)
    await m.headers()
    # A refresh in flight:
    await wait_until(lambda: m._renewal is not None and m._renewal.flight.running)
    await m.aclose()
    await m.aclose()  # idempotent
    left = asyncio.all_tasks() - before
    # Only the server may still be finishing the cancelled request's handler.
    assert all(t.get_coro().__qualname__.startswith("RequestHandler") for t in left), left
    with pytest.raises(RuntimeError, match="closed"):
        await m.headers()


async def test_aclose_during_inflight_mint_releases_waiters(servers: Any) -> None:
    """aclose() while callers wait on a mint: they get a clear RuntimeError, nothing leaks."""
    srv = await servers(latency=5.0)
    m = ica(srv)
    waiter = asyncio.create_task(m.headers())
    await wait_until(lambda: srv.counts["ica.create"] == 1)
    await m.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await waiter


async def test_lazy_start_and_callers_session_left_open(server: LocalIcaServer) -> None:
    """Without `async with` the manager starts on first use; a caller's session stays open."""
    seen: list[Token] = []
    async with aiohttp.ClientSession() as own:
        m = TokenManager.for_ica(
            ApiKey(server.api_key), base_url=server.ica_base_url, session=own, on_token=seen.append
        )
        await m.headers()
        await m.aclose()
        assert not own.closed
        await asyncio.sleep(0)
    assert len(seen) == 1


async def test_on_token_exceptions_are_logged_not_raised(
    server: LocalIcaServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing on_token callback is logged; the caller still gets its header."""

    def boom(token: Token) -> None:
        raise ValueError("callback bug")

    async with ica(server, on_token=boom) as m:
        await m.headers()
        await asyncio.sleep(0.05)
    assert "on_token callback failed" in caplog.text


def test_second_event_loop_gets_runtime_error() -> None:
    """A manager used from a second event loop raises a clear RuntimeError, never hangs."""
    holder: list[TokenManager] = []

    async def first() -> None:
        async with LocalIcaServer() as srv, aiohttp.ClientSession() as own:
            m = TokenManager.for_ica(ApiKey(srv.api_key), base_url=srv.ica_base_url, session=own)
            holder.append(m)
            await m.headers()

    async def second() -> None:
        m = holder[0]
        with pytest.raises(RuntimeError, match="event loop"):
            await asyncio.wait_for(m.headers(min_validity=10**6), timeout=5)
        await m.aclose()

    asyncio.run(first())
    asyncio.run(second())


async def test_unclosed_manager_warns(server: LocalIcaServer) -> None:
    """A manager dropped with its own session still open emits a ResourceWarning."""
    m = ica(server)
    m._start()  # bound to the loop, session created, as on first use
    session = m._session
    assert session is not None
    del m
    with pytest.warns(ResourceWarning, match="unclosed TokenManager"):
        gc.collect()
    await session.close()


async def test_debug_logs_over_full_lifecycles_hold_no_secret(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """DEBUG logs of minting, refreshing, keep-alives, failures and revocation: no secret."""
    caplog.set_level(logging.DEBUG)
    srv = await servers(lifetime=0.6)
    tokens: list[str] = []
    ps = await ps_token(srv)
    creds: list[Any] = [ApiKey(srv.api_key), BasicAuth(srv.username, srv.password), PsToken(ps)]
    for cred in creds:
        m = ica(srv, cred, on_token=lambda t: tokens.append(t.value))
        async with m:
            await m.headers()
            srv.inject("*", status=503)
            await wait_until(lambda m=m: m.stats.mints + m.stats.refreshes >= 2)
    m = TokenManager.for_console(
        PsToken(ps),
        base_url=srv.base_url,
        revoke_on_close=True,
        keepalive_interval=0.2,
        on_token=lambda t: tokens.append(t.value),
    )
    async with m:
        await m.headers()
        await wait_until(lambda: m.stats.keepalives >= 1)
    async with ica(srv, ApiKey("wrong-key-456")) as bad:
        with pytest.raises(TokenUnavailableError):
            await bad.headers()
    secrets = [srv.api_key, srv.password, ps, "wrong-key-456", *tokens]
    assert len(tokens) >= 6
    for secret in secrets:
        assert secret not in caplog.text
        assert secret[-12:] not in caplog.text
    assert srv.counts["console.revoke"] == 1


async def test_token_without_exp_is_used_until_refused(server: LocalIcaServer) -> None:
    """A given JWT without `exp`: served from the hot path with no request and no timer."""
    from aioica_auth.testing import make_jwt

    value = make_jwt(include_exp=False)
    async with ica(server, Jwt(value)) as m:
        assert (await m.headers())["Authorization"] == "Bearer " + value
        assert m._slot._retire_timer is None
        assert await m.headers() is await m.headers()
        assert (await m.token()).expires_at is None
    assert server.counts["ica.refresh"] == 0
