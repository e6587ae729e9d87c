"""`RedisTokenStore` against a real `redis-server` (the `redis_server` fixtures of
`tests/redis_server.py`): leases, fenced publishing, waiting, failures and what never leaks."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from aioica_auth import ApiKey, RedisTokenStore, TokenManager, TokenStore, TokenStoreError
from aioica_auth._fleet.redis_store import _Lease
from aioica_auth.testing import LocalIcaServer

from ..redis_server import ACL_PASSWORD, DEFAULT_PASSWORD, RedisServer
from ..support import find_secret, unsigned_jwt

pytestmark = pytest.mark.timeout(30)

# A failure against a server that is down (refused) is reported in milliseconds; this bound is
# what the tests allow, for a loaded machine.
DOWN_BOUND = 1.0
# A hung server (SIGSTOP) is reported after the URL client's 2 s read timeout, not retried.
HUNG_BOUND = 3.5


def new_key() -> str:
    """A fresh store key (64 hex digits, as `store_key` makes them)."""
    return secrets.token_hex(32)


def entry_for(exp: float, note: str = "") -> bytes:
    """An entry holding a (fake) JWT: a secret-shaped value the log scan would catch."""
    return f'{{"v":1,"token":"{unsigned_jwt({"exp": exp, "n": note})}"}}'.encode()


async def until(predicate: Callable[[], Awaitable[bool]], limit: float = 10.0) -> float:
    """Poll an async condition (bounded); the seconds it took."""
    started = time.monotonic()
    while not await predicate():
        assert time.monotonic() - started < limit, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it chains, as cause or as context (suppressed or not)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        node = todo.pop()
        if node is not None and all(node is not s for s in seen):
            seen.append(node)
            todo += [node.__cause__, node.__context__]
    return seen


def everything_said(exc: BaseException) -> str:
    """Every text an exception offers: str and repr of its chain, and its formatted traceback."""
    parts = [f"{e!s} {e!r}" for e in chain(exc)]
    parts.extend(traceback.format_exception(exc))
    return "\n".join(parts)


def no_redis_exception_chained(exc: BaseException) -> None:
    """redis-py's exceptions (whose frames hold the connection) are not in the chain."""
    for node in chain(exc)[1:]:
        assert not isinstance(node, redis.RedisError), repr(node)
        assert type(node).__module__ == "builtins", repr(node)


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisTokenStore]:
    """A store built from the server's URL, closed after the test."""
    async with RedisTokenStore(redis_server.url) as s:
        yield s


@pytest.fixture
async def other(redis_server: RedisServer) -> AsyncIterator[RedisTokenStore]:
    """A second store on its own client: another process of the fleet."""
    async with RedisTokenStore(redis_server.url) as s:
        yield s


# --- construction ------------------------------------------------------------------------


@pytest.mark.slow
def test_import_needs_no_redis() -> None:
    """`import aioica_auth` works without redis-py; building the store names the extra."""
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import aioica_auth\n"
        "try:\n"
        "    aioica_auth.RedisTokenStore('redis://127.0.0.1:1')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=20
    )
    assert "pip install 'aioica_auth[redis]'" in out.stdout


def test_bad_arguments() -> None:
    """Neither a URL nor an asyncio client, an empty prefix: TypeError, ValueError."""
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis, not int"):
        RedisTokenStore(3)  # type: ignore[arg-type]
    sync = redis.Redis()
    with pytest.raises(TypeError, match="not Redis"):
        RedisTokenStore(sync)  # type: ignore[arg-type]
    sync.close()
    with pytest.raises(ValueError, match="prefix"):
        RedisTokenStore("redis://127.0.0.1:1", prefix="")


def test_bad_url_quotes_none_of_it() -> None:
    """A URL redis-py cannot parse is a ValueError that quotes none of it (urllib would quote
    a "port" cut out of a password holding a slash)."""
    password = "s3cr/et"  # urlsplit reads "redis://user:s3cr" as a host and a port
    url = f"redis://user:{password}@127.0.0.1:6379/0"
    with pytest.raises(ValueError, match="not a Redis URL") as info:
        RedisTokenStore(url)
    assert find_secret(everything_said(info.value), ["s3cr"]) is None
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisTokenStore("http://127.0.0.1:6379")


