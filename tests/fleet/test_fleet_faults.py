"""A fleet under the faults a store exists for, in one process: a `Retry-After` shared by the
fleet, a caller's bound passing while another process renews, a host whose clock is behind.

The real-process versions are in test_fleet_processes.py; here each rule is checked exactly,
with the local server over loopback and, for the clocks, an injected one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from aioica_auth import (
    FileTokenStore,
    RateLimitError,
    TokenUnavailableError,
)
from aioica_auth._clock import Exchange
from aioica_auth._fleet.shared import SharedSource
from aioica_auth._fleet.store import (
    BadEntryError,
    Hold,
    decode_hold,
    encode_entry,
    encode_hold,
    hold_key,
)
from aioica_auth._lifecycle.policy import Policy
from aioica_auth._lifecycle.sources import Issued
from aioica_auth._lifecycle.timing import Timing
from aioica_auth._token import Token, decode_jwt
from aioica_auth.testing import LocalIcaServer

from ..fakes import ScriptedSource
from ..support import find_secret, key_of, unsigned_jwt
from .test_fleet import manager, squatted

pytestmark = pytest.mark.timeout(60)


# -- Retry-After, shared --------------------------------------------------------------------


async def test_a_retry_after_one_manager_was_given_holds_the_whole_fleet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "aioica_auth")
    async with LocalIcaServer() as srv:
        store = FileTokenStore(tmp_path)
        fault = srv.inject("ica.create", status=429, times=None, retry_after="1")
        async with manager(srv, store, acquire_timeout=0.5) as a:
            with pytest.raises(TokenUnavailableError):
                await a.token()
        assert srv.counts["ica.create"] == 1
        raw = await store.read(hold_key(key_of(srv)))
        assert raw is not None
        hold = decode_hold(raw, key_of(srv))
        assert (hold.status, hold.retry_after) == (429, 1.0)

        # Another manager, now: it does not ask, it fails as the server told the first one.
        async with manager(srv, store, acquire_timeout=0.5) as b:
            with pytest.raises(TokenUnavailableError) as caught:
                await b.token()
        cause = caught.value.__cause__
        assert isinstance(cause, RateLimitError)
        assert cause.retry_after is not None
        assert 0 < cause.retry_after <= 1.0
        assert "another manager of the fleet was asked to wait 1 s" in str(caught.value)
        assert srv.counts["ica.create"] == 1

        # One that can wait: it waits the hold out, then asks once; the next one adopts.
        srv.remove_fault(fault)
        loop = asyncio.get_running_loop()
        async with manager(srv, store, acquire_timeout=5) as c, manager(srv, store) as d:
            started = loop.time()
            token = await c.token()
            waited = loop.time() - started
            assert (await d.token()).value == token.value
            assert d.stats.shared == 1
        assert 0.5 < waited < 4, waited
        assert srv.counts["ica.create"] == 2
    assert find_secret(caplog.text, [srv.api_key]) is None


async def test_a_refusal_or_an_error_without_retry_after_is_not_shared(tmp_path: Path) -> None:
    async with LocalIcaServer() as srv:
        store = FileTokenStore(tmp_path)
        srv.inject("ica.create", status=503, times=1)  # no Retry-After: each backs off alone
        srv.inject("ica.create", status=429, times=1)  # nor here
        async with manager(srv, store, acquire_timeout=5, retry_initial=0.05) as m:
            await m.token()
        assert await store.read(hold_key(key_of(srv))) is None
        assert srv.counts["ica.create"] == 3


async def test_a_bad_hold_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalIcaServer() as srv:
        store = FileTokenStore(tmp_path)
        key = key_of(srv)
        assert await store.publish(hold_key(key), b"{not json", expires_at=2e9)
        async with manager(srv, store) as m:
            await m.token()
        assert any("hold is not JSON" in r.getMessage() for r in caplog.records)


def test_holds_are_checked_field_by_field() -> None:
    key = "ab" * 32
    hold = Hold(429, 2.0, 1.7e9)
    assert decode_hold(encode_hold(key, hold), key) == hold
    assert hold.left(1.7e9 - 10) == 2.0  # a clock behind does not wait longer than asked
    assert hold.left(1.7e9 - 0.5) == 0.5
    assert hold.left(1.7e9 + 1) == 0.0
    for raw in [
        encode_hold("cd" * 32, hold),  # another key's
        b'{"v": 1}',
        b"[]",
        encode_hold(key, hold).replace(b"429", b"200"),
        encode_hold(key, hold).replace(b'"retry_after":2.0', b'"retry_after":-1'),
        encode_hold(key, hold).replace(b'"until":1700000000.0', b'"until":"soon"'),
        b"x" * 40_000,
    ]:
        with pytest.raises(BadEntryError):
            decode_hold(raw, key)


# -- a caller's bound, another process's lease ----------------------------------------------


async def test_a_caller_whose_bound_passes_on_another_process_lease_is_told_so(
    tmp_path: Path,
) -> None:
    async with (
        LocalIcaServer() as srv,
        squatted(srv, tmp_path),
        manager(srv, FileTokenStore(tmp_path), request_timeout=2, acquire_timeout=0.5) as m,
    ):
        with pytest.raises(TokenUnavailableError) as caught:
            await m.token()
    message = str(caught.value)
    assert "waiting for another process's renewal (store lease)" in message, message
    assert "acquire_timeout=0.5 s" in message
    assert srv.counts["ica.create"] == 0


# -- clocks -----------------------------------------------------------------------------------

SERVER_NOW = 0.0  # the server's clock, now: set for each test (the store sweeps old entries)
BEHIND = 7.0  # this host's clock, against the server's and the publisher's


@pytest.fixture(autouse=True)
def server_now() -> None:
    global SERVER_NOW
    SERVER_NOW = float(int(time.time()))


class HostClock:
    """This host's clocks: monotonic at a fixed point, wall time `BEHIND` seconds late."""

    def monotonic(self) -> float:
        return 5_000.0

    def time(self) -> float:
        return SERVER_NOW - BEHIND


