"""`SharedSource`: a token source that shares its tokens with a fleet through a `TokenStore`.

It wraps the manager's own source and changes only `renew`:

1. Read the store's entry for the manager's key. Adopt it if it passes the manager's own
   rules: the same key, a decodable JWT, later expiry than the token in use, not one a
   resource refused, and still before its refresh point.
2. Else take the store's renewal lease, read once more (another holder may just have
   published), renew with the wrapped source, publish (fenced by the JWT's `exp`), release.
3. Else another manager holds the lease: wait on the store (`wait`) until its token appears
   or the lease is free, for at most the lease's time and one renewal (`patience`: a holder
   that died loses the lease, and the next one renews), and never so long that a renewal of
   its own would not fit in the callers' `acquire_timeout`; then renew alone.

The fleet honours the server's `Retry-After` as one: a manager answered 429 (or a 5xx) with
`Retry-After: N` publishes a *hold* (`store.Hold`) before it lets go of the lease, and any
manager about to ask the endpoint reads it first and, while it lasts, fails its renewal with
the same status and the time left, which its backoff honours. So the fleet asks about once per
N seconds in all, not once per manager.

An adopted token is judged in the token server's time: with this manager's own reading of
the server's clock (from a token it fetched itself) when it has one; else with the
publisher's reading, raised to the least this host's offset can be (the server's clock had
reached each entry's publication when we read it). Without a reading of its own, a host
whose clock is behind can so take an adopted token for younger than it is by the time since
its publication at most (the fleet's entries are seldom older than a refresh window); with
one, not at all.

Every store call is bounded (`_OP_TIMEOUT`, at most `request_timeout`). A store that fails
(down, slow, refusing, misconfigured) never costs a request: the manager renews on its own,
says so once in a warning, and shares again once the store answers. A bad entry (garbage,
another key, an expired or huge token) is never adopted and is reported once per entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import deque
from collections.abc import Awaitable
from typing import ClassVar, TypeVar

import aiohttp
import attrs

from .._clock import Clock, Exchange, SystemClock
from .._credentials import PsToken
from .._errors import ApiError, TokenStoreError, error_class
from .._events import Event, fields
from .._lifecycle.backoff import is_refusal
from .._lifecycle.policy import Policy
from .._lifecycle.sources import Issued, SourceFactory, SourceSpec, TokenSource
from .._lifecycle.timing import Timing
from .._observe import OBSERVER, StoreOperation, leased
from .._token import Token, epoch
from .store import (
    BadEntryError,
    Hold,
    StoreEntry,
    TokenStore,
    decode_entry,
    decode_hold,
    encode_entry,
    encode_hold,
    hold_key,
    store_key,
)

__all__ = ["SharedSource", "SharedSpec", "shared"]

logger = logging.getLogger("aioica_auth")

_OP_TIMEOUT = 5.0  # seconds: the longest one store call may take (and at most request_timeout)
_MIN_POLL = 0.01  # seconds: the shortest pass of the waiting loop, whatever `wait` does
WAITING_FOR_LEASE = "another process's renewal (store lease)"
_T = TypeVar("_T")


def shared(spec: SourceSpec, store: object) -> SourceFactory:
    """`spec`, sharing its tokens through `store` under the manager's key (`spec` itself
    without a store).

    Raises:
        TypeError: `store` is not a `TokenStore`, or the credential is a `Jwt`.
        ValueError: a console psToken (its session cannot be shared).
    """
    if store is None:
        return spec
    if not isinstance(store, TokenStore):
        msg = (
            "store must be a TokenStore (FileTokenStore, RedisTokenStore or your own), "
            f"not {type(store).__name__}"
        )
        raise TypeError(msg)
    if spec.platform == "console" and isinstance(spec.credential, PsToken):
        msg = (
            "a console psToken session cannot be shared through a store: it is kept alive "
            "by one manager and may be rotated by /v1/tokens:refresh; share an ApiKey's "
            "tokens instead, or use the psToken without a store"
        )
        raise ValueError(msg)
    key = store_key(spec.platform, str(spec.base_url), spec.credential, spec.store_options)
    return SharedSpec(spec, store, key)


@attrs.frozen
class SharedSpec:
    """A `SourceSpec` whose tokens a fleet shares through `store` under `key`: a value, as the
    spec is, made into a `SharedSource` once the manager's session exists."""

    spec: SourceSpec
    store: TokenStore
    key: str

    @property
    def platform(self) -> str:
        """The spec's platform, `ica` or `console`."""
        return self.spec.platform

    def __call__(self, session: aiohttp.ClientSession, policy: Policy) -> TokenSource:
        """The shared source, over `session`."""
        return SharedSource(self.spec(session, policy), self.store, self.key, policy)


