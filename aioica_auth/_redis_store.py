"""`RedisTokenStore`: the `TokenStore` of a fleet spread over many hosts, on `redis.asyncio`.

redis-py is an optional dependency (`pip install 'aioica_auth[redis]'`), imported when a store
is built, so `import aioica_auth` works without it.

Keys (``P`` is the prefix, ``K`` the store key, 64 hex digits):

```
P:token:K   a hash: "entry" (the bytes published) and "exp" (the token's `exp`, the fencing
            token); expires by itself (PEXPIRE) when the token does
P:lease:K   a string: the random token of the lease holder; expires by itself after the ttl
```

Every write is one atomic command or Lua script: the lease is `SET P:lease:K <random> NX PX
ttl`; releasing it is a compare-and-delete script (delete only if it still holds our random
token); publishing is a script that replaces the entry only when the stored `exp` is earlier
than the new one. No Redis exception leaves this module: each becomes a `TokenStoreError`
whose message says why in words and whose cause is a fresh builtin error, never redis-py's
(whose frames hold the connection, the password among its fields).
"""

from __future__ import annotations

import asyncio
import errno
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

from ._store import TokenStoreError

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisTokenStore"]

logger = logging.getLogger("aioica_auth")

_T = TypeVar("_T")

# Bounds of a client built from a URL (a caller's own client keeps its own settings): a
# server that is down is reported in milliseconds (refused) or after the connect timeout (a
# host that drops packets); one that hangs after the read timeout. A lost connection is
# retried once at once, so one that the server closed (a restart) costs no failure; a
# timeout is not retried, so it is reported after one timeout, not two.
_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 2.0
_RETRIES = 1

# wait(): how often a waiter looks again, in seconds (uniform, so a fleet does not poll in step).
POLL_MIN = 0.02
POLL_MAX = 0.08
# ... and how long it watches at most, whatever `within` says: so the caller re-checks its
# own state (and deadline) a few times a second, and a caller that bounds each store call
# (the fleet: min(request_timeout, 5 s)) never sees a quiet wait as a store that hangs.
WAIT_CAP = 0.25

