"""Bounds the manager keeps, over real loopback HTTP: no frozen loop, no hammered endpoint,
every wait within acquire_timeout, a persistent 401 answered within seconds.

Each test pins a defect a probe of the earlier manager found (it failed there)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aioica_auth import (
    ApiKey,
    RateLimitError,
    TokenManager,
    TokenUnavailableError,
    UnauthorizedError,
)
from aioica_auth.testing import LocalIcaServer

from ..fakes import RunningClock, ScriptedSource
from ..fakes import manager as fake_manager
from ..support import FailingResolver, free_port, server_tls, wait_until
from .test_manager import ica


class Heartbeat:
    """Measures the longest stretch the event loop went without running this task, in CPU
    time of the loop's thread: a loop that spins burns it, while a busy machine that merely
    preempts the process (CI's shared cores) does not, so the figure does not depend on load.
    """

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        self._task = asyncio.create_task(self._beat())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _beat(self) -> None:
        last = time.thread_time()
        while True:
            await asyncio.sleep(0.01)
            now = time.thread_time()
            self.longest = max(self.longest, now - last)
            last = now


# -- 1, 2: min_validity that no token can meet ------------------------------------------------


@pytest.mark.timeout(20)
async def test_min_validity_no_token_can_meet_asks_once_and_never_freezes(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """headers(min_validity=3600) with 1-hour tokens: the loop keeps running, one mint in
    all for 20 calls, the freshest token is served, and a log line says it falls short."""
    srv = await servers(lifetime=3600)
    async with ica(srv) as m, Heartbeat() as beat:
        got = [await m.headers(min_validity=3600) for _ in range(20)]
    assert len({g["Authorization"] for g in got}) == 1
    assert srv.counts["ica.create"] == 1
    assert beat.longest < 1.0
    assert "min_validity=3600 s cannot be met" in caplog.text


async def test_min_validity_shortfall_renews_once_per_token(servers: Any) -> None:
    """An aged token short of min_validity is renewed once; asking again for a need no new
    token meets either is served that new token without another mint."""
    srv = await servers(lifetime=60)
    async with ica(srv) as m:
        first = await m.headers()
        renewed = await m.headers(min_validity=59.5)  # 60 s tokens: a new one is ~59 s
        again = [await m.headers(min_validity=59.5) for _ in range(10)]
    assert renewed != first
    assert all(a is renewed for a in again)
    assert srv.counts["ica.create"] == 2


async def test_waiting_with_the_endpoint_down_keeps_the_loop_running(servers: Any) -> None:
    """No token and a failing endpoint, 50 tasks calling headers() over and over: callers
    arriving just as a renewal ends never spin; the loop stays free, each call is bounded
    by acquire_timeout and ends in TokenUnavailableError."""
    srv = await servers()
    srv.outage("ica.create", status=503)
    errors: list[float] = []
    async with ica(srv, acquire_timeout=0.5, retry_initial=0.05) as m, Heartbeat() as beat:
        end = time.monotonic() + 2.0

        async def caller() -> None:
            while time.monotonic() < end:
                started = time.monotonic()
                with pytest.raises(TokenUnavailableError, match="503"):
                    await m.headers()
                errors.append(time.monotonic() - started)

        await asyncio.gather(*(caller() for _ in range(50)))
    # A spin (a waiting path that never yields) would stall the heartbeat for the whole 2 s
    # window; a busy CI machine can starve the process for half a second without one.
    assert beat.longest < 1.0
    assert max(errors) < 0.5 + 0.5
    assert len(errors) >= 50


# -- 3: acquire_timeout bounds every wait -------------------------------------------------------


async def test_acquire_timeout_bounds_a_hung_token_request(servers: Any) -> None:
    """The token endpoint hangs: the caller gets TokenUnavailableError at acquire_timeout,
    saying the request is still under way, not after the renewal's own 2*request_timeout."""
    srv = await servers()
    srv.inject("ica.create", kind="hang", times=None)
    async with ica(srv, acquire_timeout=1.0, request_timeout=10) as m:
        started = time.monotonic()
        with pytest.raises(
            TokenUnavailableError, match=r"still under way after acquire_timeout=1 s"
        ):
            await m.headers()
        assert time.monotonic() - started < 1.0 + 0.75


async def test_acquire_timeout_bounds_an_nbf_hold(servers: Any) -> None:
    """A token whose nbf is 10 s ahead (within nbf_wait_max): the caller waits at most
    acquire_timeout for it, not the whole hold."""
    srv = await servers(nbf_delay=10.0)
    async with ica(srv, acquire_timeout=1.0) as m:
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError, match="acquire_timeout"):
            await m.headers()
        assert time.monotonic() - started < 1.0 + 0.75