async def test_is_a_token_store(store: RedisTokenStore, redis_server: RedisServer) -> None:
    """The store satisfies the `TokenStore` protocol; its repr names the server, not secrets."""
    assert isinstance(store, TokenStore)
    assert repr(store) == (
        f"RedisTokenStore(host='127.0.0.1', port={redis_server.port}, db=0, prefix='aioica_auth')"
    )


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py not importable: building a store is an ImportError saying what to install."""
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ImportError, match=r"pip install 'aioica_auth\[redis\]'"):
        RedisTokenStore("redis://127.0.0.1:1")


async def test_repr_of_other_places() -> None:
    """A Unix socket URL and a Sentinel client show where they go, and no password."""
    async with RedisTokenStore("unix://:pw-9c2e@/run/redis.sock?db=2") as store:
        assert repr(store) == "RedisTokenStore(path='/run/redis.sock', db=2, prefix='aioica_auth')"
    sentinel = redis.asyncio.Sentinel([("127.0.0.1", 1)], password="pw-9c2e")
    client = sentinel.master_for("ica", password="pw-9c2e")
    store = RedisTokenStore(client, prefix="p")
    assert repr(store) == "RedisTokenStore(sentinel_service='ica', db=0, prefix='p')"
    await store.aclose()
    await client.aclose()


# --- read, publish -----------------------------------------------------------------------


async def test_read_of_a_missing_key_is_none(store: RedisTokenStore) -> None:
    """Nothing published: None."""
    assert await store.read(new_key()) is None


async def test_publish_is_fenced_by_exp(
    store: RedisTokenStore, other: RedisTokenStore, admin: redis.asyncio.Redis
) -> None:
    """An entry is replaced only by one that expires later; equal or earlier is refused."""
    key, exp = new_key(), time.time() + 600
    first, same = entry_for(exp, "a"), entry_for(exp, "b")
    earlier, later = entry_for(exp - 1, "c"), entry_for(exp + 1, "d")
    assert await store.publish(key, first, expires_at=exp) is True
    assert await other.publish(key, same, expires_at=exp) is False
    assert await other.publish(key, earlier, expires_at=exp - 1) is False
    assert await other.read(key) == first
    assert await other.publish(key, later, expires_at=exp + 1) is True
    assert await store.read(key) == later
    assert await store.publish(key, first, expires_at=exp) is False
    assert await store.read(key) == later
    fields = await admin.hgetall(f"aioica_auth:{{{key}}}:token")
    assert fields == {b"exp": repr(exp + 1).encode(), b"entry": later}


async def test_entry_expires_with_its_token(
    store: RedisTokenStore, admin: redis.asyncio.Redis
) -> None:
    """The stored entry has a PX expiry at its token's `exp`, so it vanishes by itself."""
    key = new_key()
    exp = time.time() + 0.5
    assert await store.publish(key, entry_for(exp), expires_at=exp)
    pttl = await admin.pttl(f"aioica_auth:{{{key}}}:token")
    assert 0 < pttl <= 500
    took = await until(lambda: _missing(store, key), limit=5)
    assert took < 5
    assert time.time() >= exp - 0.01  # gone because it expired, not before
    # Once gone, an entry with an earlier exp than the vanished one is accepted again.
    assert await store.publish(key, entry_for(exp + 60), expires_at=exp + 60)


async def _missing(store: RedisTokenStore, key: str) -> bool:
    return await store.read(key) is None


async def test_an_expired_token_is_not_published(store: RedisTokenStore) -> None:
    """`expires_at` already past: not stored (it would expire at once), False; not finite:
    ValueError."""
    key = new_key()
    assert await store.publish(key, entry_for(time.time() - 1), expires_at=time.time() - 1) is False
    assert await store.read(key) is None
    with pytest.raises(ValueError, match="finite"):
        await store.publish(key, b"x", expires_at=float("nan"))


