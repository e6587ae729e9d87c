"""`RedisTokenStore`'s waiting by push (pub/sub) and its event loops, against a real
`redis-server` (`tests/redis_server.py`): the commands a renewal costs (read from ``INFO
commandstats``), how soon a waiter hears of a publication, what a lost message costs, and one
store used from several event loops and threads."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio

from aioica_auth import ApiKey, RedisTokenStore, SyncTokenManager, TokenManager, TokenStoreError
from aioica_auth.testing import LocalIcaServer

from ..redis_server import DEFAULT_PASSWORD, RULE_COMMANDS, RedisServer
from ..support import find_secret

pytestmark = pytest.mark.timeout(60)


def new_key() -> str:
    """A fresh store key (64 hex digits, as `store_key` makes them)."""
    return secrets.token_hex(32)


async def until(predicate: Callable[[], bool], limit: float = 10.0) -> float:
    """Poll a condition (bounded); the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < limit, "condition not reached in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def subscribed(store: RedisTokenStore) -> bool:
    """Whether `store`'s subscription on the running loop is up."""
    here = store._loops.shares.get(asyncio.get_running_loop())
    return here is not None and here.listener.up


async def waited_through_a_publish(
    waiter: RedisTokenStore, holder: RedisTokenStore, key: str, *, after: float
) -> float:
    """Seconds `waiter.wait(key, 10)` took while `holder` published `b"e"` after `after` s."""

    async def publish() -> None:
        await asyncio.sleep(after)
        assert await holder.publish(key, b"e", expires_at=time.time() + 60)

    started = time.monotonic()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(publish())
        await waiter.wait(key, 10)
    return time.monotonic() - started