async def test_retry_after_beyond_the_budget_fails_at_once(servers: Any) -> None:
    """429 with Retry-After longer than the caller's budget: TokenUnavailableError at once,
    the RateLimitError and its retry_after chained; no second request in the meantime."""
    srv = await servers()
    srv.inject("ica.create", status=429, retry_after="60", times=None)
    async with ica(srv) as m:
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError, match="rate limited") as info:
            await m.headers()
        assert time.monotonic() - started < 2.0
        with pytest.raises(TokenUnavailableError):
            await m.headers()
    cause = info.value.__cause__
    assert isinstance(cause, RateLimitError)
    assert cause.retry_after == 60
    assert srv.counts["ica.create"] == 1


# -- 4: the caller's session settings -----------------------------------------------------------


async def test_callers_raise_for_status_session_keeps_typed_errors(server: LocalIcaServer) -> None:
    """A caller's ClientSession(raise_for_status=True): a wrong key is a remembered 401 (not
    "no answer"), and no attribute of the chained errors holds the key."""
    key = "wrong-key-for-raise-for-status"
    async with aiohttp.ClientSession(raise_for_status=True) as own:
        m = TokenManager.for_ica(ApiKey(key), base_url=server.ica_base_url, session=own)
        async with m:
            for _ in range(3):
                with pytest.raises(TokenUnavailableError) as info:
                    await m.headers()
    assert isinstance(info.value.__cause__, UnauthorizedError)
    assert server.counts["ica.create"] == 1
    assert key not in _everything_in(info.value)


async def test_sessions_default_authorization_never_reaches_the_token_endpoint(
    server: LocalIcaServer,
) -> None:
    """A caller's session with a default Authorization header: the mint carries X-API-Key
    and no Authorization."""
    headers = {"Authorization": "Bearer something-else-entirely"}
    async with aiohttp.ClientSession(headers=headers) as own:
        m = TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url, session=own)
        async with m:
            await m.headers()
    mint = next(r for r in server.requests if r.endpoint == "ica.create")
    assert "Authorization" not in mint.headers
    assert "X-API-Key" in mint.headers


def _everything_in(exc: BaseException, seen: set[int] | None = None) -> str:
    """The reprs of an exception, its chain, and every attribute of each, as one text."""
    seen = set() if seen is None else seen
    if id(exc) in seen:
        return ""
    seen.add(id(exc))
    parts = [repr(exc), str(exc), repr(exc.args)]
    for name in dir(exc):
        if name.startswith("__"):
            continue
        try:
            value = getattr(exc, name)
        except Exception:
            continue
        parts.append(repr(value))
        info = getattr(value, "headers", None)
        if info is not None:
            parts.append(repr(dict(info)))
    for link in (exc.__cause__, exc.__context__):
        if link is not None:
            parts.append(_everything_in(link, seen))
    return "\n".join(parts)


# -- 5: a token expired on arrival --------------------------------------------------------------


@pytest.mark.parametrize("shape", ["exp<=iat", "no iat, exp past"])
async def test_token_expired_on_arrival_is_backed_off_not_looped(shape: str) -> None:
    """A token endpoint that answers with an already expired token: a soft failure with
    backoff (a handful of requests in a second), never a busy loop."""
    from aioica_auth.testing import make_jwt

    clock = RunningClock()

    def expired() -> str:
        now = clock.time()
        if shape == "exp<=iat":
            return make_jwt(issued_at=now, expires_at=now - 1)
        return make_jwt(issued_at=now - 100, expires_at=now - 50, claims={"iat": None})

    source = ScriptedSource(clock, [expired])
    m = fake_manager(source, clock, acquire_timeout=2)
    async with m:
        started = time.monotonic()
        with pytest.raises(TokenUnavailableError, match="already expired"):
            await m.headers()
        assert time.monotonic() - started < 2.75
        before = len(source.calls)
        await asyncio.sleep(1.0)
    calls = len(source.calls)
    assert calls <= 6  # backoff from 0.5 s over ~3 s, not ~26 a second
    assert calls - before <= 2
    assert m.stats.failures == calls


