"""`RedisTokenStore`'s event loops and push: per loop a client and a pattern subscription.

`Loops` keeps a store's `Share` of each event loop that uses it: the loop's client (a URL's
store builds one per loop; a caller's client serves the first loop only), its scripts, and a
`Listener`.

A `Listener` holds a pub/sub connection subscribed to ``{prefix}:*`` and a reader task that
counts, per store key, the messages the publish and release scripts send on
``{prefix}:{K}:events``, and keeps the entry the last publication carried. A waiter takes a
`Mark` when it reads a key (no command), and later waits for a message newer than its mark:
so a publication or release that happened between its read and its wait wakes it at once,
and one after wakes it as it arrives; its next read then takes the entry from the message,
without a command.

A mark is trusted only while the subscription is up, and was up when the mark was taken:
every change of the subscription (up, down, up again) starts a new epoch, which wakes every
waiter (messages may have been lost in between). While it is down, the reader reconnects
with a backoff (0.1 s doubling to 5 s) and `RedisTokenStore.wait` polls instead.

`loop_guard` closes a loop's share of a store when the loop shuts down: `asyncio.run`,
`asyncio.Runner` and `SyncTokenManager` all call the loop's `shutdown_asyncgens()` before
closing it, which closes the guard (an async generator), whose `finally` closes the pub/sub
connection and the loop's client while the loop can still run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any

import attrs

from .._errors import TokenStoreError
from .._events import Event, fields
from .redis_client import describe

__all__ = ["Listener", "Loops", "Mark", "Share", "loop_guard"]

logger = logging.getLogger("aioica_auth")

RETRY_MIN = 0.1  # seconds before the first resubscription after a failure
RETRY_MAX = 5.0  # ... doubling up to this
_CANCEL_TRIES = 20  # times 0.1 s: how long `aclose` insists on the reader ending
SETTLE = 0.5  # seconds a store's first use on a loop waits at most for its subscription
_PUBLISHED = b"published\n"  # a publication's message: this, then the entry it stored


@attrs.frozen
class Mark:
    """Where the messages of one key stood at a moment: the epoch (None while the subscription
    was not up: nothing can be trusted from then) and the key's message count."""

    epoch: int | None
    seq: int


