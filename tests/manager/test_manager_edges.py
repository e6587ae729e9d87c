"""TokenManager edges: bad input, fallbacks after failures, keep-alive and revoke failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aioica_auth import (
    ApiKey,
    BasicAuth,
    Jwt,
    PsToken,
    TokenManager,
    TokenUnavailableError,
)
from aioica_auth.testing import LocalIcaServer, make_jwt

from ..support import wait_until
from .test_manager import ica, ps_token


@pytest.mark.parametrize("bad", [-1, float("nan"), "10", True])
async def test_bad_min_validity_is_refused(server: LocalIcaServer, bad: Any) -> None:
    """headers(min_validity=...) takes a non-negative number of seconds."""
    async with ica(server) as m:
        with pytest.raises(ValueError, match="min_validity"):
            await m.headers(min_validity=bad)


def test_bad_construction_is_refused_clearly() -> None:
    """Wrong credential types, a blank tenant and an undecodable Jwt fail at construction."""
    with pytest.raises(TypeError, match="credential must be one of"):
        TokenManager.for_ica("my-api-key")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="credential must be one of"):
        TokenManager.for_console(Jwt(make_jwt()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tenant"):
        TokenManager.for_ica(ApiKey("k" * 16), tenant=" ")
    with pytest.raises(ValueError, match="not a decodable JWT"):
        TokenManager.for_ica(Jwt("not-a-jwt"))
    with pytest.raises(TypeError, match="session"):
        TokenManager.for_ica(ApiKey("k" * 16), session=object())  # type: ignore[arg-type]


async def test_failed_refresh_while_waiting_returns_the_unexpired_token(
    servers: Any,
) -> None:
    """A caller that waits for a renewal (min_validity) gets the current, still-valid token
    when the renewal fails, instead of an error."""
    srv = await servers(lifetime=10.0)
    async with ica(srv) as m:
        first = await m.headers()
        srv.outage("ica.create", status=503)
        started = time.monotonic()
        assert await m.headers(min_validity=60) == first
        assert time.monotonic() - started < 5
    assert srv.statuses[("ica.create", 503)] >= 1


async def test_expired_given_jwt_says_so(server: LocalIcaServer) -> None:
    """A Jwt credential that has already expired: a clear error, no request."""
    old = make_jwt(issued_at=time.time() - 100, lifetime=10)
    async with ica(server, Jwt(old)) as m:
        with pytest.raises(TokenUnavailableError, match="has expired"):
            await m.headers()
    assert server.counts["ica.refresh"] == 0


async def test_given_jwt_refresh_outage_is_retried_not_final(servers: Any) -> None:
    """A 5xx on :refresh of a given JWT is transient: retried, then refreshed."""
    srv = await servers(lifetime=1.0)
    async with ica(srv, BasicAuth(srv.username, srv.password)) as seed:
        given = await seed.token()
    srv.inject("ica.refresh", status=503)
    async with ica(srv, Jwt(given.value), retry_initial=0.05) as m:
        await m.headers()
        await wait_until(lambda: m.stats.refreshes >= 1)
    assert srv.statuses[("ica.refresh", 503)] == 1


async def test_console_api_key_revokes_on_close(server: LocalIcaServer) -> None:
    """revoke_on_close: the current console JWT is revoked by aclose()."""
    m = TokenManager.for_console(
        ApiKey(server.api_key), base_url=server.base_url, revoke_on_close=True
    )
    async with m:
        token = await m.token()
    assert server.counts["console.revoke"] == 1
    revoke = next(r for r in server.requests if r.endpoint == "console.revoke")
    assert token.value.encode() in revoke.body


async def test_revoke_failure_on_close_is_logged_not_raised(
    server: LocalIcaServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing revoke does not stop aclose() from closing everything."""
    m = TokenManager.for_console(
        ApiKey(server.api_key), base_url=server.base_url, revoke_on_close=True
    )
    await m.headers()
    server.outage("console.revoke", status=500)
    await m.aclose()
    assert m.closed
    assert m._session is not None
    assert m._session.closed
    assert "revoking token" in caplog.text


async def test_keepalive_failures_are_logged_and_retried(
    servers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5xx on the psToken keep-alive is logged; the manager keeps serving its token."""
    srv = await servers()
    ps = await ps_token(srv)
    m = TokenManager.for_console(PsToken(ps), base_url=srv.base_url, keepalive_interval=0.2)
    async with m:
        first = await m.headers()
        srv.inject("console.refresh", status=503)
        await wait_until(lambda: "keep-alive failed" in caplog.text)
        assert await m.headers() == first


async def test_session_over_during_keepalive_is_remembered(servers: Any) -> None:
    """The psToken session ending between renewals is remembered: a caller asking for more
    than the current JWT has left gets that JWT at once, without a doomed request."""
    srv = await servers(lifetime=3600)
    ps = await ps_token(srv)
    m = TokenManager.for_console(PsToken(ps), base_url=srv.base_url, keepalive_interval=0.2)
    async with m:
        first = await m.headers()
        srv.expire_session(ps)
        renewal = m._renewal
        assert renewal is not None
        await wait_until(lambda: renewal.backoff.remembered is not None)
        assert renewal.backoff.remembered is not None
        assert "psToken session is over" in str(renewal.backoff.remembered.error)
        assert await m.headers(min_validity=7200) == first
    assert srv.counts["console.create"] == 1


async def test_nbf_far_ahead_is_not_waited_for(servers: Any) -> None:
    """A token whose nbf is beyond nbf_wait_max is handed out at once, not waited for."""
    srv = await servers(nbf_delay=30.0)
    async with ica(srv, nbf_wait_max=0.2) as m:
        started = time.monotonic()
        await m.headers()
        assert time.monotonic() - started < 2
    assert srv.counts["ica.create"] == 1


async def test_cancelled_caller_leaves_the_renewal_running(servers: Any) -> None:
    """A caller cancelled by its own timeout does not stop the mint the others wait for."""
    srv = await servers(latency=0.3)
    async with ica(srv) as m:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await m.headers()
        assert (await m.headers())["Authorization"].startswith("Bearer ")
    assert srv.counts["ica.create"] == 1
