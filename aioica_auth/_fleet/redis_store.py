"""`RedisTokenStore`: the `TokenStore` of a fleet spread over many hosts, on `redis.asyncio`.

redis-py is an optional dependency (`pip install 'aioica_auth[redis]'`), imported when a store
is built, so `import aioica_auth` works without it.

Keys (``P`` is the prefix, ``K`` the store key, 64 hex digits; ``{K}`` is a Redis Cluster hash
tag, so one credential's keys and channel live on one node):

```
P:{K}:token   a hash: "entry" (the bytes published) and "exp" (the token's `exp`, the fencing
              token); expires by itself (PEXPIRE) when the token does
P:{K}:lease   a string: the random token of the lease holder; expires by itself after the ttl
P:{K}:events  the channel the publish and release scripts announce on: "released", or
              "published" and the entry stored (so a waiter needs no read after it: a
              bearer secret, like the entry; guard the channels as the keys)
```

Every write is one atomic command or Lua script: the lease is `SET P:{K}:lease <random> NX PX
ttl`; releasing it is a compare-and-delete script (delete only if it still holds our random
token); publishing is a script that replaces the entry only when the stored `exp` is earlier
than the new one. No Redis exception leaves this module: each becomes a `TokenStoreError`
whose message says why in words and whose cause is a fresh builtin error, never redis-py's
(whose frames hold the connection, the password among its fields): `redis_client` says why,
and builds the clients of URLs with their bounds.

Waiting is pushed, and what a store holds is per event loop (`redis_push`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import random
import re
import secrets
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from .._errors import TokenStoreError
from .._events import Event, fields
from .redis_client import RedisClient, as_bytes, from_url, store_error, where
from .redis_push import Listener, Loops, Mark, Share

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisTokenStore"]

logger = logging.getLogger("aioica_auth")

_T = TypeVar("_T")

# wait() while the subscription is down: it polls after 50 ms, then twice as late each time up
# to 1 s apart (jittered, so a fleet does not poll in step).
POLL_FIRST = 0.05
POLL_MAX = 1.0
# A lapsed lease is waited for this long past its PTTL (rounded to ms by Redis).
_LAPSE = 0.01

# KEYS[1] the token hash; ARGV[1] exp, ARGV[2] the entry, ARGV[3] the expiry in ms, ARGV[4]
# the channel. pcall: a PUBLISH that an ACL refuses costs waiters latency, not the entry.
_PUBLISH = """
local stored = redis.call('HGET', KEYS[1], 'exp')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('HSET', KEYS[1], 'exp', ARGV[1], 'entry', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.pcall('PUBLISH', ARGV[4], 'published\\n' .. ARGV[2])
return 1
"""

# KEYS[1] the lease; ARGV[1] the holder's random token, ARGV[2] the channel.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.pcall('PUBLISH', ARGV[2], 'released')
    return 1
end
return 0
"""

_EXTRA = "RedisTokenStore needs redis-py: pip install 'aioica_auth[redis]'"
_GLOB = re.compile(r"([\\*?\[\]])")


@attrs.frozen(repr=False)
class _Lease:
    """A lease `acquire` took: the Redis key and the random token that proves we hold it."""

    name: str
    token: str

    def __repr__(self) -> str:
        return f"<lease {self.name}>"


@attrs.frozen
class _Seen:
    """A task's last look at a key (its read, or its failed acquire): where the key's
    messages stood then, and when the lease it found must have lapsed (loop time)."""

    here: Share
    key: str
    mark: Mark
    lease_end: float = math.inf


# Per task (a context is a task's own): what `wait` needs from the read before it.
_SEEN: contextvars.ContextVar[_Seen | None] = contextvars.ContextVar(
    "aioica_auth_redis_seen", default=None
)


class RedisTokenStore:
    """A `TokenStore` in Redis, for the managers of a fleet on many hosts.

    It stores, per store key, the entry a manager published (a JSON document holding the
    token itself, so a **bearer secret**) beside the token's `exp`, and a renewal lease.
    Anyone who can read the prefix's keys can use the token: in production connect with
    TLS (``rediss://``) as an ACL user limited to them and to the prefix's channels, for the
    default prefix ``ACL SETUSER ica on >PASSWORD ~aioica_auth:* &aioica_auth:* +@read
    +@write +@scripting +@pubsub -@dangerous`` (the store subscribes to the pattern
    ``aioica_auth:*``, which an ACL must allow literally: ``&aioica_auth:*``). Without the
    channels the store still works, and waiters poll (one warning says so). Nothing of an
    entry, and no password, is ever logged or put in an error.

    Keys (see the module): ``{prefix}:{K}:token`` and ``{prefix}:{K}:lease``, and the channel
    ``{prefix}:{K}:events``; ``{K}``, the store key, is a Redis Cluster hash tag, so the three
    of one credential share a slot, hence a node (the scripts touch one key each; a cluster
    broadcasts PUBLISH). Writes are atomic (`SET NX PX`, Lua scripts); an entry replaces
    another only if its token expires later (the JWT's `exp` is the fencing token), and
    expires from Redis with its token.

    Waiting is pushed: the store holds one pattern subscription per event loop (its own
    connection, made when the store is first used on that loop) and `wait` returns as soon as
    a publication or release of its key is announced, having sent no command (a publication's
    message carries the entry, so the read that follows sends none either); after `within`
    at the latest, or when the lease it found must have lapsed (a holder that died announces
    nothing). While the subscription is down (it reconnects with a backoff), `wait` polls
    instead, 50 ms then twice as late each time, up to 1 s apart: a lost message costs
    latency, never a token.

    Event loops: a store built from a URL makes a client and a subscription per event loop
    that uses it (threads, `SyncTokenManager`s, successive `asyncio.run`s), and closes them as
    that loop shuts down its async generators (`asyncio.run`, `asyncio.Runner` and
    `SyncTokenManager` do) or in `aclose` on that loop. A loop closed without that (a bare
    `loop.close()`) leaves them to the garbage collector; they are dropped, never used again.
    A client you give is bound to the first loop that uses the store: another loop gets a
    `TokenStoreError` saying so.

    Args:
        client_or_url: A `redis.asyncio.Redis` you built (TLS, ACL, Sentinel's
            `master_for`, ...), which `aclose` leaves open, since it is yours; or a URL
            (``redis://``, ``rediss://``, ``unix://``) for clients built here with a 2 s
            connect and read timeout and one immediate retry of a lost connection, closed
            by `aclose`.
        prefix: The first part of every key and channel (and of the ACL patterns).

    Raises:
        ImportError: redis-py is not installed.
        ValueError: not a Redis URL, or an empty prefix.
        TypeError: neither a URL nor a `redis.asyncio.Redis`.
    """

    def __init__(self, client_or_url: str | RedisClient, *, prefix: str = "aioica_auth"):
        try:
            import redis.asyncio
            from redis.exceptions import RedisError
        except ImportError:
            raise ImportError(_EXTRA) from None
        if not prefix:
            msg = "the prefix of a RedisTokenStore must not be empty"
            raise ValueError(msg)
        self._prefix = prefix
        self._closed = False
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        self._url: str | None = None
        if isinstance(client_or_url, str):
            client = from_url(client_or_url)
            if client is None:
                # Raised outside the `except`: urllib's messages can quote part of the URL
                # (a "port" cut out of a password holding a slash).
                msg = "not a Redis URL: expected redis://, rediss:// or unix:// and a valid port"
                raise ValueError(msg)
            self._owned = True
            self._url = client_or_url  # for the clients of other loops; never shown
        elif isinstance(client_or_url, redis.asyncio.Redis):
            client = client_or_url
            self._owned = False
        else:
            msg = f"a Redis URL or a redis.asyncio.Redis, not {type(client_or_url).__name__}"
            raise TypeError(msg)
        self._loops = Loops(client, self._owned, self._new_client, self._share)
        self._shown, self._where = where(client)
        self._pattern = _GLOB.sub(r"\\\1", prefix) + ":*"

    def __repr__(self) -> str:
        return f"RedisTokenStore({self._shown}, prefix={self._prefix!r})"

    def __del__(self) -> None:
        if getattr(self, "_owned", False) and not self._closed:
            warnings.warn(
                f"unclosed {self!r}: call `await store.aclose()`",
                ResourceWarning,
                stacklevel=2,
            )

    async def __aenter__(self) -> RedisTokenStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def read(self, key: str) -> bytes | None:
        """The entry published for `key`, or None.

        Raises:
            TokenStoreError: Redis failed or could not be reached.
        """
        here = await self._here()
        listener, seen = here.listener, _SEEN.get()
        if seen is not None and seen.here is here and seen.key == key:
            # A waiter woken by a publication: the message carried the entry it stored.
            pushed = listener.pushed(key, seen.mark)
            if pushed is not None:
                _SEEN.set(_Seen(here, key, listener.mark(key)))
                return pushed
        _SEEN.set(_Seen(here, key, listener.mark(key)))
        value = await self._call("read", lambda: here.client.hget(self._token_key(key), "entry"))
        return as_bytes(value)

    async def acquire(self, key: str, ttl: float) -> object | None:
        """Take the renewal lease of `key` for `ttl` seconds (`SET NX PX`), without waiting.

        Returns:
            A handle for `release`, or None while another holder has the lease.

        Raises:
            ValueError: `ttl` is not a positive number of seconds.
            TokenStoreError: Redis failed or could not be reached.
        """
        if not (math.isfinite(ttl) and ttl > 0):
            msg = f"a lease ttl must be a positive number of seconds, not {ttl!r}"
            raise ValueError(msg)
        here = await self._here()
        lease = _Lease(self._lease_key(key), secrets.token_hex(16))
        ms = max(1, math.ceil(ttl * 1000))
        sent, mark = asyncio.get_running_loop().time(), here.listener.mark(key)
        taken = await self._call(
            "acquire", lambda: here.client.set(lease.name, lease.token, nx=True, px=ms)
        )
        outcome, said = ("taken", "taken") if taken else ("held", "held by another")
        extra = fields(Event.STORE_LEASE, key=key[:8], outcome=outcome)
        logger.debug("store lease %s…: %s", key[:8], said, extra=extra)
        if taken:
            return lease
        # The holder's lease lapses within `ttl` at the latest (the fleet's managers all use
        # one ttl); `wait` keeps the mark of the read before, if there was one.
        seen = _SEEN.get()
        if seen is None or seen.here is not here or seen.key != key:
            seen = _Seen(here, key, mark)
        _SEEN.set(attrs.evolve(seen, lease_end=sent + ttl + _LAPSE))
        return None

    async def release(self, key: str, handle: object) -> None:
        """Give back the lease `handle`, unless it ran out (and may be another's now).

        Raises:
            ValueError: `handle` is not a lease this kind of store took for `key`.
            TokenStoreError: Redis failed or could not be reached.
        """
        if not isinstance(handle, _Lease) or handle.name != self._lease_key(key):
            msg = "not a lease that a RedisTokenStore with this prefix took for this key"
            raise ValueError(msg)
        here = await self._here()
        args = [handle.token, self._channel(key)]
        freed = await self._call("release", lambda: here.scripts[1](keys=[handle.name], args=args))
        outcome, said = ("released", "released") if freed else ("ran_out", "had run out")
        extra = fields(Event.STORE_LEASE, key=key[:8], outcome=outcome)
        logger.debug("store lease %s…: %s", key[:8], said, extra=extra)

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        """Store `entry` for `key` unless the stored one expires at or after `expires_at`.

        The entry expires from Redis by itself at `expires_at` (by this host's clock); one
        whose `expires_at` has already passed is not stored.

        Returns:
            Whether `entry` was stored.

        Raises:
            ValueError: `expires_at` is not a finite number.
            TokenStoreError: Redis failed or could not be reached.
        """
        if not math.isfinite(expires_at):
            msg = f"expires_at must be a finite Unix time, not {expires_at!r}"
            raise ValueError(msg)
        here = await self._here()
        ms = math.ceil((expires_at - time.time()) * 1000)
        if ms <= 0:
            extra = fields(Event.STORE_PUBLISH, key=key[:8], outcome="expired")
            msg = "store entry %s…: not published, its token has expired"
            logger.debug(msg, key[:8], extra=extra)
            return False
        args: list[bytes | str | int] = [repr(float(expires_at)), entry, ms, self._channel(key)]
        stored = bool(
            await self._call("publish", lambda: here.scripts[0]([self._token_key(key)], args))
        )
        outcome = "published" if stored else "superseded"
        said = "published" if stored else "a later one is stored"
        extra = fields(Event.STORE_PUBLISH, key=key[:8], outcome=outcome)
        logger.debug("store entry %s…: %s", key[:8], said, extra=extra)
        return stored

    async def wait(self, key: str, within: float) -> None:
        """Return once the entry of `key` may have changed or its lease may be free, and
        after `within` seconds at the latest.

        After a `read` or failed `acquire` of `key` in the same task, this sends no command
        while the subscription is up: it returns at once if a publication or release was
        announced since that read, else when one is, or when the lease found must have
        lapsed, or after `within`. Without one, it first asks the lease's PTTL (one command;
        no lease: it returns at once). With the subscription down it polls (see the class).

        Raises:
            TokenStoreError: Redis failed or could not be reached.
        """
        if not within > 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        try:
            # The timeout cuts a hung call short. It is not the only check of the deadline:
            # on Python 3.11, redis-py can swallow a cancellation that lands as a command is
            # sent, and then the call simply returns.
            async with asyncio.timeout_at(deadline):
                here = await self._here()
                listener = here.listener
                seen = _SEEN.get()
                if seen is not None and seen.here is here and seen.key == key:
                    mark, deadline = seen.mark, min(deadline, seen.lease_end)
                else:
                    mark = listener.mark(key)
                    lease = self._lease_key(key)
                    ms = await self._call("wait", lambda: here.client.pttl(lease))
                    if ms == -2:  # Redis: no such key, so the lease is free
                        return
                    if ms >= 0:
                        deadline = min(deadline, loop.time() + ms / 1000 + _LAPSE)
                if listener.up:  # a mark from before it was up is news: back at once
                    await listener.until_news(key, mark, deadline)
                    if listener.up or loop.time() >= deadline:
                        return  # news, a new subscription (messages may be lost), or the bound
                await self._poll(here, key, deadline)
        except TimeoutError:
            # Only the bound itself: Redis's own failures are TokenStoreErrors by now.
            return

    async def aclose(self) -> None:
        """Close what this store holds on the running loop: its subscription, and its client
        if the store built it (from a URL; a caller's client stays open). Other loops' are
        closed as those loops shut down. Idempotent; the store is unusable after."""
        self._closed = True
        await self._loops.aclose()

    def _token_key(self, key: str) -> str:
        return f"{self._prefix}:{{{key}}}:token"

    def _lease_key(self, key: str) -> str:
        return f"{self._prefix}:{{{key}}}:lease"

    def _channel(self, key: str) -> str:
        return f"{self._prefix}:{{{key}}}:events"

    def _key_of(self, channel: object) -> str | None:
        """The store key a channel of this prefix names, or None."""
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        head, tail = f"{self._prefix}:{{", "}:events"
        if isinstance(channel, str) and channel.startswith(head) and channel.endswith(tail):
            return channel[len(head) : -len(tail)]
        return None

    async def _here(self) -> Share:
        """What this store holds on the running loop, made on its first use there."""
        if self._closed:
            msg = f"{self!r} is closed"
            raise RuntimeError(msg)
        return await self._loops.here()

    def _new_client(self) -> redis.asyncio.Redis:
        built = from_url(self._url or "")
        assert built is not None  # parsed once already
        return built

    def _share(self, client: Any) -> Share:
        listener = Listener(client, self._pattern, self._key_of, self._where)
        return Share(client, self._owned, listener, client.register_script, (_PUBLISH, _RELEASE))

    async def _poll(self, here: Share, key: str, deadline: float) -> None:
        """Poll the entry's `exp` and the lease until either changes or the lease is free,
        the subscription changes, or `deadline` (loop time); backing off (`POLL_FIRST` to
        `POLL_MAX`)."""
        loop = asyncio.get_running_loop()
        epoch = here.listener.epoch
        first = await self._state(here, key)
        delay = POLL_FIRST
        while first[1] is not None and loop.time() < deadline:
            pause = delay * random.uniform(0.75, 1.25)
            await here.listener.sleep(key, min(deadline, loop.time() + pause))
            if here.listener.epoch != epoch or loop.time() >= deadline:
                return
            now = await self._state(here, key)
            if now != first or now[1] is None:
                return
            delay = min(2 * delay, POLL_MAX)

    async def _state(self, here: Share, key: str) -> tuple[bytes | None, bytes | None]:
        """The stored entry's `exp` and the lease holder's token, as Redis has them."""
        async with here.client.pipeline(transaction=False) as pipe:
            pipe.hget(self._token_key(key), "exp")
            pipe.get(self._lease_key(key))
            exp, holder = await self._call("wait", pipe.execute)
        return as_bytes(exp), as_bytes(holder)

    async def _call(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Await one Redis call; its failure becomes a `TokenStoreError` (raised outside the
        `except`, so redis-py's exception is neither its cause nor its context)."""
        if self._closed:
            msg = f"{self!r} is closed"
            raise RuntimeError(msg)
        failure: TokenStoreError | None = None
        try:
            return await call()
        except self._failures as exc:
            failure = store_error(self._where, operation, exc)
        raise failure