# KEYS[1] the token hash; ARGV[1] exp, ARGV[2] the entry, ARGV[3] the expiry in ms.
_PUBLISH = """
local stored = redis.call('HGET', KEYS[1], 'exp')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('HSET', KEYS[1], 'exp', ARGV[1], 'entry', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] the lease; ARGV[1] the holder's random token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTRA = "RedisTokenStore needs redis-py: pip install 'aioica_auth[redis]'"
_ERROR_CODE = re.compile(r"[A-Z][A-Z_-]{1,31}")


@attrs.frozen(repr=False)
class _Lease:
    """A lease `acquire` took: the Redis key and the random token that proves we hold it."""

    name: str
    token: str

    def __repr__(self) -> str:
        return f"<lease {self.name}>"


class RedisTokenStore:
    """A `TokenStore` in Redis, for the managers of a fleet on many hosts.

    It stores, per store key, the entry a manager published (a JSON document holding the
    token itself, so a **bearer secret**) beside the token's `exp`, and a renewal lease.
    Anyone who can read the prefix's keys can use the token: in production connect with
    TLS (``rediss://``) as an ACL user limited to them, for the default prefix
    ``ACL SETUSER ica on >PASSWORD ~aioica_auth:* +@read +@write +@scripting -@dangerous``.
    Nothing of an entry, and no password, is ever logged or put in an error.

    Writes are atomic: the lease is ``SET {prefix}:lease:{key} <random> NX PX <ttl>`` and is
    released by a compare-and-delete script; publishing replaces the entry
    (``{prefix}:token:{key}``, a hash of ``exp`` and ``entry``) only if the stored token
    expires earlier (the JWT's `exp` is the fencing token), and gives the hash an expiry at
    that `exp`, so an entry vanishes by itself when its token dies.

    Waiting polls: `wait` looks at the entry's `exp` and the lease every 20 to 80 ms (random,
    so a fleet does not poll in step) and returns as soon as the lease is free or either has
    changed, and after `within` seconds or 0.25 s, whichever is less, at the latest; a
    waiter so learns of a new token within one poll of its publication (80 ms and a round
    trip at most).

    Args:
        client_or_url: A `redis.asyncio.Redis` you built (TLS, ACL, Sentinel's
            `master_for`, ...), which `aclose` leaves open, since it is yours; or a URL
            (``redis://``, ``rediss://``, ``unix://``) for a client built here with a 2 s
            connect and read timeout and one immediate retry of a lost connection, closed
            by `aclose`.
        prefix: The first part of every key (and of the ACL pattern that guards them).

    Raises:
        ImportError: redis-py is not installed.
        ValueError: not a Redis URL, or an empty prefix.
        TypeError: neither a URL nor a `redis.asyncio.Redis`.
    """

    def __init__(self, client_or_url: str | redis.asyncio.Redis, *, prefix: str = "aioica_auth"):
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
        self._wait_cap = WAIT_CAP
        self._failures: tuple[type[Exception], ...] = (RedisError, OSError)
        if isinstance(client_or_url, str):
            client = _from_url(client_or_url)
            if client is None:
                # Raised outside the `except`: urllib's messages can quote part of the URL
                # (a "port" cut out of a password holding a slash).
                msg = "not a Redis URL: expected redis://, rediss:// or unix:// and a valid port"
                raise ValueError(msg)
            self._owned = True
        elif isinstance(client_or_url, redis.asyncio.Redis):
            client = client_or_url
            self._owned = False
        else:
            msg = f"a Redis URL or a redis.asyncio.Redis, not {type(client_or_url).__name__}"
            raise TypeError(msg)
        self._client: redis.asyncio.Redis = client
        self._publish = client.register_script(_PUBLISH)
        self._release = client.register_script(_RELEASE)
        self._shown, self._where = _where(client)

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
        value = await self._call("read", lambda: self._client.hget(self._token_key(key), "entry"))
        return _as_bytes(value)

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
        lease = _Lease(self._lease_key(key), secrets.token_hex(16))
        ms = max(1, math.ceil(ttl * 1000))
        taken = await self._call(
            "acquire", lambda: self._client.set(lease.name, lease.token, nx=True, px=ms)
        )
        logger.debug("store lease %s…: %s", key[:8], "taken" if taken else "held by another")
        return lease if taken else None

    async def release(self, key: str, handle: object) -> None:
        """Give back the lease `handle`, unless it ran out (and may be another's now).

        Raises:
            ValueError: `handle` is not a lease this kind of store took for `key`.
            TokenStoreError: Redis failed or could not be reached.
        """
        if not isinstance(handle, _Lease) or handle.name != self._lease_key(key):
            msg = "not a lease that a RedisTokenStore with this prefix took for this key"
            raise ValueError(msg)
        freed = await self._call(
            "release", lambda: self._release(keys=[handle.name], args=[handle.token])
        )
        logger.debug("store lease %s…: %s", key[:8], "released" if freed else "had run out")

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
        ms = math.ceil((expires_at - time.time()) * 1000)
        if ms <= 0:
            logger.debug("store entry %s…: not published, its token has expired", key[:8])
            return False
        args: list[bytes | str | int] = [repr(float(expires_at)), entry, ms]
        stored = bool(
            await self._call("publish", lambda: self._publish([self._token_key(key)], args))
        )
        logger.debug(
            "store entry %s…: %s", key[:8], "published" if stored else "a later one is stored"
        )
        return stored

    async def wait(self, key: str, within: float) -> None:
        """Return once the lease of `key` is free or its entry or lease holder has changed,
        and after `within` seconds (at most 0.25 s) at the latest, polling every 20 to 80 ms.

        Raises:
            TokenStoreError: Redis failed or could not be reached.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, min(within, self._wait_cap))
        try:
            # The timeout cuts a hung call short. It is not the only check of the deadline:
            # on Python 3.11, redis-py can swallow a cancellation that lands as a command is
            # sent, and then the call simply returns.
            async with asyncio.timeout_at(deadline):
                first = await self._state(key)
                while first[1] is not None and (left := deadline - loop.time()) > 0:
                    await asyncio.sleep(min(left, random.uniform(POLL_MIN, POLL_MAX)))
                    now = await self._state(key)
                    if now != first or now[1] is None:
                        break
        except TimeoutError:
            # Only the bound itself: Redis's own failures are TokenStoreErrors by now.
            return

    async def aclose(self) -> None:
        """Close the client if this store built it (from a URL); a caller's client stays
        open. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            await self._client.aclose()

    def _token_key(self, key: str) -> str:
        return f"{self._prefix}:token:{key}"

    def _lease_key(self, key: str) -> str:
        return f"{self._prefix}:lease:{key}"

    async def _state(self, key: str) -> tuple[bytes | None, bytes | None]:
        """The stored entry's `exp` and the lease holder's token, as Redis has them."""
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hget(self._token_key(key), "exp")
            pipe.get(self._lease_key(key))
            exp, holder = await self._call("wait", pipe.execute)
        return _as_bytes(exp), _as_bytes(holder)

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
            failure = self._error(operation, exc)
        raise failure

    def _error(self, operation: str, exc: Exception) -> TokenStoreError:
        from redis import exceptions

        reason, cause = _describe(exc, exceptions)
        error = TokenStoreError(f"Redis at {self._where}: {operation}: {reason}")
        error.__cause__ = cause
        error.__suppress_context__ = True
        return error


def _describe(exc: Exception, exceptions: Any) -> tuple[str, BaseException]:
    """Why a Redis call failed, in words, and a builtin error saying as much."""
    table: list[tuple[tuple[type[BaseException], ...], str, BaseException]] = [
        (
            (exceptions.AuthenticationError,),
            "authentication failed (wrong user or password)",
            PermissionError("authentication failed"),
        ),
        (
            (exceptions.AuthorizationError, exceptions.NoPermissionError),
            "permission denied by the server's ACL",
            PermissionError("no permission"),
        ),
        ((exceptions.TimeoutError, TimeoutError), "timed out", TimeoutError("timed out")),
        (
            (exceptions.BusyLoadingError,),
            "the server is loading its data set",
            ConnectionError("loading"),
        ),
    ]
    for classes, reason, cause in table:
        if isinstance(exc, classes):
            return reason, cause
    if isinstance(exc, exceptions.ConnectionError | OSError):
        if _refused(exc):
            refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
            return "connection refused", refused
        return "connection failed or lost", ConnectionError("connection failed or lost")
    if isinstance(exc, exceptions.ResponseError):
        # Only the error code (WRONGTYPE, OOM, READONLY, ...): the rest may quote arguments.
        words = str(exc).split(maxsplit=1)
        code = words[0] if words and _ERROR_CODE.fullmatch(words[0]) else "ERR"
        return f"the server refused the command ({code})", RuntimeError(code)
    name = type(exc).__name__
    return name, RuntimeError(name)


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, ConnectionRefusedError) or (
            isinstance(node, OSError) and node.errno == errno.ECONNREFUSED
        ):
            return True
        node = node.__cause__ or node.__context__
    return False


def _as_bytes(value: object) -> bytes | None:
    """Redis's answer as bytes: a client with `decode_responses=True` gives str."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def _from_url(url: str) -> redis.asyncio.Redis | None:
    """A client for `url` with this module's bounds, or None if it is not a Redis URL."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as LostConnection

    retry = Retry(NoBackoff(), _RETRIES, supported_errors=(LostConnection,))
    try:
        return redis.asyncio.Redis.from_url(
            url,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_SOCKET_TIMEOUT,
            retry=retry,
        )
    except ValueError:
        return None


def _where(client: Any) -> tuple[str, str]:
    """Where a client connects, from its pool (never its password): as repr arguments, and
    as words for error messages."""
    pool = client.connection_pool
    kwargs = getattr(pool, "connection_kwargs", {})
    db = kwargs.get("db", 0)
    service = getattr(pool, "service_name", None)  # a Sentinel pool finds its host itself
    if service is not None:
        return f"sentinel_service={service!r}, db={db!r}", f"Sentinel service {service} (db {db})"
    if "path" in kwargs:
        path = kwargs["path"]
        return f"path={path!r}, db={db!r}", f"{path} (db {db})"
    host, port = kwargs.get("host"), kwargs.get("port")
    return f"host={host!r}, port={port!r}, db={db!r}", f"{host}:{port} (db {db})"