class SharedSource:
    """A `TokenSource` that renews through a `TokenStore` first (see the module docstring)."""

    keeps_session: ClassVar[bool] = False

    def __init__(
        self,
        inner: TokenSource,
        store: TokenStore,
        key: str,
        policy: Policy,
        clock: Clock | None = None,
    ) -> None:
        if inner.keeps_session:
            msg = "a psToken session cannot be shared through a token store"
            raise ValueError(msg)
        self.inner = inner
        self.store = store
        self.key = key
        self.hold_key = hold_key(key)
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.op_timeout = min(policy.request_timeout, _OP_TIMEOUT)
        renewal = 2 * policy.request_timeout + 1  # the wrapped source's own bound
        self.lease_ttl = renewal + 1
        # How long a waiter waits for a publication: a dead holder's lease runs out, then the
        # next holder renews (so two waiters do not both give up as the lease lapses); but
        # never so long that a renewal of its own (one request) would no longer fit in the
        # callers' acquire_timeout: a store must not fail a call a lone manager would serve.
        self.patience = min(
            self.lease_ttl + renewal,
            max(self.op_timeout, policy.acquire_timeout - policy.request_timeout),
        )
        # Beyond the wrapped source's time: the wait, and the store calls around it.
        self.extra_budget = self.patience + 5 * self.op_timeout
        self.down = False  # the store failed lately: each renewal tries it again first
        self.offset: float | None = None  # our reading of the server's clock minus ours
        # ... and, without one, the least it can be: the server's clock read at least an
        # entry's publication time (in the publisher's reading of it) when we read the entry.
        self.offset_floor = -math.inf
        self.waiting_for: str | None = None  # set while waiting on another's lease
        self._refused: deque[str] = deque(maxlen=4)  # tokens a resource refused
        self._reported: deque[bytes] = deque(maxlen=8)  # digests of bad entries, warned once

    def initial(self) -> Token | None:
        return self.inner.initial()

    async def keep_alive(self) -> None:
        await self.inner.keep_alive()

    async def revoke(self, token: Token) -> None:
        await self.inner.revoke(token)

    def refused(self, token: Token) -> None:
        """A resource refused `token`: never adopt it from the store again."""
        self._refused.append(token.value)
        self.inner.refused(token)

    async def renew(self, current: Token | None) -> Issued:
        try:
            return await self._through_store(current)
        except TokenStoreError as exc:
            self._store_failed(exc)
        return await self.inner.renew(current)

    # -- the shared path --------------------------------------------------------------------

    async def _through_store(self, current: Token | None) -> Issued:
        clock = self.clock
        give_up = clock.monotonic() + self.patience
        while True:
            found = await self._adoptable(current)
            if found is not None:
                return found
            handle = await self._op(self.store.acquire(self.key, self.lease_ttl), "lease")
            if handle is not None:
                with leased():
                    return await self._as_holder(current, handle)
            left = give_up - clock.monotonic()
            if left <= 0:
                logger.warning(
                    "the token store's renewal lease was held for %.1f s with nothing "
                    "published: renewing on our own",
                    self.patience,
                    extra=fields(Event.STORE_LEASE_WAITED_OUT, patience=self.patience),
                )
                return await self._mint(current)
            polled = clock.monotonic()
            self.waiting_for = WAITING_FOR_LEASE
            try:
                # Within half the call bound: a quiet wait must not look like a hung store.
                await self._op(self.store.wait(self.key, min(left, self.op_timeout / 2)), "wait")
            finally:
                self.waiting_for = None
            rest = _MIN_POLL - (clock.monotonic() - polled)
            if rest > 0:  # a store whose wait does not wait must not make this loop spin
                await asyncio.sleep(rest)

    async def _as_holder(self, current: Token | None, handle: object) -> Issued:
        try:
            found = await self._adoptable(current)  # published between our read and our lease
            if found is not None:
                return found
            return await self._mint(current)
        finally:
            try:
                await self._op(self.store.release(self.key, handle))
            except TokenStoreError as exc:
                self._store_failed(exc)  # the lease runs out by itself

    async def _mint(self, current: Token | None) -> Issued:
        """Renew with the wrapped source, unless the fleet is on hold; share the outcome:
        the token, or the time the server asked the fleet to wait."""
        await self._honour_hold()
        try:
            issued = await self.inner.renew(current)
        except ApiError as exc:
            if exc.retry_after is not None and not is_refusal(exc):
                await self._publish_hold(exc.status, exc.retry_after)
            raise
        offset = _offset_of(issued)
        if offset is not None:
            self.offset = offset
        await self._publish(issued, offset)
        return issued

    async def _honour_hold(self) -> None:
        """Raise the fleet's hold while it lasts, as the error its manager was answered."""
        raw = await self._op(self.store.read(self.hold_key))
        if raw is None:
            return
        try:
            hold = decode_hold(raw, self.key)
        except BadEntryError as exc:
            self._report(raw, str(exc))
            return
        left = hold.left(self.clock.time())
        if left <= 0:
            return
        reason = (
            f"another manager of the fleet was asked to wait {hold.retry_after:g} s "
            f"(shared through the token store; {left:.1f} s left)"
        )
        raise error_class(hold.status)(hold.status, reason=reason, retry_after=left)

    async def _publish_hold(self, status: int, retry_after: float) -> None:
        wait = min(retry_after, self.policy.retry_after_max)
        hold = Hold(status, wait, self.clock.time() + wait)
        entry = encode_hold(self.key, hold)
        try:
            await self._op(self.store.publish(self.hold_key, entry, expires_at=hold.until))
        except TokenStoreError as exc:
            self._store_failed(exc)

    async def _adoptable(self, current: Token | None) -> Issued | None:
        """The store's token as an `Issued`, if the manager's rules let it be adopted."""
        raw = await self._op(self.store.read(self.key), "adopt")
        if raw is None:
            return None
        try:
            entry = decode_entry(raw, self.key)
        except BadEntryError as exc:
            self._report(raw, str(exc))
            return None
        token = entry.token
        if token.value in self._refused or (current is not None and _not_later(token, current)):
            return None  # the token we hold, one a resource refused, or an older one
        clock = self.clock
        mono, wall = clock.monotonic(), clock.time()
        offset = self._offset(entry, wall)
        server_now = wall + (offset or 0.0)
        iat = epoch(token.issued_at)
        age = max(0.0, server_now - iat) if iat is not None else 0.0
        # As if the token had just been fetched, sent `age` ago: `Timing.of` then reads its
        # timing in the server's time.
        exchange = Exchange(mono - age, wall - age, mono, offset)
        timing = Timing.of(token, exchange, self.policy)
        if timing.expires <= mono:
            self._report(raw, "store entry holds an expired token")
            return None
        if timing.refresh_at <= mono:
            logger.debug(
                "shared token %s is due for renewal: renewing",
                token.fingerprint,
                extra=fields(Event.STORE_ENTRY_DUE, token_id=token.fingerprint),
            )
            return None
        return Issued(token, exchange, minted=False, shared=True)

    def _offset(self, entry: StoreEntry, wall: float) -> float | None:
        """The server's clock minus ours at `wall`, to judge `entry`'s token by: our own
        reading, else the publisher's, but no less than what the entries we read showed."""
        if entry.skew is not None:
            published = entry.published + entry.skew  # the server's clock, then
            self.offset_floor = max(self.offset_floor, published - wall)
        if self.offset is not None:
            return self.offset
        if entry.skew is None:
            return None
        return max(entry.skew, self.offset_floor)

    async def _publish(self, issued: Issued, skew: float | None) -> None:
        token = issued.token
        if token.expires_at is None:
            return  # nothing to fence with; such tokens are not shared
        entry = encode_entry(self.key, token, skew, self.clock.time())
        try:
            expires_at = token.expires_at.timestamp()
            stored = await self._op(
                self.store.publish(self.key, entry, expires_at=expires_at), "publish"
            )
        except TokenStoreError as exc:
            self._store_failed(exc)
        else:
            if not stored:
                logger.debug(
                    "token %s not published: the store holds a later one",
                    token,
                    extra=fields(
                        Event.STORE_PUBLISH,
                        key=self.key[:8],
                        outcome="superseded",
                        token_id=token.fingerprint,
                    ),
                )

    # -- store calls and their failures ------------------------------------------------------

    async def _op(self, call: Awaitable[_T], operation: StoreOperation | None = None) -> _T:
        """One store call, bounded; any failure as a `TokenStoreError` naming only its kind.
        An `operation` named is told to the observer of the renewal, if any (`_observe`)."""
        observer = OBSERVER.get() if operation is not None else None
        try:
            result = await self._bounded(call)
        except TokenStoreError:
            if observer is not None and operation is not None:
                observer.store(operation, ok=False)
            raise
        if observer is not None and operation is not None:
            observer.store(operation, ok=True)
        if self.down:
            self.down = False
            logger.warning(
                "token store %r answers again: sharing tokens",
                self.store,
                extra=fields(Event.STORE_RECOVERED, store=repr(self.store)),
            )
        return result

    async def _bounded(self, call: Awaitable[_T]) -> _T:
        try:
            async with asyncio.timeout(self.op_timeout):
                return await call
        except TokenStoreError:
            raise
        except TimeoutError:
            msg = f"no answer within {self.op_timeout:g} s"
            raise TokenStoreError(msg) from None
        except OSError as exc:
            msg = f"{type(exc).__name__}: {exc.strerror or 'failed'}"
            raise TokenStoreError(msg) from None
        except Exception as exc:  # noqa: BLE001 - a store we did not write: its kind, not its words
            msg = f"the store raised {type(exc).__name__}"
            raise TokenStoreError(msg) from None

    def _store_failed(self, exc: TokenStoreError) -> None:
        first, self.down = not self.down, True
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "token store %r failed (%s): renewing on our own until it answers"
            if first
            else "token store %r still failing (%s)",
            self.store,
            exc,
            extra=fields(
                Event.STORE_DEGRADED, store=repr(self.store), reason=str(exc), first=first
            ),
        )

    def _report(self, raw: bytes, why: str) -> None:
        digest = hashlib.sha256(raw).digest()[:8]
        if digest in self._reported:
            return
        self._reported.append(digest)
        logger.warning(
            "ignored the token store's entry: %s",
            why,
            extra=fields(Event.STORE_ENTRY_IGNORED, reason=why),
        )


def _offset_of(issued: Issued) -> float | None:
    """The server's clock minus ours, as a token we fetched shows it (`iat` against when we
    sent the request: late by the request's latency at most, which ages the token sooner)."""
    iat = epoch(issued.token.issued_at)
    exchange = issued.exchange
    return iat - exchange.sent_wall if iat is not None else exchange.server_offset


def _not_later(token: Token, current: Token) -> bool:
    if token.value == current.value:
        return True
    if token.expires_at is None or current.expires_at is None:
        return False
    return token.expires_at <= current.expires_at
