"""A cache you can steer (issue 19, item 9): `token --force-refresh` and `token --invalidate`
against a local server, in real processes sharing one cache directory; and
`FileTokenStore.discard`, the compare-and-delete under them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from aioica_auth import FileTokenStore, Token
from aioica_auth._cli import commands as _cli_commands
from aioica_auth._cli.main import main
from aioica_auth.testing import LocalIcaServer

from ..support import ROOT, find_secret, run_cli
from . import test_cli_cache

pytestmark = pytest.mark.timeout(300)
# The CLI cache tests' fixtures: their server, child environment and cache directory.
server, env, cache = test_cli_cache.server, test_cli_cache.env, test_cli_cache.cache
RUNS = 64  # in-process runs at once (threads): 64 interpreters would load 2 cores for ~20 s
# Real processes at once: enough to prove the lease across processes without starving the
# suite's other timing tests under -n 8; AIOICA_TEST_FORCE_PROCESSES=64 runs the full count.
PROCESSES = int(os.environ.get("AIOICA_TEST_FORCE_PROCESSES", "8"))
# Not beside test_cli_wait's timed runs (one xdist worker runs the group in turn).
STORM = pytest.mark.xdist_group("cli_timing")
KEY = "ab" * 32


def clean(text: str, server: LocalIcaServer) -> None:
    """No API key and nothing secret-shaped in `text`."""
    assert find_secret(text, [server.api_key]) is None, text


async def token(server: LocalIcaServer, *args: str, env: dict[str, str]) -> str:
    """The JWT a `token ARGS` run prints (exit 0, nothing on stderr)."""
    rc, out, err = await run_cli("token", *args, env=env, within=60)
    assert (rc, err) == (0, ""), err
    Token.from_jwt(out.strip())
    return out.strip()


@pytest.mark.slow
@STORM
async def test_force_refresh_processes_at_once_mint_once(
    server: LocalIcaServer, env: dict[str, str]
) -> None:
    """`token --force-refresh` processes at once, on a cached token: one mint, and each
    prints that new token, which later runs then use. The key comes on stdin, written only
    once all exist, so none can mint before the last has started (the barrier that makes
    "at once" exact however slowly the interpreters load on 2 cores)."""
    cached = await token(server, env=env)
    assert server.counts["ica.create"] == 1
    key_env = {k: v for k, v in env.items() if k != "ICAV2_X_API_KEY"}
    argv = ["-m", "aioica_auth", "token", "--force-refresh", "--x-api-key-file", "-"]
    pipe = subprocess.PIPE
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, *argv, env=key_env, cwd=ROOT, stdin=pipe, stdout=pipe, stderr=pipe
        )
        for _ in range(PROCESSES)
    ]
    try:
        start = time.monotonic()
        async with asyncio.timeout(240):
            outputs = await asyncio.gather(*(p.communicate(server.api_key.encode()) for p in procs))
        print(f"{PROCESSES} force-refresh processes: {time.monotonic() - start:.1f} s")
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    assert [p.returncode for p in procs] == [0] * PROCESSES, outputs[0][1]
    printed = {out.decode().strip() for out, _ in outputs}
    for _, err in outputs:  # a wait on another run's renewal is said after 5 s, if it lasts
        for line in err.decode().splitlines():
            assert line.startswith("aioica-auth: waiting for "), line
    assert len(printed) == 1
    (fresh,) = printed
    assert fresh != cached
    Token.from_jwt(fresh)
    assert server.counts["ica.create"] == 2, "force-refreshes at once: exactly 1 mint"
    assert await token(server, env=env) == fresh
    assert server.counts["ica.create"] == 2


async def test_force_refresh_mints_each_time_one_after_another(
    server: LocalIcaServer, env: dict[str, str]
) -> None:
    """Force-refreshes one after another mint each time (the one before published before this
    one started), and each replaces the cached token, also within the same second (same
    `exp`: the stale entry is dropped, not fenced out)."""
    seen = [await token(server, env=env)]
    for _ in range(2):
        seen.append(await token(server, "--force-refresh", env=env))
        assert await token(server, env=env) == seen[-1]
    assert len(set(seen)) == 3
    assert server.counts["ica.create"] == 3


async def test_force_refresh_without_a_cache(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """With no cached token it mints and caches; with a cache it cannot use (others can
    write it) it mints all the same, after the cache's one warning line."""
    first = await token(server, "--force-refresh", env=env)
    assert await token(server, env=env) == first
    assert server.counts["ica.create"] == 1
    await asyncio.to_thread(cache.chmod, 0o777)
    rc, out, err = await run_cli("token", "--force-refresh", env=env)
    assert rc == 0
    assert out.strip() != first
    assert err.startswith("aioica-auth: warning: token cache not used")
    assert len(err.splitlines()) == 1
    clean(err, server)
    assert server.counts["ica.create"] == 2