# -- 6, 11: resources that refuse -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(40)
async def test_resource_clock_lag_beyond_a_quarter_lifetime_costs_no_401_and_no_remint(
    servers: Any,
) -> None:
    """A resource whose clock lags by 0.35 s, 1 s tokens, 20 tasks for 4 s: no 401 reaches a
    task, and mints stay near one per refresh interval (L/2)."""
    srv = await servers(lifetime=1.0, resource_clock_lag=0.35)
    statuses: dict[int, int] = {}
    async with ica(srv) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        await m.headers()
        await asyncio.sleep(0.4)  # the first token: past the lag before the load starts
        end = time.monotonic() + 4.0

        async def worker() -> None:
            while time.monotonic() < end:
                async with http.get(srv.resource_url) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(20)))
    assert statuses.get(401, 0) == 0, statuses
    assert srv.counts["ica.create"] <= 1 + 4.4 / 0.45 + 3  # ideal ~one per 0.5 s, no re-mints
    assert m.stats.invalidations == 0


@pytest.mark.timeout(30)
async def test_persistent_401_reaches_the_caller_within_10_s(server: LocalIcaServer) -> None:
    """A resource that refuses every token: with default settings the caller gets the 401
    within 10 s, after a few sends (not ~30 s and 11 sends)."""
    server.inject("resource", status=401, times=None)
    async with ica(server) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        await m.headers()
        started = time.monotonic()
        async with http.get(server.resource_url) as r:
            assert r.status == 401
        elapsed = time.monotonic() - started
    assert elapsed < 10.0
    assert server.counts["resource"] <= 8


# -- 7, 13: closing -----------------------------------------------------------------------------


async def test_cancelled_aclose_still_closes_the_owned_session(servers: Any) -> None:
    """aclose() cancelled while it awaits a renewal: the owned session is closed anyway, and
    a second aclose() completes."""
    srv = await servers(latency=2.0)
    m = ica(srv)
    waiter = asyncio.create_task(m.headers())
    await wait_until(lambda: srv.counts["ica.create"] == 1)
    closing = asyncio.create_task(m.aclose())
    await asyncio.sleep(0)
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await m.aclose()
    assert m._session is not None
    assert m._session.closed
    with pytest.raises(RuntimeError, match="closed"):
        await waiter


def test_aclose_from_a_second_loop_leaves_no_transport_open() -> None:
    """A manager left open when its loop ended, closed from another loop: no transport or
    session is left open (no ResourceWarning)."""
    holder: list[TokenManager] = []
    servers: list[LocalIcaServer] = []

    async def first() -> None:
        srv = LocalIcaServer()
        await srv.start()
        servers.append(srv)
        m = TokenManager.for_ica(ApiKey(srv.api_key), base_url=srv.ica_base_url)
        holder.append(m)
        await m.headers()
        await srv.close()

    asyncio.run(first())
    asyncio.run(holder[0].aclose())
    del holder[:]
    gc.collect()


# -- 8, 9, 13: construction refuses what cannot work -------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"request_timeout": 1e6}, ValueError, "request_timeout"),
        ({"acquire_timeout": float("inf")}, ValueError, "acquire_timeout"),
        ({"revoke_on_close": True}, ValueError, "revoke_on_close is for the console"),
        ({"revoke_on_close": "yes"}, TypeError, "revoke_on_close must be True or False"),
        ({"tenant": 123}, TypeError, "tenant must be a str"),
        ({"base_url": " https://ica.illumina.com/ica/rest"}, ValueError, "base_url"),
        ({"base_url": "https://ica.illu mina.com/ica/rest"}, ValueError, "base_url"),
        ({"base_url": "https://ica.illumina.com/ica/rest\r\n"}, ValueError, "base_url"),
        ({"base_url": "https://ica.illumina.com:99999/ica/rest"}, ValueError, "base_url"),
    ],
)
def test_bad_construction_is_refused_by_name(
    kwargs: dict[str, Any], error: type, match: str
) -> None:
    """Arguments that could only fail later are refused at construction, naming the argument."""
    with pytest.raises(error, match=match):
        TokenManager.for_ica(ApiKey("k" * 16), **kwargs)