def token_issued(at: float, lifetime: float = 10.0) -> Token:
    return decode_jwt(unsigned_jwt({"iat": int(at), "exp": int(at + lifetime), "sub": "x"}))


class MintingSource(ScriptedSource):
    """A wrapped source that mints a token issued now by the server's clock, 0.2 s after the
    request was sent (the rest of a source's methods: `ScriptedSource`'s)."""

    def __init__(self) -> None:
        super().__init__(HostClock(), [])  # type: ignore[arg-type]

    async def renew(self, current: Token | None) -> Issued:
        wall = HostClock().time()
        reply = Exchange(5_000.0 - 0.2, wall - 0.2, 5_000.0, None)
        return Issued(token_issued(SERVER_NOW), reply, minted=True)


def shared(tmp_path: Path) -> SharedSource:
    key = "ef" * 32
    policy = Policy(jitter=0.0)
    return SharedSource(MintingSource(), FileTokenStore(tmp_path), key, policy, HostClock())


async def publish(source: SharedSource, token: Token, published: float) -> None:
    """What a publisher whose clock is right (skew 0) put in the store at `published`."""
    assert token.expires_at is not None
    entry = encode_entry(source.key, token, 0.0, published)
    assert await source.store.publish(source.key, entry, expires_at=token.expires_at.timestamp())


async def adopted_expiry(source: SharedSource) -> float:
    """Seconds from now until the adopted token expires, as this manager judges it."""
    issued = await source._adoptable(None)
    assert issued is not None
    return Timing.of(issued.token, issued.exchange, source.policy).expires - HostClock().monotonic()


def margin(lifetime: float) -> float:
    """How much earlier than its `exp` a token is taken for expired: the leeway (L/20 for
    short tokens) and a second for whole-second claims."""
    return lifetime / 20 + 1


async def test_an_adopted_token_is_judged_with_the_host_own_offset(tmp_path: Path) -> None:
    source = shared(tmp_path)
    await source.renew(None)  # minted once: now it knows its clock is 7 s behind
    assert source.offset == pytest.approx(BEHIND + 0.2)  # and the request's 0.2 s
    await publish(source, token_issued(SERVER_NOW - 2, lifetime=13), SERVER_NOW - 2)
    left = await adopted_expiry(source)
    # 11 s of life left, less the 0.2 s. Judged by the publisher's clock and this host's,
    # it had 13 s: served up to 2 s past its expiry.
    assert left == pytest.approx(11 - 0.2 - margin(13), abs=0.01)


async def test_without_an_own_offset_the_entries_read_bound_it(tmp_path: Path) -> None:
    source = shared(tmp_path)
    # An entry just published: the server's clock has reached that, so ours is >= 7 s behind.
    await publish(source, token_issued(SERVER_NOW - 1), SERVER_NOW - 0.05)
    assert await adopted_expiry(source) == pytest.approx(9 - margin(10), abs=0.1)
    # A later entry published 2 s ago: judged 2 s old, not new.
    await publish(source, token_issued(SERVER_NOW - 2, lifetime=12), SERVER_NOW - 2)
    assert await adopted_expiry(source) == pytest.approx(10 - 0.05 - margin(12), abs=0.1)


async def test_a_token_too_old_by_the_server_clock_is_not_adopted(tmp_path: Path) -> None:
    source = shared(tmp_path)
    await source.renew(None)
    await publish(source, token_issued(SERVER_NOW - 7, lifetime=18), SERVER_NOW - 7)
    # 11 s left by the server's clock, less the 0.2 s and the margin: within the refresh
    # window (9 s), so it is renewed, not adopted as fresh.
    assert await source._adoptable(None) is None
