"""`SyncTokenManager`: a manager on a private loop in a daemon thread, for synchronous code.

The local server runs on the test's loop; the synchronous calls run in worker threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from aioica_auth import ApiKey, SyncTokenManager, Token
from aioica_auth.testing import LocalIcaServer

_T = TypeVar("_T")


def sync_ica(server: LocalIcaServer, **kw: Any) -> SyncTokenManager:
    return SyncTokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url, **kw)


async def in_thread(fn: Callable[[], _T]) -> _T:
    """Run a blocking call in a worker thread, so the test's loop (the server) keeps going."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_16_threads_share_one_token_stream(servers: Any) -> None:
    """16 threads x 2,000 headers() over three 1 s token lifetimes: every header is a bearer,
    and mints stay at one per refresh interval (L/2), as one async manager makes."""
    srv = await servers(lifetime=1.0)
    m = sync_ica(srv)
    seen: set[str] = set()

    def worker() -> None:
        for _ in range(2000):
            seen.add(m.headers()["Authorization"])
            time.sleep(0.0015)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, worker) for _ in range(16)))
    elapsed = time.monotonic() - started
    await in_thread(m.close)
    assert elapsed >= 3.0  # three lifetimes
    assert all(h.startswith("Bearer ") for h in seen)
    assert srv.counts["ica.create"] <= 1 + elapsed / 0.5 + 2
    assert len(seen) <= srv.counts["ica.create"]  # a token replaced before any thread saw it


async def test_fresh_token_is_served_without_the_loop_thread(server: LocalIcaServer) -> None:
    """Once a fresh token is held, headers() and token() answer in the calling thread: with
    the way to the loop thread cut, they still answer (and the same mapping each time)."""
    m = sync_ica(server)
    first = await in_thread(m.headers)

    def cut(work: Any) -> Any:
        work.close()
        raise AssertionError("crossed to the loop thread")

    m._call = cut  # type: ignore[method-assign]
    again = await in_thread(m.headers)
    token = await in_thread(m.token)
    del m._call
    await in_thread(m.close)
    assert again is first
    assert isinstance(token, Token)
    assert first["Authorization"] == token.authorization


async def test_min_validity_and_token_go_through_the_manager(server: LocalIcaServer) -> None:
    """headers(min_validity=...) and token() give the manager's answers, in any thread."""
    with sync_ica(server) as m:
        headers = await in_thread(lambda: m.headers(min_validity=60))
        token = await in_thread(lambda: m.token(min_validity=60))
        await in_thread(m.close)
    assert headers["Authorization"] == token.authorization
    assert server.counts["ica.create"] == 1


async def test_close_joins_the_thread_within_a_second(server: LocalIcaServer) -> None:
    """close() closes the manager and joins its thread within a second; twice is fine; use
    after close is a RuntimeError."""
    m = sync_ica(server)
    await in_thread(m.headers)
    started = time.monotonic()
    await in_thread(m.close)
    assert time.monotonic() - started < 1.0
    assert not m._thread.is_alive()
    assert m.closed
    await in_thread(m.close)
    with pytest.raises(RuntimeError, match="closed"):
        await in_thread(m.headers)


async def test_calling_inside_a_running_loop_is_a_clear_error(server: LocalIcaServer) -> None:
    """headers(), token() and close() inside a running event loop raise RuntimeError saying
    to use TokenManager, fresh token or not, instead of blocking the loop."""
    m = sync_ica(server)
    with pytest.raises(RuntimeError, match="running event loop"):
        m.headers()
    await in_thread(m.headers)
    for call in (m.headers, m.token, m.close):
        with pytest.raises(RuntimeError, match="use TokenManager"):
            call()
    await in_thread(m.close)


async def test_unclosed_manager_warns_and_still_stops(server: LocalIcaServer) -> None:
    """A manager dropped without close(): ResourceWarning, and its thread still ends."""
    m = sync_ica(server)
    ref = weakref.ref(m)

    def call() -> None:
        # Only a weak reference in the worker thread: the executor's work item (which holds
        # the callable) may outlive the awaited result by a moment, and `del m` below must
        # drop the last strong reference.
        live = ref()
        assert live is not None
        live.headers()

    await in_thread(call)
    thread = m._thread
    with pytest.warns(ResourceWarning, match="unclosed"):
        del m  # no cycle holds it: freed here
    await in_thread(lambda: thread.join(5.0))
    assert not thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
async def test_fork_gives_a_clear_error_in_the_child(server: LocalIcaServer) -> None:
    """After a fork, the child's calls raise RuntimeError naming the fork; the parent's
    manager keeps working."""
    m = sync_ica(server)
    await in_thread(m.headers)

    def fork_and_call() -> int:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 3
            try:
                m.headers()
            except RuntimeError as exc:
                code = 0 if "fork" in str(exc) else 2
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert await in_thread(fork_and_call) == 0
    assert (await in_thread(m.headers))["Authorization"].startswith("Bearer ")
    await in_thread(m.close)


def test_repr_names_no_secret() -> None:
    """The repr says what it wraps, never the key."""
    key = "k" * 16
    with SyncTokenManager.for_ica(ApiKey(key), base_url="http://127.0.0.1:9/ica/rest") as m:
        assert key not in repr(m)
        assert repr(m).startswith("SyncTokenManager(")


async def test_from_environment_finds_the_icav2_names(server: LocalIcaServer) -> None:
    """SyncTokenManager.from_environment reads ICAV2_X_API_KEY and ICAV2_BASE_URL (from an
    explicit environ) and serves a bearer from that server."""
    environ = {"ICAV2_X_API_KEY": server.api_key, "ICAV2_BASE_URL": server.ica_base_url}
    m = SyncTokenManager.from_environment(environ=environ, home="/nonexistent")
    try:
        headers = await in_thread(m.headers)
    finally:
        await in_thread(m.close)
    assert headers["Authorization"].startswith("Bearer ey")
    assert server.counts["ica.create"] == 1


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_close_waits_out_a_slow_revoke_and_leaves_nothing_behind(
    server: LocalIcaServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A console revoke_on_close whose revoke hangs: its own bound is request_timeout + 1 =
    7 s, beyond the 5 s that close() used to wait (a bare TimeoutError, an unclosed session
    and a pending task). Now close() returns once the manager is closed, with the revoke's
    failure logged."""
    m = SyncTokenManager.for_console(
        ApiKey(server.api_key), base_url=server.base_url, revoke_on_close=True, request_timeout=6
    )
    await in_thread(m.token)
    server.inject("console.revoke", kind="hang")
    started = time.monotonic()
    await in_thread(m.close)  # no TimeoutError
    took = time.monotonic() - started
    assert 6 <= took <= 6 + 1 + 5, took
    assert m.closed
    assert not m._thread.is_alive()
    assert m._loop.is_closed()
    assert any("revoking token" in r.getMessage() for r in caplog.records)