async def commands(admin: redis.asyncio.Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (INFO and CONFIG left out: ours)."""
    stats = await admin.info("commandstats")
    counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {k: v for k, v in counts.items() if k.split("|")[0] not in ("info", "config") and v}


# --- what a renewal costs ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mint", [0.2, 2.0])
async def test_a_renewal_costs_a_waiter_three_commands(
    redis_server: RedisServer, admin: redis.asyncio.Redis, mint: float
) -> None:
    """16 managers (a store and a connection each) renew one token at once against a token
    endpoint that takes `mint` seconds: at most 3 commands per manager and a handful for the
    holder, the same for a 0.2 s and a 2 s mint; none between refresh points."""
    managers_n, lifetime = 16, 4 * mint + 2
    stores = [RedisTokenStore(redis_server.url) for _ in range(managers_n)]
    async with LocalIcaServer(latency=mint, lifetime=lifetime) as srv:
        managers = [
            TokenManager.for_ica(
                ApiKey(srv.api_key), base_url=srv.ica_base_url, store=s, jitter=0.0
            )
            for s in stores
        ]
        try:
            first = await asyncio.gather(*(m.token() for m in managers))
            assert len({t.value for t in first}) == 1
            assert srv.counts["ica.create"] == 1
            await admin.config_resetstat()
            await asyncio.sleep(0.3)  # well before the refresh point (lifetime / 2)
            assert await commands(admin) == {}, "commands between refresh points"

            def renewed() -> bool:
                hot = [m._hot_lease for m in managers]
                return all(h is not None and h.token.value != first[0].value for h in hot)

            await until(renewed, limit=lifetime + 10)
            counts = await commands(admin)
        finally:
            for m in managers:
                await m.aclose()
            for s in stores:
                await s.aclose()
        assert srv.counts["ica.create"] == 2
    total = sum(counts.values())
    print(f"mint {mint} s: {total} commands, {total / managers_n:.2f} per manager: {counts}")
    # Each waiter: HGET, SET NX, HGET. The holder: HGET, SET NX, HGET, then the publish
    # script (EVALSHA and its HGET, HSET, PEXPIRE, PUBLISH) and the release script (EVALSHA
    # and its GET, DEL, PUBLISH): 12.
    assert total <= 3 * managers_n + 12, counts
    assert counts.get("psubscribe", 0) == 0  # subscribed once per store, at its first use


# --- how soon a waiter hears ----------------------------------------------------------------


async def test_a_waiter_hears_of_a_publication_at_once(redis_server: RedisServer) -> None:
    """50 publications while a waiter waits (its bound 10 s): each wait returns as the
    announcement arrives, having sent no command. Tight figures are for the benchmark; a
    busy CI machine gets a generous bound."""
    async with (
        RedisTokenStore(redis_server.url) as waiter,
        RedisTokenStore(redis_server.url) as holder,
    ):
        key = new_key()
        lease = await holder.acquire(key, 60)
        assert lease is not None
        latencies = []
        for n in range(50):
            assert await waiter.read(key) is None or n > 0
            assert await waiter.acquire(key, 60) is None
            assert subscribed(waiter)
            ready = asyncio.Event()

            async def wait_for_news(ready: asyncio.Event = ready) -> float:
                ready.set()
                await waiter.wait(key, 10)
                return time.perf_counter()

            task = asyncio.create_task(wait_for_news())
            await ready.wait()
            await asyncio.sleep(0.005)  # the waiter is in its wait (else it returns at once)
            sent = time.perf_counter()
            assert await holder.publish(key, b"e%d" % n, expires_at=time.time() + 60 + n)
            latencies.append(await task - sent)
        await holder.release(key, lease)
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(0.99 * len(latencies))]
    print(f"publish -> wake: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 0.25


async def test_news_since_the_read_ends_the_wait_at_once(redis_server: RedisServer) -> None:
    """A publication between a waiter's read and its wait (announced before it waits) is
    not missed: the wait returns at once."""
    async with (
        RedisTokenStore(redis_server.url) as waiter,
        RedisTokenStore(redis_server.url) as holder,
    ):
        key = new_key()
        lease = await holder.acquire(key, 60)
        assert await waiter.read(key) is None
        assert await waiter.acquire(key, 60) is None
        assert await holder.publish(key, b"e", expires_at=time.time() + 60)
        await until(
            lambda: waiter._loops.shares[asyncio.get_running_loop()].listener._seqs[key] > 0
        )
        started = time.monotonic()
        await waiter.wait(key, 10)
        assert time.monotonic() - started < 1.0
        await holder.release(key, lease)


async def test_a_lost_message_costs_latency_not_the_token(
    redis_server: RedisServer, admin: redis.asyncio.Redis
) -> None:
    """The subscription's connection killed (CLIENT KILL TYPE pubsub) just before a
    publication: the waiter still returns long before its bound (it resubscribes, or polls
    meanwhile) and reads the entry."""
    async with (
        RedisTokenStore(redis_server.url) as waiter,
        RedisTokenStore(redis_server.url) as holder,
    ):
        key = new_key()
        lease = await holder.acquire(key, 60)
        assert await waiter.read(key) is None
        assert await waiter.acquire(key, 60) is None
        assert subscribed(waiter)

        async def news() -> None:
            await asyncio.sleep(0.1)
            assert await admin.client_kill_filter(_type="pubsub") >= 1
            assert await holder.publish(key, b"e", expires_at=time.time() + 60)

        started = time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(news())
            await waiter.wait(key, 20)
        took = time.monotonic() - started
        assert took < 5.0, took
        assert await waiter.read(key) == b"e"
        await until(lambda: subscribed(waiter))  # and it is back
        await holder.release(key, lease)


async def test_a_server_restart_while_waiting(redis_server: RedisServer) -> None:
    """Redis restarted under a waiter: its wait fails or returns (no hang), and once Redis is
    back the store is subscribed again and hears of publications."""
    async with (
        RedisTokenStore(redis_server.url) as waiter,
        RedisTokenStore(redis_server.url) as holder,
    ):
        key = new_key()
        assert await waiter.read(key) is None
        redis_server.stop()
        await until(lambda: not subscribed(waiter))
        with pytest.raises(TokenStoreError, match="connection refused"):
            await waiter.wait(key, 5)  # it polls while unsubscribed, and the poll fails
        redis_server.start()
        await until(lambda: subscribed(waiter), limit=15)  # backing off up to 5 s
        lease = await holder.acquire(key, 60)
        assert lease is not None
        assert await waiter.read(key) is None
        assert await waiter.acquire(key, 60) is None
        assert await waited_through_a_publish(waiter, holder, key, after=0.1) < 2.0
        await holder.release(key, lease)


# --- ACLs ----------------------------------------------------------------------------------


async def test_the_recommended_acl_subscribes(redis_acl_server: RedisServer) -> None:
    """The ACL user of the docstring's rule (``&aioica_auth:*``): the store subscribes."""
    async with RedisTokenStore(redis_acl_server.user_url()) as store:
        assert await store.read(new_key()) is None
        await until(lambda: subscribed(store))


async def test_an_acl_without_channels_polls(
    redis_acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL user without the prefix's channels: every operation still works (the scripts'
    PUBLISH is refused quietly), a waiter polls instead, and one warning says so, naming no
    password."""
    password = "nochan-pw-" + secrets.token_hex(4)
    admin = redis.asyncio.Redis.from_url(redis_acl_server.url)
    try:
        await admin.execute_command(
            "ACL", "SETUSER", "nochan", "on", f">{password}", "~aioica_auth:*",
            "resetchannels", *RULE_COMMANDS, "-@dangerous",
        )  # fmt: skip
    finally:
        await admin.aclose()
    url = f"redis://nochan:{password}@127.0.0.1:{redis_acl_server.port}/0"
    async with RedisTokenStore(url) as waiter, RedisTokenStore(url) as holder:
        key = new_key()
        lease = await holder.acquire(key, 60)
        assert lease is not None
        assert await waiter.read(key) is None
        assert await waiter.acquire(key, 60) is None
        assert 0.19 <= await waited_through_a_publish(waiter, holder, key, after=0.2) < 3.0
        assert await waiter.read(key) == b"e"
        await holder.release(key, lease)
        assert await waiter.acquire(key, 5) is not None
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    about = [w for w in warned if "push notifications unavailable" in w]
    assert len(about) == 2, warned  # one per store (per loop), not one per attempt
    assert "permission denied" in about[0]
    assert find_secret(caplog.text, [password, DEFAULT_PASSWORD]) is None


# --- event loops ---------------------------------------------------------------------------


def _cycles(store: RedisTokenStore, key: str, rounds: int) -> None:
    """On a loop of its own (asyncio.run): take turns with other threads at the lease."""

    async def main() -> None:
        for n in range(rounds):
            await store.read(key)
            lease = await store.acquire(key, 5)
            if lease is None:
                await store.wait(key, 1)
                continue
            await store.publish(key, b"x", expires_at=time.time() + 60 + n)
            await store.release(key, lease)

    asyncio.run(main())


def _connections(url: str) -> int:
    async def count() -> int:
        client = redis.asyncio.Redis.from_url(url)
        try:
            return len(await client.client_list()) - 1
        finally:
            await client.aclose()

    return asyncio.run(count())


@pytest.mark.slow
def test_one_url_store_on_many_loops(redis_server: RedisServer) -> None:
    """One URL-built store used by four threads at once, each in its own `asyncio.run`, then
    by two more `asyncio.run`s in turn: no error, and each loop's connections are closed as
    its loop ends (nothing left open, nothing that warns)."""
    store = RedisTokenStore(redis_server.url)
    key = new_key()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            _cycles(store, key, 20)
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures, failures
    for _ in range(2):
        _cycles(store, key, 3)
    gc.collect()  # a leaked transport would warn now (an error here)
    assert store._loops.shares == {}
    assert _connections(redis_server.url) == 0
    asyncio.run(store.aclose())


async def test_a_callers_client_on_another_loop_is_refused(redis_server: RedisServer) -> None:
    """A caller's client serves the loop that first used the store; another loop gets a
    TokenStoreError that says why."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    store = RedisTokenStore(client)
    assert await store.read(new_key()) is None
    failure: list[BaseException] = []

    def elsewhere() -> None:
        try:
            asyncio.run(store.read(new_key()))
        except BaseException as exc:  # looked at below
            failure.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join, 10)
    assert len(failure) == 1
    assert isinstance(failure[0], TokenStoreError)
    assert "bound to the event loop it was first used on" in str(failure[0])
    assert await store.read(new_key()) is None  # still fine on its own loop
    await store.aclose()
    await client.aclose()