@pytest.mark.parametrize("size", [0, 1, 40_000, 1_000_000])
async def test_an_entry_is_stored_as_given(store: RedisTokenStore, size: int) -> None:
    """Any bytes of any size come back as they went in (checking them is the manager's job)."""
    key = new_key()
    entry = (bytes(range(256)) * (size // 256 + 1))[:size]
    assert await store.publish(key, entry, expires_at=time.time() + 60)
    assert await store.read(key) == entry


async def test_a_client_that_decodes_responses(redis_server: RedisServer) -> None:
    """A caller's client with `decode_responses=True` still reads bytes (entries are JSON)."""
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisTokenStore(client)
    key, entry = new_key(), entry_for(time.time() + 60)
    assert await store.publish(key, entry, expires_at=time.time() + 60)
    assert await store.read(key) == entry
    lease = await store.acquire(key, 5)
    assert lease is not None
    await store.release(key, lease)
    await store.wait(key, 1)
    await store.aclose()
    await client.aclose()


async def test_keys_live_under_the_prefix(redis_server: RedisServer) -> None:
    """Every key the store writes starts with its prefix."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    async with RedisTokenStore(client, prefix="team-a") as store:
        key = new_key()
        assert await store.publish(key, b"e", expires_at=time.time() + 60)
        assert await store.acquire(key, 5) is not None
        keys = sorted(await client.keys("*"))
        assert keys == [f"team-a:{{{key}}}:lease".encode(), f"team-a:{{{key}}}:token".encode()]
    await client.aclose()


# --- leases ------------------------------------------------------------------------------


async def test_lease_is_exclusive_between_clients(
    store: RedisTokenStore, other: RedisTokenStore
) -> None:
    """One holder at a time, across clients; free again once released."""
    key = new_key()
    lease = await store.acquire(key, 30)
    assert lease is not None
    assert await other.acquire(key, 30) is None
    assert await store.acquire(key, 30) is None  # not re-entrant either
    await store.release(key, lease)
    again = await other.acquire(key, 30)
    assert again is not None
    assert await store.acquire(key, 30) is None
    await other.release(key, again)


async def test_concurrent_acquires_give_one_lease(
    store: RedisTokenStore, other: RedisTokenStore
) -> None:
    """Forty acquires at once over two clients: exactly one lease."""
    key = new_key()
    got = await asyncio.gather(*(s.acquire(key, 30) for s in [store, other] * 20))
    assert sum(g is not None for g in got) == 1


async def test_lease_frees_itself_after_its_ttl(
    store: RedisTokenStore, other: RedisTokenStore, admin: redis.asyncio.Redis
) -> None:
    """A holder that never releases loses the lease when its ttl runs out (PX)."""
    key = new_key()
    started = time.monotonic()
    assert await store.acquire(key, 0.3) is not None
    assert 0 < await admin.pttl(f"aioica_auth:{{{key}}}:lease") <= 300
    assert await other.acquire(key, 30) is None

    async def taken() -> bool:
        return await other.acquire(key, 30) is not None

    await until(taken, limit=5)
    assert time.monotonic() - started >= 0.29


async def test_release_after_expiry_leaves_the_new_holder_alone(
    store: RedisTokenStore, other: RedisTokenStore, admin: redis.asyncio.Redis
) -> None:
    """Releasing a lease that ran out and was taken by another deletes nothing of the other's
    (compare-and-delete)."""
    key = new_key()
    stale = await store.acquire(key, 0.1)
    assert stale is not None

    async def taken() -> bool:
        return await other.acquire(key, 30) is not None

    await until(taken, limit=5)
    holder = await admin.get(f"aioica_auth:{{{key}}}:lease")
    await store.release(key, stale)
    assert await admin.get(f"aioica_auth:{{{key}}}:lease") == holder
    assert await store.acquire(key, 30) is None


async def test_release_checks_its_handle(store: RedisTokenStore) -> None:
    """A handle that is not a lease of this key is a ValueError; a bad ttl too."""
    key = new_key()
    lease = await store.acquire(key, 30)
    assert lease is not None
    with pytest.raises(ValueError, match="not a lease"):
        await store.release(new_key(), lease)
    with pytest.raises(ValueError, match="not a lease"):
        await store.release(key, object())
    for ttl in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive"):
            await store.acquire(key, ttl)
    assert "lease" in repr(lease)
    assert lease.token not in repr(lease)  # type: ignore[attr-defined]
    await store.release(key, lease)
    await store.release(key, lease)  # twice: the second finds nothing, and says nothing


# --- wait --------------------------------------------------------------------------------


async def test_wait_returns_at_once_while_the_lease_is_free(store: RedisTokenStore) -> None:
    """No holder: nothing to wait for; `within` of 0 or less returns at once too."""
    key = new_key()
    started = time.monotonic()
    await store.wait(key, 10)
    assert time.monotonic() - started < 0.5
    assert await store.acquire(key, 30) is not None
    started = time.monotonic()
    await store.wait(key, 0)
    await store.wait(key, -1)
    assert time.monotonic() - started < 0.5


async def test_wait_returns_by_its_bound(store: RedisTokenStore, other: RedisTokenStore) -> None:
    """A held lease and no news: back after `within` seconds (not before, not much after),
    however long that is: there is no cap, a wait costs no command."""
    key = new_key()
    assert await other.acquire(key, 30) is not None
    for within in (0.05, 0.2, 1.0):
        started = time.monotonic()
        await store.wait(key, within)
        took = time.monotonic() - started
        assert within - 0.01 <= took < within + 0.5


@pytest.mark.parametrize("news", ["release", "publish", "expiry"])
async def test_wait_returns_soon_after_news(
    store: RedisTokenStore, other: RedisTokenStore, news: str
) -> None:
    """A waiter learns of a release or a publication as it is announced, and of a lapsed
    lease as it lapses (its PTTL), long before its bound."""
    key = new_key()
    lease = await other.acquire(key, 0.2 if news == "expiry" else 30)
    assert lease is not None
    await store.read(new_key())  # the subscription is made on first use: now, not in the wait

    async def later() -> None:
        await asyncio.sleep(0.2)
        if news == "release":
            await other.release(key, lease)
        elif news == "publish":
            await other.publish(key, b"new", expires_at=time.time() + 60)

    async def subscribed() -> bool:
        return store._loops.shares[asyncio.get_running_loop()].listener.up

    await until(subscribed)
    started = time.monotonic()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(later())
        await store.wait(key, 20)
    took = time.monotonic() - started
    assert 0.19 <= took < 1.5


# --- failures ----------------------------------------------------------------------------


async def _every_operation(store: RedisTokenStore, key: str, lease: object) -> None:
    """Run each operation; each must raise TokenStoreError promptly."""
    calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("read", lambda: store.read(key)),
        ("acquire", lambda: store.acquire(key, 5)),
        ("release", lambda: store.release(key, lease)),
        ("publish", lambda: store.publish(key, b"e", expires_at=time.time() + 60)),
        ("wait", lambda: store.wait(key, 10)),
    ]
    for name, call in calls:
        started = time.monotonic()
        with pytest.raises(TokenStoreError) as info:
            await call()
        took = time.monotonic() - started
        assert took < DOWN_BOUND, f"{name} took {took:.2f} s to fail"
        message = str(info.value)
        assert message.startswith("Redis at 127.0.0.1:"), message
        assert f": {name}: connection refused" in message, message
        no_redis_exception_chained(info.value)
        assert isinstance(info.value.__cause__, ConnectionRefusedError)


async def test_server_down_then_back(
    redis_server: RedisServer, store: RedisTokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stopped: every operation fails at once with a TokenStoreError that says
    "connection refused"; restarted on the same port, the same store works again."""
    key = new_key()
    lease = await store.acquire(key, 30)  # a pooled connection now exists
    assert lease is not None
    redis_server.stop()
    await _every_operation(store, key, lease)
    redis_server.start()
    assert await store.read(key) is None  # no persistence: the restart lost everything
    again = await store.acquire(key, 30)
    assert again is not None
    assert await store.publish(key, b"e", expires_at=time.time() + 60)
    await store.release(key, again)
    assert await store.read(key) == b"e"


async def test_server_never_up(redis_server: RedisServer) -> None:
    """A URL nothing listens on: refused at once, for every operation."""
    port = redis_server.port
    redis_server.stop()
    key = new_key()
    async with RedisTokenStore(f"redis://127.0.0.1:{port}/0") as store:
        await _every_operation(store, key, _Lease(f"aioica_auth:{{{key}}}:lease", "0" * 32))


async def test_hung_server_times_out(redis_server: RedisServer, store: RedisTokenStore) -> None:
    """A server that accepts but never answers (SIGSTOP): "timed out" after the read timeout;
    `wait` returns by its own bound instead; after SIGCONT all is well."""
    key = new_key()
    assert await store.acquire(key, 30) is not None
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(TokenStoreError, match=r": read: timed out$") as info:
            await store.read(key)
        took = time.monotonic() - started
        assert 1.5 < took < HUNG_BOUND
        no_redis_exception_chained(info.value)
        assert isinstance(info.value.__cause__, TimeoutError)
        started = time.monotonic()
        await store.wait(key, 0.2)
        assert 0.19 <= time.monotonic() - started < 1.0
    finally:
        redis_server.resume()
    assert await store.acquire(key, 30) is None
    assert await store.read(key) is None


async def test_a_server_error_names_its_code_only(
    store: RedisTokenStore, admin: redis.asyncio.Redis
) -> None:
    """A key of the wrong type: "the server refused the command (WRONGTYPE)", nothing more."""
    key = new_key()
    await admin.set(f"aioica_auth:{{{key}}}:token", "not a hash")
    with pytest.raises(
        TokenStoreError, match=r"publish: the server refused the command \(WRONGTYPE\)$"
    ) as info:
        await store.publish(key, entry_for(time.time() + 60), expires_at=time.time() + 60)
    no_redis_exception_chained(info.value)
    with pytest.raises(TokenStoreError, match=r"WRONGTYPE"):
        await store.read(key)


async def test_a_server_that_hangs_up() -> None:
    """Something that accepts connections and closes them at once: "connection failed or
    lost" (after the one retry), at once."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with RedisTokenStore(f"redis://127.0.0.1:{port}/0") as store:
            started = time.monotonic()
            with pytest.raises(
                TokenStoreError, match=r": read: connection failed or lost$"
            ) as info:
                await store.read(new_key())
            assert time.monotonic() - started < DOWN_BOUND
            no_redis_exception_chained(info.value)
            assert type(info.value.__cause__) is ConnectionError
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_side_error_is_named(store: RedisTokenStore) -> None:
    """redis-py refusing an argument (an entry that is not bytes) is a TokenStoreError naming
    redis-py's error class only."""
    with pytest.raises(TokenStoreError, match=r": publish: DataError$"):
        await store.publish(new_key(), {"not": "bytes"}, expires_at=time.time() + 60)  # type: ignore[arg-type]


# --- ownership and lifecycle -------------------------------------------------------------


async def _clients(admin: redis.asyncio.Redis) -> int:
    return len(await admin.client_list())


async def test_a_url_client_is_closed_by_aclose(
    redis_server: RedisServer, admin: redis.asyncio.Redis
) -> None:
    """A store built from a URL closes its connections in `aclose` (idempotent): the one for
    its commands and the one of its subscription, made on first use; used after,
    it raises RuntimeError."""
    base = await _clients(admin)
    store = RedisTokenStore(redis_server.url)
    await store.read(new_key())
    assert await _clients(admin) == base + 2  # its commands' and its subscription's
    await store.aclose()
    await store.aclose()

    async def gone() -> bool:
        return await _clients(admin) == base

    await until(gone, limit=5)
    with pytest.raises(RuntimeError, match="closed"):
        await store.read(new_key())
    with pytest.raises(RuntimeError, match="closed"):
        await store.acquire(new_key(), 5)


async def test_a_callers_client_is_left_open(redis_server: RedisServer) -> None:
    """A client the caller built is theirs: `aclose` leaves it working."""
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_server.port)
    store = RedisTokenStore(client)
    assert repr(store) == (
        f"RedisTokenStore(host='127.0.0.1', port={redis_server.port}, db=0, prefix='aioica_auth')"
    )
    await store.read(new_key())
    await store.aclose()
    assert await client.ping() is True
    await client.aclose()


def test_an_unclosed_url_store_warns() -> None:
    """A URL-built store dropped unclosed warns ResourceWarning (a caller's client: no)."""
    store = RedisTokenStore("redis://127.0.0.1:1/0")
    with pytest.warns(ResourceWarning, match="unclosed RedisTokenStore"):
        store.__del__()
    store._closed = True  # the real __del__ must not warn again


# --- secrets -----------------------------------------------------------------------------


async def test_no_password_anywhere(
    redis_acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong passwords, default user and ACL user: "authentication failed", and no password
    in repr, message, chain, traceback or log; the right ones work, the ACL user's with the
    rule the docstring recommends."""
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-pw-5d1c8e"
    urls = [
        redis_acl_server.user_url(wrong),
        f"redis://:{wrong}@127.0.0.1:{redis_acl_server.port}/0",
        f"redis://127.0.0.1:{redis_acl_server.port}/0",  # no password at all
    ]
    passwords = [wrong, ACL_PASSWORD, DEFAULT_PASSWORD]
    texts = []
    for url in urls:
        async with RedisTokenStore(url) as store:
            texts.append(repr(store))
            for call in (store.read(new_key()), store.acquire(new_key(), 5)):
                with pytest.raises(TokenStoreError) as info:
                    await call
                message = str(info.value)
                assert "authentication failed" in message or "NOAUTH" in message, message
                texts.append(everything_said(info.value))
                no_redis_exception_chained(info.value)
    for url in (redis_acl_server.url, redis_acl_server.user_url()):
        async with RedisTokenStore(url) as store:
            texts.append(repr(store))
            key = new_key()
            lease = await store.acquire(key, 30)
            assert lease is not None
            await store.wait(key, 0.05)
            assert await store.publish(key, b"e", expires_at=time.time() + 60)
            assert await store.read(key) == b"e"
            await store.release(key, lease)
    texts.extend(r.getMessage() for r in caplog.records)
    for text in texts:
        assert find_secret(text, passwords) is None, text


async def test_acl_user_outside_its_keys(redis_acl_server: RedisServer) -> None:
    """An ACL user limited to ``~aioica_auth:*`` and a store with another prefix: "permission
    denied by the server's ACL"."""
    async with RedisTokenStore(redis_acl_server.user_url(), prefix="other") as store:
        with pytest.raises(TokenStoreError, match="read: permission denied by the server's ACL"):
            await store.read(new_key())


async def test_no_entry_in_logs(store: RedisTokenStore, caplog: pytest.LogCaptureFixture) -> None:
    """Publishing, reading and refusing entries logs none of their content (the autouse log
    scan would catch the JWT too)."""
    key, exp = new_key(), time.time() + 60
    marker = "marker-" + secrets.token_hex(8)
    entry = entry_for(exp, marker)
    assert await store.publish(key, entry, expires_at=exp)
    assert not await store.publish(key, entry, expires_at=exp)
    assert await store.read(key) == entry
    logged = [r.getMessage() for r in caplog.records]
    assert any("published" in m for m in logged)
    assert find_secret("\n".join(logged), [marker]) is None


# --- with the managers of a fleet --------------------------------------------------------


def _manager(srv: LocalIcaServer, store: RedisTokenStore, **policy: Any) -> TokenManager:
    return TokenManager.for_ica(
        ApiKey(srv.api_key), base_url=srv.ica_base_url, store=store, **policy
    )


async def test_a_fleet_on_redis_makes_one_mint(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight managers on eight Redis clients, all starting at once against a slow token
    endpoint: one mint; the others wait on the lease and adopt the published token."""
    stores = [RedisTokenStore(redis_server.url) for _ in range(8)]
    async with LocalIcaServer(latency=0.3) as srv:
        managers = [_manager(srv, s) for s in stores]
        try:
            tokens = await asyncio.gather(*(m.token() for m in managers))
        finally:
            for m in managers:
                await m.aclose()
            for s in stores:
                await s.aclose()
        assert len({t.value for t in tokens}) == 1
        assert srv.counts["ica.create"] == 1
        assert sum(m.stats.shared for m in managers) == 7
        assert find_secret(caplog.text, [srv.api_key]) is None


async def test_a_hung_redis_costs_a_manager_one_store_bound(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis frozen (SIGSTOP): a manager's first token comes after the fleet's bound on one
    store call (request_timeout, here 1 s) and a mint of its own, with one warning that names
    no secret."""
    async with RedisTokenStore(redis_server.url) as store, LocalIcaServer() as srv:
        m = _manager(srv, store, request_timeout=1.0)
        redis_server.pause()
        try:
            started = time.monotonic()
            token = await m.token()
            took = time.monotonic() - started
        finally:
            redis_server.resume()
            await m.aclose()
        assert token.value
        assert took < HUNG_BOUND, took
        print(f"first token with Redis frozen: {took:.2f} s")
        assert srv.counts["ica.create"] == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, warnings
        assert find_secret(caplog.text, [srv.api_key]) is None
