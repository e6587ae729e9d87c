"""Managers sharing a `TokenStore`, in one process, against the local server over loopback.

What is checked: one token request per refresh for the whole fleet; the manager's own rules
decide what is adopted (never a bad, foreign, expired or refused entry); a store that fails
costs no request and is warned about once; a lease held without a publication is waited out
within its bound; what cannot be shared is refused at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aioica_auth import (
    ApiKey,
    BasicAuth,
    FileTokenStore,
    Jwt,
    PsToken,
    TokenManager,
    TokenStore,
)
from aioica_auth._fleet.store import StoreEntry, decode_entry, encode_entry, store_key
from aioica_auth._token import Token
from aioica_auth.testing import LocalIcaServer

from ..support import find_secret, key_of, unsigned_jwt, wait_until

pytestmark = pytest.mark.timeout(60)


def manager(srv: LocalIcaServer, store: object, **policy: Any) -> TokenManager:
    return TokenManager.for_ica(
        ApiKey(srv.api_key),
        base_url=srv.ica_base_url,
        store=store,  # type: ignore[arg-type]
        **policy,
    )


@contextlib.asynccontextmanager
async def squatted(srv: LocalIcaServer, directory: Path) -> AsyncIterator[None]:
    """Another process's renewal lease on the fleet's key in `directory`, held throughout."""
    squatter = FileTokenStore(directory)
    held = await squatter.acquire(key_of(srv), 60.0)
    assert held is not None
    try:
        yield
    finally:
        await squatter.release(key_of(srv), held)


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name == "aioica_auth"
    ]


def assert_clean(caplog: pytest.LogCaptureFixture, srv: LocalIcaServer) -> None:
    assert find_secret(caplog.text, [srv.api_key]) is None


@pytest.mark.slow
async def test_a_fleet_of_managers_makes_one_request_per_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aioica_auth")
    lifetime, span, fleet = 3.0, 6.0, 6
    async with LocalIcaServer(lifetime=lifetime) as srv:
        store = FileTokenStore(tmp_path)
        managers = [manager(srv, store) for _ in range(fleet)]
        served = 0
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + span
            while loop.time() < end:
                for m in managers:
                    token = await m.token()
                    assert token.expires_at is not None
                    assert token.expires_at.timestamp() > time.time()
                    served += 1
                await asyncio.sleep(0.01)
        finally:
            for m in managers:
                await m.aclose()
        # Alone, each manager renews at about half the lifetime (less up to 10% jitter).
        ideal = 1 + span / (lifetime / 2 * 0.9)
        creates = srv.counts["ica.create"]
        assert creates <= ideal + 1, (creates, ideal)
        assert sum(m.stats.shared for m in managers) >= (fleet - 1) * 2
        assert sum(m.stats.mints for m in managers) == creates
        assert served > 0
    assert_clean(caplog, srv)


async def test_concurrent_first_use_makes_one_mint(tmp_path: Path) -> None:
    async with LocalIcaServer(latency=0.2) as srv:
        store = FileTokenStore(tmp_path)
        managers = [manager(srv, store) for _ in range(8)]
        try:
            tokens = await asyncio.gather(*(m.token() for m in managers))
        finally:
            for m in managers:
                await m.aclose()
        assert len({t.value for t in tokens}) == 1
        assert srv.counts["ica.create"] == 1


def a_valid_jwt() -> str:
    now = time.time()
    return unsigned_jwt({"iat": now, "exp": now + 3600, "sub": "someone"})


BAD_ENTRIES: dict[str, Callable[[str], bytes]] = {
    "not JSON": lambda key: b"\x00\xffgarbage",
    "another key": lambda key: encode_entry("cd" * 32, Token.from_jwt(a_valid_jwt()), 0, 0),
    "expired token": lambda key: encode_entry(
        key,
        Token.from_jwt(unsigned_jwt({"iat": time.time() - 7200, "exp": time.time() - 3600})),
        0,
        0,
    ),
    "over the cap": lambda key: b'{"v":1,"pad":"' + b"x" * 100_000 + b'"}',
    "no decodable JWT": lambda key: (
        b'{"v":1,"key":"%s","token":"not-a-jwt","skew":0,"published":0}' % key.encode()
    ),
    "without expiry": lambda key: encode_entry(
        key, Token.from_jwt(unsigned_jwt({"iat": time.time()})), 0, 0
    ),
    "version 2": lambda key: b'{"v":2}',
}
WHY = {
    "not JSON": "not JSON",
    "another key": "another key",
    "expired token": "expired token",
    "over the cap": "over the",
    "no decodable JWT": "no decodable JWT",
    "without expiry": "without expiry",
    "version 2": "version-1",
}


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
async def test_a_bad_entry_is_ignored_with_a_warning_and_never_adopted(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalIcaServer() as srv:
        store = FileTokenStore(tmp_path)
        bad = BAD_ENTRIES[kind](key_of(srv))
        await store.publish(key_of(srv), bad, expires_at=9e9)  # nothing can fence it out
        async with manager(srv, store) as m:
            token = await m.token()
            assert m.stats.shared == 0
            assert m.stats.mints == 1
        assert srv.counts["ica.create"] == 1
        stored = await store.read(key_of(srv))
        assert stored is not None
        assert bad.startswith(stored)  # left as it was (the cap truncates the read only)
        warned = [w for w in store_warnings(caplog) if "ignored the token store's entry" in w]
        assert len(warned) == 1, store_warnings(caplog)
        assert WHY[kind] in warned[0]
        assert token.value not in caplog.text
    assert_clean(caplog, srv)


@pytest.mark.slow
async def test_a_token_a_resource_refused_is_not_adopted_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalIcaServer() as srv:
        store = FileTokenStore(tmp_path)
        one, two = manager(srv, store), manager(srv, store)
        async with (
            one,
            two,
            aiohttp.ClientSession(middlewares=(one.middleware,)) as s1,
            aiohttp.ClientSession(middlewares=(two.middleware,)) as s2,
        ):
            first = await one.token()
            assert (await two.token()).value == first.value
            # Both used it: a later 401 is a revocation, renewed at once. (A token that no
            # resource has taken yet may be early for one whose clock lags: probed, and kept
            # while it is young.)
            for session in (s1, s2):
                async with session.get(srv.resource_url) as r:
                    assert r.status == 200
            srv.revoke(first.value)
            srv.clock_offset += 5  # so that the next token expires later (its fence)
            async with s2.get(srv.resource_url) as r:
                assert r.status == 200
            second = await two.token()
            assert second.value != first.value
            async with s1.get(srv.resource_url) as r:
                assert r.status == 200
            assert (await one.token()).value == second.value  # adopted, not minted
            assert srv.counts["ica.create"] == 2
            assert (one.stats.mints, one.stats.shared) == (1, 1)
            assert (two.stats.mints, two.stats.shared) == (1, 1)
    assert_clean(caplog, srv)


class FlakyStore:
    """A real `FileTokenStore` that can be made to fail (raise) or hang on every call."""

    def __init__(self, inner: FileTokenStore) -> None:
        self.inner = inner
        self.mode = "ok"  # "ok", "raise" or "hang"
        self.calls = 0

    def __repr__(self) -> str:
        return "FlakyStore()"

    async def _call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        self.calls += 1
        if self.mode == "raise":
            msg = "redis://:hunter2@db:6379 refused"  # a store's own words: never repeated
            raise ConnectionRefusedError(msg)
        if self.mode == "hang":
            await asyncio.Event().wait()
        return await call()

    async def read(self, key: str) -> bytes | None:
        return await self._call(lambda: self.inner.read(key))  # type: ignore[no-any-return]

    async def acquire(self, key: str, ttl: float) -> object | None:
        return await self._call(lambda: self.inner.acquire(key, ttl))

    async def release(self, key: str, handle: object) -> None:
        await self._call(lambda: self.inner.release(key, handle))

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        return await self._call(  # type: ignore[no-any-return]
            lambda: self.inner.publish(key, entry, expires_at=expires_at)
        )

    async def wait(self, key: str, within: float) -> None:
        await self._call(lambda: self.inner.wait(key, within))

    async def aclose(self) -> None:
        return None


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raise", "hang"])
async def test_a_failing_store_costs_no_request_and_is_warned_about_once(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aioica_auth")
    async with LocalIcaServer(lifetime=2.0) as srv:
        flaky = FlakyStore(FileTokenStore(tmp_path))
        assert isinstance(flaky, TokenStore)
        flaky.mode = mode
        async with manager(srv, flaky, request_timeout=0.5) as m:
            for _ in range(3):  # three renewals with the store failing: each mints alone
                mints = m.stats.mints
                await m.token()
                await wait_until(lambda mints=mints: m.stats.mints > mints, 10)
            failed = [w for w in store_warnings(caplog) if "failed" in w]
            assert len(failed) == 1, store_warnings(caplog)
            assert "hunter2" not in caplog.text
            flaky.mode = "ok"
            mints = m.stats.mints
            await wait_until(lambda: m.stats.mints > mints, 10)  # through the store again
            assert any("answers again" in w for w in store_warnings(caplog))
            async with manager(srv, flaky) as other:  # and the fleet shares again
                newest = m._lease  # (handed out once it matures)
                assert newest is not None
                assert (await other.token()).value == newest.token.value
                assert other.stats.shared == 1
    assert_clean(caplog, srv)


@pytest.mark.slow
async def test_a_lease_held_with_nothing_published_is_waited_out_then_minted_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalIcaServer() as srv:
        store = FileTokenStore(tmp_path)
        async with squatted(srv, tmp_path):
            # A lease of 3 s, and patience for one more renewal of 2 s: 5 s.
            async with manager(srv, store, request_timeout=0.5) as m:
                loop = asyncio.get_running_loop()
                started = loop.time()
                await m.token()
                waited = loop.time() - started
            assert waited >= 4.5  # the patience, less a poll interval
            assert srv.counts["ica.create"] == 1
            assert any("lease was held" in w for w in store_warnings(caplog))


async def test_the_holder_publishes_for_the_next_manager_with_its_skew(tmp_path: Path) -> None:
    async with LocalIcaServer(clock_offset=120.0) as srv:  # the server's clock 2 min ahead
        store = FileTokenStore(tmp_path)
        async with manager(srv, store) as m:
            minted = await m.token()
        raw = await store.read(key_of(srv))
        assert raw is not None
        entry = decode_entry(raw, key_of(srv))
        assert entry.token.value == minted.value
        assert entry.skew is not None
        assert abs(entry.skew - 120.0) < 5
        assert minted.value not in repr(entry)
        async with manager(srv, store) as again:  # adopted, in the publisher's time frame
            assert (await again.token()).value == minted.value
            assert again.stats.shared == 1
        assert srv.counts["ica.create"] == 1


def test_what_cannot_be_shared_is_refused_at_construction(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    with pytest.raises(ValueError, match="psToken session cannot be shared"):
        TokenManager.for_console(PsToken("ps-token"), store=store)
    with pytest.raises(TypeError, match="not a Jwt"):
        TokenManager.for_ica(Jwt(a_valid_jwt()), store=store)
    with pytest.raises(TypeError, match="store must be a TokenStore"):
        TokenManager.for_ica(ApiKey("key"), store=object())  # type: ignore[arg-type]


async def test_console_api_key_tokens_are_shared(tmp_path: Path) -> None:
    async with LocalIcaServer() as srv:
        store = FileTokenStore(tmp_path)
        managers = [
            TokenManager.for_console(
                ApiKey(srv.api_key), base_url=srv.base_url, store=store, cid="c-1"
            )
            for _ in range(3)
        ]
        try:
            for m in managers:
                await m.token()
        finally:
            for m in managers:
                await m.aclose()
        assert srv.counts["console.create"] == 1


def test_keys_name_everything_that_changes_the_token_and_reveal_no_secret() -> None:
    base = store_key("ica", "https://a.example/ica/rest", ApiKey("secret-key"), ["tenant="])
    assert len(base) == 64
    assert int(base, 16) >= 0
    assert "secret" not in base
    assert base == store_key("ica", "https://a.example/ica/rest", ApiKey("secret-key"), ["tenant="])
    others = [
        store_key("console", "https://a.example/ica/rest", ApiKey("secret-key"), ["tenant="]),
        store_key("ica", "https://b.example/ica/rest", ApiKey("secret-key"), ["tenant="]),
        store_key("ica", "https://a.example/ica/rest", ApiKey("other-key"), ["tenant="]),
        store_key("ica", "https://a.example/ica/rest", ApiKey("secret-key"), ["tenant=t2"]),
        store_key("ica", "https://a.example/ica/rest", PsToken("secret-key"), ["tenant="]),
        store_key("ica", "https://a.example/ica/rest", BasicAuth("a", "bc"), []),
        store_key("ica", "https://a.example/ica/rest", BasicAuth("ab", "c"), []),
    ]
    assert len({base, *others}) == len(others) + 1


def test_an_entry_shows_no_token() -> None:
    token = Token.from_jwt(a_valid_jwt())
    entry = StoreEntry(token, None, 0.0)
    assert token.value not in repr(entry)
    assert token.value not in str(entry)


class BusyStore:
    """A store whose lease is always taken and whose `wait` returns at once, never yielding."""

    def __init__(self) -> None:
        self.waits = 0

    async def read(self, key: str) -> bytes | None:
        return None

    async def acquire(self, key: str, ttl: float) -> object | None:
        return None

    async def release(self, key: str, handle: object) -> None:
        return None

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        return True

    async def wait(self, key: str, within: float) -> None:
        self.waits += 1

    async def aclose(self) -> None:
        return None


@pytest.mark.slow
async def test_a_store_that_never_waits_cannot_make_the_manager_spin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with LocalIcaServer() as srv:
        store = BusyStore()
        loop = asyncio.get_running_loop()
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.05)

        beat = asyncio.create_task(ticker())
        try:
            async with manager(srv, store, request_timeout=0.5) as m:  # patience 5 s
                await m.token()
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) < 1.0  # the loop kept running throughout
        assert store.waits <= 5.0 / 0.01 + 1  # at least 10 ms a pass
        assert srv.counts["ica.create"] == 1
        assert any("lease was held" in w for w in store_warnings(caplog))


class PatientStore(FlakyStore):
    """A store whose `wait` takes all the time it is given (as a notification would)."""

    async def wait(self, key: str, within: float) -> None:
        await asyncio.sleep(within)


@pytest.mark.slow
async def test_a_wait_that_takes_its_whole_time_is_not_taken_for_a_hung_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalIcaServer() as srv:
        store = PatientStore(FileTokenStore(tmp_path))
        squatter = FileTokenStore(tmp_path)
        held = await squatter.acquire(key_of(srv), 60.0)
        assert held is not None
        try:
            async with manager(srv, store, request_timeout=0.5) as m:  # calls bounded by 0.5 s
                await m.token()
        finally:
            await squatter.release(key_of(srv), held)
        warned = store_warnings(caplog)
        assert any("lease was held" in w for w in warned), warned
        assert not any("failed" in w for w in warned), warned


async def test_a_shared_token_short_of_min_validity_is_renewed_once_for_the_need(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored 20-minute token issued 500 s ago (700 s left, before its refresh point):
    `token(min_validity=900)` adopts it, sees it says nothing of what a new token gives,
    and mints once: a 1,200 s token, no "cannot be met" warning."""
    async with LocalIcaServer(lifetime=1200, clock_offset=-500) as srv:
        async with manager(srv, None) as old:
            aged = await old.token()  # issued "500 s ago" by our clock
        srv.clock_offset = 0.0
        store = FileTokenStore(tmp_path)
        await store.publish(
            key_of(srv), encode_entry(key_of(srv), aged, 0.0, time.time()), expires_at=9e9
        )
        async with manager(srv, store) as m:
            token = await m.token(min_validity=900)
            assert (m.stats.shared, m.stats.mints) == (1, 1)
        assert token.value != aged.value
        assert token.expires_at is not None
        assert token.expires_at.timestamp() - time.time() > 1100
        assert srv.counts["ica.create"] == 2
        assert "cannot be met" not in caplog.text