async def _in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn)


@pytest.mark.slow
async def test_two_sync_managers_share_one_store(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Two `SyncTokenManager`s (a loop and a thread each) on one URL-built store, over a few
    token lifetimes: no store failure, the mints of two managers on two stores; and the
    store works after, on a new loop."""

    async def run(shared: bool) -> int:
        stores = [RedisTokenStore(redis_server.url)]
        stores += stores if shared else [RedisTokenStore(redis_server.url)]
        async with LocalIcaServer(lifetime=1.0) as srv:
            managers = [
                SyncTokenManager.for_ica(ApiKey(srv.api_key), base_url=srv.ica_base_url, store=s)
                for s in stores
            ]

            def use(m: SyncTokenManager) -> None:
                ends = time.monotonic() + 2.5
                while time.monotonic() < ends:
                    assert m.headers()["Authorization"].startswith("Bearer ")
                    time.sleep(0.01)

            try:
                await asyncio.gather(*(_in_thread(lambda m=m: use(m)) for m in managers))
            finally:
                for m in managers:
                    await _in_thread(m.close)
            for s in set(stores):
                await s.aclose()
            return srv.counts["ica.create"]

    alone = await run(shared=False)
    together = await run(shared=True)
    print(f"mints over 2.5 s of 1 s tokens: {alone} on two stores, {together} on one")
    failed = [m for m in (r.getMessage() for r in caplog.records) if "token store" in m]
    assert failed == []
    assert together <= alone + 2
    assert together <= 2.5 / 0.5 + 3  # about one per refresh interval (L/2)


async def test_the_read_after_a_publication_is_served_by_its_message(
    redis_server: RedisServer, admin: redis.asyncio.Redis
) -> None:
    """A publication's message carries the entry: the waiter's read after it sends no
    command and gets exactly what was stored; a later publication replaces it; after the
    subscription was lost (messages may be missing), the read goes to Redis again."""
    async with (
        RedisTokenStore(redis_server.url) as waiter,
        RedisTokenStore(redis_server.url) as holder,
    ):
        key = new_key()
        assert await waiter.read(key) is None
        assert subscribed(waiter)
        for entry, expires in ((b"first", 60), (b"second", 120)):
            assert await holder.publish(key, entry, expires_at=time.time() + expires)
            await waiter.wait(key, 10)
            await admin.config_resetstat()
            assert await waiter.read(key) == entry
            assert await commands(admin) == {}
        # Read again with no news: from Redis.
        await admin.config_resetstat()
        assert await waiter.read(key) == b"second"
        assert (await commands(admin)).get("hget") == 1
        # A message from before the subscription changed is not trusted (others may have
        # been lost meanwhile): the read goes to Redis.
        listener = waiter._loops.shares[asyncio.get_running_loop()].listener
        assert await holder.publish(key, b"third", expires_at=time.time() + 180)
        await until(lambda: listener._seqs[key] >= 3)  # its message has come
        epoch = listener.epoch
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        await until(lambda: listener.epoch > epoch and listener.up)
        await admin.config_resetstat()
        assert await waiter.read(key) == b"third"
        assert (await commands(admin)).get("hget") == 1