async def test_invalidate_drops_the_cached_token(
    server: LocalIcaServer, env: dict[str, str]
) -> None:
    """--invalidate drops the cached token (one line on stderr, nothing on stdout); the next
    run mints a new one; with nothing cached it says so; it prints no token."""
    revoked = await token(server, env=env)
    rc, out, err = await run_cli("token", "--invalidate", env=env)
    assert (rc, out) == (0, "")
    assert err == "aioica-auth: cached token dropped: the next run mints a new one\n"
    fresh = await token(server, env=env)
    assert fresh != revoked
    assert server.counts["ica.create"] == 2
    assert await token(server, env=env) == fresh
    rc, out, err = await run_cli("token", "--invalidate", "-q", env=env)
    assert (rc, out, err) == (0, "", "")
    rc, _, err = await run_cli("token", "--invalidate", env=env)
    assert (rc, err) == (0, "aioica-auth: no cached token to drop\n")
    assert server.counts["ica.create"] == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--invalidate", "--header"],
        ["token", "--invalidate", "--force-refresh"],
        ["token", "--no-cache", "--force-refresh"],
        ["token", "--no-cache", "--invalidate"],
        ["whoami", "--force-refresh"],
    ],
)
async def test_steering_usage_errors(
    argv: list[str], server: LocalIcaServer, env: dict[str, str]
) -> None:
    """Options that cannot go together, or a command without them: exit 2, no request."""
    rc, out, err = await run_cli(*argv, env=env)
    assert (rc, out) == (2, "")
    assert "error:" in err
    clean(err, server)
    assert server.counts["ica.create"] == 0


# -- in-process --------------------------------------------------------------------------------


in_process = test_cli_cache.in_process  # main(argv) in a thread, the child environment


@STORM
async def test_64_force_refreshes_at_once_in_process_mint_once(
    server: LocalIcaServer,
    in_process: Callable[..., Awaitable[int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """64 `main(["token", "--force-refresh"])` at once, in threads sharing one cache
    directory (each its own event loop and FileTokenStore, as processes would), on a cached
    token: one mint, 64 times the same new token printed. A barrier in the key lookup (after
    each run noted its start, before any lease) makes "at once" exact."""
    assert await in_process("token") == 0
    cached = capsys.readouterr().out.strip()
    barrier = threading.Barrier(RUNS, timeout=120)
    original = _cli_commands.cache_key

    def cache_key(*args: Any) -> str:
        barrier.wait()
        return original(*args)

    monkeypatch.setattr(_cli_commands, "cache_key", cache_key)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=RUNS) as threads:  # the default executor has ~6
        argv = ["token", "--force-refresh"]
        runs = [loop.run_in_executor(threads, main, argv) for _ in range(RUNS)]
        codes = await asyncio.gather(*runs)
    assert codes == [0] * RUNS
    captured = capsys.readouterr()
    assert captured.err == ""
    fresh = {line for line in captured.out.split() if line}
    assert len(fresh) == 1, "every run printed the one new token"
    assert captured.out.count(next(iter(fresh))) == RUNS
    assert fresh != {cached}
    assert server.counts["ica.create"] == 2, "64 force-refreshes at once: exactly 1 mint"


async def test_in_process_force_refresh_and_invalidate(
    server: LocalIcaServer,
    in_process: Callable[..., Awaitable[int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process (main with arguments: the call's start counts, not the test process's):
    a force-refresh mints and is cached; --invalidate drops it; the next run mints."""
    assert await in_process("token") == 0
    first = capsys.readouterr().out
    assert await in_process("token", "--force-refresh") == 0
    forced = capsys.readouterr().out
    assert forced != first
    assert await in_process("token") == 0
    assert capsys.readouterr().out == forced
    assert await in_process("token", "--invalidate") == 0
    assert "dropped" in capsys.readouterr().err
    assert await in_process("token") == 0
    assert capsys.readouterr().out not in {first, forced}
    assert server.counts["ica.create"] == 3


# -- FileTokenStore.discard ---------------------------------------------------------------------


# Expiries an hour ahead: the store's sweep deletes entries long expired.
LATER = time.time() + 3600


async def test_discard_is_compare_and_delete(tmp_path: Path) -> None:
    """discard deletes the entry only while it holds exactly the bytes read: an entry
    published since is kept; a missing one is no error."""
    store = FileTokenStore(tmp_path / "store")
    assert await store.discard(KEY, b"anything") is False
    assert await store.publish(KEY, b"first", expires_at=LATER + 100)
    read = await store.read(KEY)
    assert read == b"first"
    assert await store.publish(KEY, b"second", expires_at=LATER + 200)
    assert await store.discard(KEY, read) is False
    assert await store.read(KEY) == b"second"
    assert await store.discard(KEY, b"second") is True
    assert await store.read(KEY) is None
    assert await store.publish(KEY, b"third", expires_at=LATER + 50)  # nothing fences it now
    await store.aclose()


async def test_discard_wakes_a_waiter(tmp_path: Path) -> None:
    """A waiter on the key sees the deletion as a change, as it sees a publish."""
    store = FileTokenStore(tmp_path / "store")
    other = FileTokenStore(tmp_path / "store")
    assert await store.publish(KEY, b"entry", expires_at=LATER + 100)
    assert await store.acquire(KEY, 30.0) is not None  # a lease held: only a change wakes
    assert await other.read(KEY) == b"entry"
    waiter = asyncio.ensure_future(other.wait(KEY, 30.0))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    assert await store.discard(KEY, b"entry")
    await asyncio.wait_for(waiter, 5)
    await store.aclose()
    await other.aclose()