async def test_session_with_auth_is_refused_at_construction() -> None:
    """A caller session built with auth= would clash with the token requests' own
    Authorization: refused at construction with a ValueError naming session."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # aiohttp 3.14 deprecates auth=
        own = aiohttp.ClientSession(auth=aiohttp.BasicAuth("u", "p"))
    async with own:
        with pytest.raises(ValueError, match="session"):
            TokenManager.for_ica(ApiKey("k" * 16), session=own)


async def test_revoke_on_close_after_the_callers_session_closed_is_logged(
    server: LocalIcaServer, caplog: pytest.LogCaptureFixture
) -> None:
    """revoke_on_close with the caller's session already closed: aclose() logs that the
    revoke failed, and raises nothing."""
    own = aiohttp.ClientSession()
    m = TokenManager.for_console(
        ApiKey(server.api_key), base_url=server.base_url, session=own, revoke_on_close=True
    )
    await m.headers()
    await own.close()
    await m.aclose()
    assert "revoking token" in caplog.text


# -- 12: waiters that leave -----------------------------------------------------------------


async def test_waiters_that_time_out_leave_nothing_behind(servers: Any) -> None:
    """Callers timing out while the token endpoint hangs leave no parked futures behind."""
    srv = await servers()
    srv.inject("ica.create", kind="hang", times=None)
    async with ica(srv) as m:
        for _ in range(20):
            results = await asyncio.gather(
                *(asyncio.wait_for(m.headers(), 0.01) for _ in range(100)),
                return_exceptions=True,
            )
            assert all(isinstance(r, TimeoutError) for r in results)
        renewal = m._renewal
        assert renewal is not None
        assert renewal.flight.waiting == 0


# -- the defaults ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(40)
async def test_defaults_fail_within_15_s_naming_the_cause(
    servers: Any, self_signed: tuple[Path, Path]
) -> None:
    """With default settings a caller with no token gets TokenUnavailableError within 15 s,
    whatever the failure, the cause chained and named: connection refused, DNS failure, TLS
    verification failure, 5xx, 429, a hang."""
    srv_5xx, srv_429, srv_hang = [await servers() for _ in range(3)]
    srv_5xx.outage("ica.create", status=503)
    srv_429.outage("ica.create", status=429)
    srv_hang.inject("ica.create", kind="hang", times=None)
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls(self_signed)).start()
    tls_url = f"https://127.0.0.1:{runner.addresses[0][1]}/ica/rest"
    cases = {
        "refused": (f"http://127.0.0.1:{free_port()}/ica/rest", "connection refused by"),
        "dns": ("https://ica.invalid/ica/rest", "cannot resolve host ica.invalid"),
        "tls": (tls_url, "TLS certificate verify failed"),
        "5xx": (srv_5xx.ica_base_url, "503"),
        "429": (srv_429.ica_base_url, "429"),
        "hang": (srv_hang.ica_base_url, "still under way"),
    }

    async def one(name: str, url: str) -> tuple[float, TokenUnavailableError]:
        started = time.monotonic()
        connector = aiohttp.TCPConnector(resolver=FailingResolver()) if name == "dns" else None
        async with (
            aiohttp.ClientSession(connector=connector) as own,
            TokenManager.for_ica(ApiKey("k" * 16), base_url=url, session=own) as m,
        ):
            try:
                await m.headers()
            except TokenUnavailableError as exc:
                return time.monotonic() - started, exc
        raise AssertionError("no error")

    try:
        results = await asyncio.gather(*(one(name, url) for name, (url, _) in cases.items()))
    finally:
        await runner.cleanup()
    for (name, (_, words)), (elapsed, exc) in zip(cases.items(), results, strict=True):
        assert elapsed <= 15.0 + 1.0, name
        assert words in str(exc), (name, str(exc))
        assert exc.__cause__ is not None or name == "hang", name


# -- clocks ---------------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_a_suspend_of_3_hours_is_noticed_within_seconds(
    servers: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After a simulated suspend (the wall clock jumps 3 h, monotonic time does not), the
    expired 1-hour token stops being served within a few seconds and a new one is minted."""
    srv = await servers(lifetime=3600)
    real = time.time
    async with ica(srv) as m:
        first = await m.headers()
        jump = 3 * 3600.0
        monkeypatch.setattr(time, "time", lambda: real() + jump)
        started = time.monotonic()
        await wait_until(lambda: m._hot is not first, limit=5.0)
        assert time.monotonic() - started < 3.0
        assert await m.headers() != first
    assert srv.counts["ica.create"] == 2
    assert any(
        r.levelno == logging.WARNING and "machine slept" in r.message for r in caplog.records
    )


async def test_given_jwt_not_yet_valid_is_waited_for_not_renewed(server: LocalIcaServer) -> None:
    """A given JWT whose nbf is half a second ahead: headers() waits for the nbf and returns
    it, with no refresh request (the old code renewed at once)."""
    from aioica_auth import Jwt
    from aioica_auth.testing import make_jwt

    now = time.time()
    value = make_jwt(issued_at=now, not_before=now + 0.5, include_exp=False)
    async with ica(server, Jwt(value)) as m:
        started = time.monotonic()
        assert (await m.headers())["Authorization"] == "Bearer " + value
        assert 0.3 <= time.monotonic() - started < 2.0
    assert server.counts["ica.refresh"] == 0