@attrs.define(eq=False, repr=False)  # no repr: it holds entries, bearer secrets
class Listener:
    """One pattern subscription and its reader task, on the running loop.

    Args:
        client: The loop's `redis.asyncio.Redis`; the subscription takes a connection of its
            pool (so it has the client's timeouts, TLS and credentials).
        pattern: The PSUBSCRIBE pattern (``{prefix}:*``, as an ACL's ``&{prefix}:*`` allows).
        key_of: The store key a message's channel names, or None for another channel.
        where: Where the server is, for the log.
    """

    _client: Any
    _pattern: str
    _key_of: Callable[[object], str | None]
    _where: str
    up: bool = attrs.field(default=False, init=False)
    epoch: int = attrs.field(default=0, init=False)
    _seqs: dict[str, int] = attrs.field(factory=dict, init=False)
    # key: (epoch, seq, entry)
    _entries: dict[str, tuple[int, int, bytes]] = attrs.field(factory=dict, init=False)
    _events: dict[str, asyncio.Event] = attrs.field(factory=dict, init=False)
    _warned: bool = attrs.field(default=False, init=False)
    _task: asyncio.Task[None] | None = attrs.field(default=None, init=False)
    # set once it is up, or has failed, for the first time
    _settled: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def start(self) -> None:
        """Start the reader task on the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="aioica_auth-redis-push"
            )

    async def settled(self, within: float) -> None:
        """Return once the subscription is up or has failed, or after `within` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._settled.wait()

    def mark(self, key: str) -> Mark:
        """Where `key`'s messages stand now (it is counted from now on)."""
        seq = self._seqs.setdefault(key, 0)
        return Mark(self.epoch if self.up else None, seq)

    def pushed(self, key: str, mark: Mark) -> bytes | None:
        """The entry the last publication of `key` carried, if it came after `mark` with the
        subscription up all along (so no later publication can have been missed), or None.
        """
        found = self._entries.get(key)
        if found is None or not self.up or mark.epoch != self.epoch:
            return None
        epoch, seq, entry = found
        return entry if epoch == self.epoch and seq > mark.seq else None

    def news(self, key: str, mark: Mark) -> bool:
        """Whether something of `key` may have changed since `mark`: a message came, the
        subscription changed, or it was not up at the mark."""
        return mark.epoch != self.epoch or not self.up or self._seqs.get(key, 0) != mark.seq

    async def until_news(self, key: str, mark: Mark, deadline: float) -> None:
        """Return once `news(key, mark)`, or at `deadline` (loop time) at the latest."""
        if not self.news(key, mark):
            await self.sleep(key, deadline)

    async def sleep(self, key: str, deadline: float) -> None:
        """Sleep until `deadline` (loop time); a message of `key` or a change of the
        subscription wakes it sooner."""
        event = self._events.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await event.wait()

    async def aclose(self) -> None:
        """Stop the reader and close its connection; the caller's waits return."""
        task, self._task = self._task, None
        # Cancelled again until it ends: on Python 3.11, redis-py can swallow a cancellation
        # that lands as a command is sent, and the reader would then block on its next read.
        for _ in range(_CANCEL_TRIES):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        self._change(up=False)

    # -- the reader ------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(self._pattern)
                while True:
                    _raise_if_cancelled()
                    message = await pubsub.get_message(timeout=None)  # blocks: no polling
                    if message is not None and self._take(message):
                        delay = RETRY_MIN
            except Exception as exc:  # noqa: BLE001 - whatever it is, waits poll meanwhile
                self._failed(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(2 * delay, RETRY_MAX)

    def _take(self, message: dict[str, Any]) -> bool:
        """Count one message; whether it confirmed the subscription."""
        kind = message.get("type")
        if kind in ("psubscribe", b"psubscribe"):
            # Also after redis-py reconnected by itself and subscribed again: messages
            # may have been lost meanwhile, so this is a new epoch.
            if self._warned:
                logger.info(
                    "Redis at %s: push notifications are back",
                    self._where,
                    extra=fields(Event.STORE_PUSH_RECOVERED, where=self._where),
                )
            self._change(up=True)
            return True
        if kind in ("pmessage", b"pmessage"):
            key = self._key_of(message.get("channel"))
            if key is not None and key in self._seqs:
                self._seqs[key] += 1
                data = message.get("data")
                if isinstance(data, str):  # a client with decode_responses=True
                    data = data.encode()
                if isinstance(data, bytes) and data.startswith(_PUBLISHED):
                    entry = data[len(_PUBLISHED) :]
                    self._entries[key] = (self.epoch, self._seqs[key], entry)
                event = self._events.pop(key, None)
                if event is not None:
                    event.set()
        return False

    def _failed(self, exc: Exception) -> None:
        self._change(up=False)
        reason = describe(exc)[0]
        if self._warned:
            logger.debug(
                "Redis at %s: push notifications still unavailable (%s)",
                self._where,
                reason,
                extra=fields(
                    Event.STORE_PUSH_UNAVAILABLE, where=self._where, reason=reason, first=False
                ),
            )
            return
        self._warned = True
        # A server that is down or slow is the fleet's warning to give (its commands fail
        # too); a subscription refused while commands work (an ACL without channels) is ours.
        quiet = reason in ("connection refused", "connection failed or lost", "timed out")
        logger.log(
            logging.INFO if quiet else logging.WARNING,
            "Redis at %s: push notifications unavailable (%s): waiting by polling until "
            "they are back",
            self._where,
            reason,
            extra=fields(
                Event.STORE_PUSH_UNAVAILABLE, where=self._where, reason=reason, first=True
            ),
        )

    def _change(self, *, up: bool) -> None:
        """A new epoch: every waiter wakes and looks again."""
        self.up = up
        self.epoch += 1
        self._settled.set()
        events, self._events = self._events, {}
        for event in events.values():
            event.set()


def _raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and something swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def loop_guard(close: Callable[[], Awaitable[None]]) -> AsyncGenerator[None, None]:
    """An async generator to start (one ``anext``) and keep: when the loop shuts down its
    async generators, its `finally` awaits `close` on that loop."""
    try:
        yield
    finally:
        await close()


class Share:
    """What a store holds on one event loop: a client, its scripts, a `Listener`.

    Args:
        client: The loop's `redis.asyncio.Redis`.
        owned: Whether closing the share closes the client (the store built it).
        listener: The subscription, on `client`.
        register: `client.register_script`.
        scripts: Lua sources: `scripts[i]` becomes ``self.scripts[i]``.
    """

    def __init__(
        self,
        client: Any,
        owned: bool,
        listener: Listener,
        register: Callable[[str], Any],
        scripts: Iterable[str],
    ) -> None:
        self.client = client
        self.owned = owned
        self.listener = listener
        self.scripts = [register(source) for source in scripts]
        self.guard: AsyncGenerator[None, None] | None = None
        self._closing: asyncio.Future[None] | None = None

    async def aclose(self) -> None:
        """Stop the subscription and close the client if it is the store's (once; a second
        caller awaits the first)."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        await self.listener.aclose()
        if self.owned:
            try:
                await self.client.aclose()
            except Exception:  # noqa: BLE001 - closing: nothing to report, nothing to leak
                logger.debug(
                    "closing a Redis client failed",
                    extra=fields(Event.STORE_CLIENT_DROPPED, reason="close failed"),
                )


class Loops:
    """A store's `Share` per event loop; thread-safe.

    Args:
        first: The client built with the store (a URL's, or the caller's): the first loop's.
        owned: Whether the store built it (from a URL): then each other loop gets a client
            from `build`; else a second loop is refused.
        build: A new client for another loop.
        share: The `Share` of a client on the running loop.
    """

    def __init__(
        self,
        first: Any,
        owned: bool,
        build: Callable[[], Any],
        share: Callable[[Any], Share],
    ) -> None:
        self._spare: Any = first
        self._owned = owned
        self._build = build
        self._share = share
        self._home: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self.shares: dict[asyncio.AbstractEventLoop, Share] = {}
        self._lock = threading.Lock()

    async def here(self) -> Share:
        """The running loop's share, made (and its subscription awaited, for `SETTLE`
        seconds at most) on its first use there.

        Raises:
            TokenStoreError: a caller's client, and not the loop that first used it.
        """
        loop = asyncio.get_running_loop()
        share = self.shares.get(loop)
        if share is not None:
            return share
        with self._lock:
            self._forget_closed()
            share = self.shares[loop] = self._share(self._client_for(loop))

        async def closing() -> None:
            with self._lock:
                if self.shares.get(loop) is share:
                    del self.shares[loop]
            await share.aclose()

        # Registered with the loop, which closes it as it shuts down. Started before any
        # await, so a cancelled first use cannot leave a share that nothing closes.
        share.guard = loop_guard(closing)
        await anext(share.guard)
        share.listener.start()
        # Its first marks are worth something only once it is up: a first use waits for it
        # (about a round trip, beside the command's own connection), within a bound.
        await share.listener.settled(SETTLE)
        return share

    async def aclose(self) -> None:
        """Close the running loop's share (and the first client, if never used)."""
        with self._lock:
            share = self.shares.pop(asyncio.get_running_loop(), None)
            self._forget_closed()
            spare, self._spare = self._spare, None
        if share is not None:
            await share.aclose()
            if share.guard is not None:
                await share.guard.aclose()
        if spare is not None and self._owned:
            await spare.aclose()  # never used: no connection, nothing to fail

    def _client_for(self, loop: asyncio.AbstractEventLoop) -> Any:
        if not self._owned:
            if self._home is not None and self._home() is not loop:
                msg = (
                    "this RedisTokenStore was given a redis.asyncio.Redis client, which is "
                    "bound to the event loop it was first used on, and is used from another "
                    "loop: give each loop its own store, or build the store from a URL"
                )
                raise TokenStoreError(msg)
            self._home = weakref.ref(loop)
            return self._spare
        client, self._spare = self._spare, None
        return client if client is not None else self._build()

    def _forget_closed(self) -> None:
        """Drop the shares of loops closed without shutting down their async generators
        (their connections cannot be closed on a closed loop). Under the lock."""
        for loop in [loop for loop in self.shares if loop.is_closed()]:
            del self.shares[loop]
            logger.debug(
                "RedisTokenStore: dropped the client of a closed event loop",
                extra=fields(Event.STORE_CLIENT_DROPPED, reason="event loop closed"),
            )
