"""`FileTokenStore` on a real file system: lease, fenced publish, permissions, damage."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aioica_auth import FileTokenStore, TokenStore, TokenStoreError
from aioica_auth._fleet.file_store import default_directory
from aioica_auth.testing import LocalIcaServer

from ..support import key_of

KEY = "ab" * 32
# Expiries an hour ahead and beyond: housekeeping deletes entries that expired a minute ago.
LATER = time.time() + 3600


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def chmod(path: Path, bits: int) -> None:
    path.chmod(bits)


async def test_it_is_a_token_store_with_a_private_directory(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "new" / "store")
    assert isinstance(store, TokenStore)
    assert mode(store.directory) == 0o700
    assert await store.read(KEY) is None
    assert repr(store) == f"FileTokenStore({str(store.directory)!r})"


async def test_publish_then_read_gives_the_bytes_back_in_a_0600_file(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    assert await store.publish(KEY, b"entry-1", expires_at=LATER + 100.0)
    assert await store.read(KEY) == b"entry-1"
    files = listing(tmp_path)
    assert files == [f"{KEY}.publish", f"{KEY}.token"]  # no temporary file left behind
    assert all(mode(tmp_path / name) == 0o600 for name in files)


async def test_publish_is_fenced_by_expiry(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    assert await store.publish(KEY, b"later", expires_at=LATER + 200.0)
    assert not await store.publish(KEY, b"earlier", expires_at=LATER + 100.0)
    assert not await store.publish(KEY, b"same", expires_at=LATER + 200.0)
    assert await store.read(KEY) == b"later"
    assert await store.publish(KEY, b"latest", expires_at=LATER + 300.0)
    assert await store.read(KEY) == b"latest"


async def test_concurrent_publishes_keep_the_latest_expiry(tmp_path: Path) -> None:
    stores = [FileTokenStore(tmp_path) for _ in range(4)]
    results = await asyncio.gather(
        *(stores[i % 4].publish(KEY, b"e%d" % i, expires_at=LATER + i) for i in range(40))
    )
    assert results.count(True) >= 1
    assert await stores[0].read(KEY) == b"e39"


async def test_the_lease_is_exclusive_until_released(tmp_path: Path) -> None:
    one, two = FileTokenStore(tmp_path), FileTokenStore(tmp_path)
    held = await one.acquire(KEY, 5.0)
    assert held is not None
    assert await two.acquire(KEY, 5.0) is None
    assert await one.acquire(KEY, 5.0) is None  # another call of the same store too
    await one.release(KEY, held)
    await one.release(KEY, held)  # twice is harmless
    again = await two.acquire(KEY, 5.0)
    assert again is not None
    await two.release(KEY, again)


async def test_a_holder_killed_mid_mint_frees_the_lease_at_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from aioica_auth import FileTokenStore
        async def main():
            held = await FileTokenStore({str(tmp_path)!r}).acquire({KEY!r}, 60.0)
            print("held" if held is not None else "busy", flush=True)
            time.sleep(60)
        asyncio.run(main())
        """
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        store = FileTokenStore(tmp_path)
        assert await store.acquire(KEY, 5.0) is None
        os.kill(holder.pid, signal.SIGKILL)
        await holder.wait()
        handle = await store.acquire(KEY, 5.0)
        assert handle is not None
        await store.release(KEY, handle)
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_wait_returns_within_its_bound(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await store.wait(KEY, 0.001)
    await store.wait(KEY, 10.0)  # a poll interval, at most 80 ms
    assert loop.time() - started < 5.0  # generous: a busy machine, not a timing claim


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    with pytest.raises(TokenStoreError, match="writable by others"):
        FileTokenStore(tmp_path)


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(TokenStoreError, match="cannot use"):
        FileTokenStore(target)


async def test_an_entry_others_can_write_is_refused(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    await store.publish(KEY, b"entry", expires_at=LATER + 1.0)
    chmod(tmp_path / f"{KEY}.token", 0o666)
    with pytest.raises(TokenStoreError, match="writable by others"):
        await store.read(KEY)


async def test_a_directory_made_writable_later_is_refused_at_the_next_call(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    chmod(tmp_path, 0o777)
    with pytest.raises(TokenStoreError, match="writable by others"):
        await store.acquire(KEY, 1.0)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
async def test_an_entry_another_user_owns_is_refused(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    await store.publish(KEY, b"entry", expires_at=LATER + 1.0)
    os.chown(tmp_path / f"{KEY}.token", 65534, 65534)
    with pytest.raises(TokenStoreError, match="owned by another user"):
        await store.read(KEY)


async def test_a_symlinked_entry_is_not_followed(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"aioica_auth-store 1 9e99\nplanted")
    (tmp_path / f"{KEY}.token").symlink_to(elsewhere)
    # ELOOP: the manager treats it as the store failing.
    with pytest.raises(OSError, match="symbolic links"):
        await store.read(KEY)


async def test_a_damaged_entry_is_read_as_it_is_and_replaced_by_a_publish(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    path = tmp_path / f"{KEY}.token"
    path.write_bytes(b"\x00garbage")
    path.chmod(0o600)
    assert await store.read(KEY) == b"\x00garbage"  # the manager refuses it, saying why
    assert await store.publish(KEY, b"good", expires_at=LATER + 1.0)
    assert await store.read(KEY) == b"good"


async def test_a_huge_entry_is_read_only_up_to_the_cap(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    await store.publish(KEY, b"x" * 10_000_000, expires_at=LATER + 1.0)
    raw = await store.read(KEY)
    assert raw is not None
    assert 32 * 1024 < len(raw) < 64 * 1024  # over the manager's cap, so refused unparsed


async def test_a_key_that_is_not_hex_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hex"):
        await FileTokenStore(tmp_path).read("../escape")


def test_the_default_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_directory() == tmp_path / "xdg" / "aioica_auth"
    assert FileTokenStore().directory == tmp_path / "xdg" / "aioica_auth"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # XDG: relative paths are invalid
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_directory() == tmp_path / "home" / ".cache" / "aioica_auth"


@pytest.mark.parametrize("directory", ["", Path()], ids=["str", "Path()"])
def test_an_empty_directory_is_refused_not_taken_for_the_current_one(
    directory: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FileTokenStore("") would have used the current directory: a ValueError says so. (Path()
    is "." and stays the explicit current directory.)"""
    monkeypatch.chdir(tmp_path)
    if isinstance(directory, str):
        with pytest.raises(ValueError, match="empty"):
            FileTokenStore(directory)
    else:
        assert FileTokenStore(directory).directory == Path()


@pytest.mark.parametrize("suffix", [".token", ".lock", ".publish"])
async def test_a_fifo_in_place_of_a_store_file_is_refused_at_once(
    tmp_path: Path, suffix: str
) -> None:
    """A FIFO where an entry, its lease or its publish lock belongs: refused as not a regular
    file, at once (the open blocked its thread for good, and asyncio.run's exit with it)."""
    store = FileTokenStore(tmp_path)
    os.mkfifo(tmp_path / (KEY + suffix), 0o600)
    calls = {
        ".token": lambda: store.read(KEY),
        ".lock": lambda: store.acquire(KEY, 10.0),
        ".publish": lambda: store.publish(KEY, b"{}", expires_at=1e10),
    }
    with pytest.raises(TokenStoreError, match="not a regular file"):
        await asyncio.wait_for(calls[suffix](), 5.0)


async def test_a_process_whose_entry_is_a_fifo_gets_its_token_and_exits(tmp_path: Path) -> None:
    """A real process: FIFOs at its entry's paths; its manager renews alone (one warning) and
    asyncio.run() returns, where it used to hang in a thread blocked in open()."""
    script = textwrap.dedent(
        """
        import asyncio, os, sys
        from aioica_auth import ApiKey, FileTokenStore, TokenManager

        async def main():
            manager = TokenManager.for_ica(
                ApiKey(os.environ["KEY"]), base_url=sys.argv[1], store=FileTokenStore(sys.argv[2])
            )
            async with manager:
                token = await manager.token()
            print("token", token.fingerprint, manager.stats.mints)

        asyncio.run(main())
        """
    )
    async with LocalIcaServer() as server:
        key = key_of(server)
        for suffix in (".token", ".lock", ".publish"):
            os.mkfifo(tmp_path / (key + suffix), 0o600)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, server.ica_base_url, str(tmp_path),
            env={**os.environ, "KEY": server.api_key},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30.0)
        except TimeoutError:
            proc.kill()
            await proc.communicate()
            raise
        assert proc.returncode == 0, err.decode()
        assert out.decode().startswith("token "), out
        assert out.decode().split()[-1] == "1"  # one mint, alone
        assert server.counts["ica.create"] == 1
        assert b"not a regular file" in err  # the store's one warning names why
        assert server.api_key.encode() not in out + err
