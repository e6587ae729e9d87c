"""`RedisTokenStore`'s edge with redis-py: its clients and its failures.

What the store asks of redis-py beyond the commands themselves: a client built from a URL with
bounds (so a server that is down or hangs costs seconds, not minutes), where a client connects
in words that hold no password, and a redis-py failure turned into a `TokenStoreError` whose
message says why in words and whose cause is a fresh builtin error, never redis-py's (whose
frames hold the connection, the password among its fields). The store and its subscription
(`redis_push`) both explain failures with `describe`, so the log and the errors use one
vocabulary.

redis-py is imported inside the functions: it is an optional dependency, and these run only
once a store has been built (which checks that it is installed).
"""

from __future__ import annotations

import errno
import re
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import TokenStoreError

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisClient", "as_bytes", "describe", "from_url", "store_error", "where"]


class RedisClient(Protocol):
    """A client you built for `RedisTokenStore`: a `redis.asyncio.Redis` (the store checks the
    class when it is built).

    A protocol, not redis-py's class, in the public signature: redis-py is an optional
    dependency, and a signature naming its class reads as partly unknown to a type checker
    (and to pyright's --verifytypes) wherever it is not installed. These two members are what
    every `redis.asyncio.Redis` has, so it matches whatever redis-py version is installed.
    """

    @property
    def connection_pool(self) -> object:
        """The client's pool: where it connects (never shown with its password)."""

    async def aclose(self) -> None:
        """Close the client (the store never closes a client you gave it)."""


# Bounds of a client built from a URL (a caller's own client keeps its own settings): a
# server that is down is reported in milliseconds (refused) or after the connect timeout (a
# host that drops packets); one that hangs after the read timeout. A lost connection is
# retried once at once, so one that the server closed (a restart) costs no failure; a
# timeout is not retried, so it is reported after one timeout, not two.
_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 2.0
_RETRIES = 1

_ERROR_CODE = re.compile(r"[A-Z][A-Z_-]{1,31}")


def from_url(url: str) -> redis.asyncio.Redis | None:
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


def where(client: Any) -> tuple[str, str]:
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


def as_bytes(value: object) -> bytes | None:
    """Redis's answer as bytes: a client with `decode_responses=True` gives str."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


def store_error(where: str, operation: str, exc: Exception) -> TokenStoreError:
    """The `TokenStoreError` to raise for `exc`, a failure of `operation` on the server at
    `where`: to be raised outside the `except`, so that redis-py's exception is neither its
    cause nor its context."""
    reason, cause = describe(exc)
    error = TokenStoreError(f"Redis at {where}: {operation}: {reason}")
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error


def describe(exc: Exception) -> tuple[str, BaseException]:
    """Why a Redis call failed, in words, and a builtin error saying as much."""
    from redis import exceptions

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
    """Whether a refused connection is anywhere in the chain of `exc`."""
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