@pytest.mark.parametrize("environment", [False, True], ids=["for_console", "from_environment"])
async def test_revoke_on_close_with_a_store_is_refused(
    tmp_path: Path, server: LocalIcaServer, environment: bool
) -> None:
    """A console manager that would revoke a shared token on close is refused, naming both
    keywords and why: one worker's deploy or scale-down must not revoke the fleet's token.
    Without the store, revoke_on_close still works (the manager's own token)."""
    store = FileTokenStore(tmp_path)
    if environment:
        environ = {"ICAV2_X_API_KEY": server.api_key}

        def build() -> TokenManager:
            return TokenManager.from_environment(
                console=True, environ=environ, home=tmp_path, base_url=server.base_url,
                store=store, revoke_on_close=True,
            )  # fmt: skip
    else:

        def build() -> TokenManager:
            return TokenManager.for_console(
                ApiKey(server.api_key), base_url=server.base_url, store=store,
                revoke_on_close=True,
            )  # fmt: skip

    with pytest.raises(ValueError, match="revoke_on_close cannot be used with a store") as info:
        build()
    assert "401" in str(info.value)
    assert server.api_key not in str(info.value)
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []  # nothing stored
    alone = TokenManager.for_console(
        ApiKey(server.api_key), base_url=server.base_url, revoke_on_close=True
    )
    async with alone:
        await alone.token()
    assert server.counts["console.revoke"] == 1
