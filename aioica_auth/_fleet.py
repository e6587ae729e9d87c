"""`SharedSource`: a token source that shares its tokens with a fleet through a `TokenStore`.

It wraps the manager's own source and changes only `renew`:

1. Read the store's entry for the manager's key. Adopt it if it passes the manager's own
   rules: the same key, a decodable JWT, later expiry than the token in use, not one a
   resource refused, and still before its refresh point.
2. Else take the store's renewal lease, read once more (another holder may just have
   published), renew with the wrapped source, publish (fenced by the JWT's `exp`), release.
3. Else another manager holds the lease: poll the store (`wait`) until its token appears or
   the lease is free, for at most the lease's time and one renewal (`patience`: a holder
   that died loses the lease, and the next one renews), and never so long that a renewal of
   its own would not fit in the callers' `acquire_timeout`; then renew alone.

Every store call is bounded (`_OP_TIMEOUT`, at most `request_timeout`). A store that fails
(down, slow, refusing, misconfigured) never costs a request: the manager renews on its own,
says so once in a warning, and shares again once the store answers. A bad entry (garbage,
another key, an expired or huge token) is never adopted and is reported once per entry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import TypeVar

import aiohttp

from ._credentials import Credential, PsToken
from ._http import Reply
from ._lease import Clock, SystemClock
from ._policy import Policy, plan
from ._sources import Issued, SourceFactory, TokenSource
from ._store import (
    BadEntryError,
    TokenStore,
    TokenStoreError,
    decode_entry,
    encode_entry,
    store_key,
)
from ._token import Token, epoch

__all__ = ["SharedSource", "shared_sources"]

logger = logging.getLogger("aioica_auth")

_OP_TIMEOUT = 5.0  # seconds: the longest one store call may take (and at most request_timeout)
_MIN_POLL = 0.01  # seconds: the shortest pass of the waiting loop, whatever `wait` does
_T = TypeVar("_T")


def shared_sources(
    factory: SourceFactory,
    store: object,
    *,
    platform: str,
    base_url: str,
    credential: Credential,
    options: Iterable[str],
) -> SourceFactory:
    """`factory`'s source, sharing its tokens through `store` under the manager's key
    (`factory` itself without a store).

    Raises:
        TypeError: `store` is not a `TokenStore`, or `credential` is a `Jwt`.
        ValueError: a console psToken (its session cannot be shared).
    """
    if store is None:
        return factory
    if not isinstance(store, TokenStore):
        msg = (
            "store must be a TokenStore (FileTokenStore, RedisTokenStore or your own), "
            f"not {type(store).__name__}"
        )
        raise TypeError(msg)
    if platform == "console" and isinstance(credential, PsToken):
        msg = (
            "a console psToken session cannot be shared through a store: it is kept alive "
            "by one manager and may be rotated by /v1/tokens:refresh; share an ApiKey's "
            "tokens instead, or use the psToken without a store"
        )
        raise ValueError(msg)
    key = store_key(platform, base_url, credential, options)

    def build(session: aiohttp.ClientSession, policy: Policy) -> TokenSource:
        return SharedSource(factory(session, policy), store, key, policy)

    return build


class SharedSource:
    """A `TokenSource` that renews through a `TokenStore` first (see the module docstring)."""

    keeps_session = False

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
            handle = await self._op(self.store.acquire(self.key, self.lease_ttl))
            if handle is not None:
                return await self._as_holder(current, handle)
            left = give_up - clock.monotonic()
            if left <= 0:
                logger.warning(
                    "the token store's renewal lease was held for %.1f s with nothing "
                    "published: renewing on our own",
                    self.patience,
                )
                issued = await self.inner.renew(current)
                await self._publish(issued)
                return issued
            polled = clock.monotonic()
            # Within half the call bound: a quiet wait must not look like a hung store.
            await self._op(self.store.wait(self.key, min(left, self.op_timeout / 2)))
            rest = _MIN_POLL - (clock.monotonic() - polled)
            if rest > 0:  # a store whose wait does not wait must not make this loop spin
                await asyncio.sleep(rest)

    async def _as_holder(self, current: Token | None, handle: object) -> Issued:
        try:
            found = await self._adoptable(current)  # published between our read and our lease
            if found is not None:
                return found
            issued = await self.inner.renew(current)
            await self._publish(issued)
            return issued
        finally:
            try:
                await self._op(self.store.release(self.key, handle))
            except TokenStoreError as exc:
                self._store_failed(exc)  # the lease runs out by itself

    async def _adoptable(self, current: Token | None) -> Issued | None:
        """The store's token as an `Issued`, if the manager's rules let it be adopted."""
        raw = await self._op(self.store.read(self.key))
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
        skew = entry.skew or 0.0
        iat = epoch(token.issued_at)
        age = max(0.0, wall + skew - iat) if iat is not None else 0.0
        # As if the token had just been fetched, sent `age` ago: `plan` then reads its
        # timing in the publisher's view of the server's clock.
        reply = Reply(200, None, mono - age, wall - age, mono, entry.skew, "token store")
        timing = plan(token, reply, self.policy)
        if timing.expires <= mono:
            self._report(raw, "store entry holds an expired token")
            return None
        if timing.refresh_at <= mono:
            logger.debug("shared token %s is due for renewal: renewing", token.fingerprint)
            return None
        return Issued(token, reply, minted=False, shared=True)

    async def _publish(self, issued: Issued) -> None:
        token, reply = issued.token, issued.reply
        if token.expires_at is None:
            return  # nothing to fence with; such tokens are not shared
        iat = epoch(token.issued_at)
        skew = iat - reply.sent_wall if iat is not None else reply.server_offset
        entry = encode_entry(self.key, token, skew, self.clock.time())
        try:
            stored = await self._op(
                self.store.publish(self.key, entry, expires_at=token.expires_at.timestamp())
            )
        except TokenStoreError as exc:
            self._store_failed(exc)
        else:
            if not stored:
                logger.debug("token %s not published: the store holds a later one", token)

    # -- store calls and their failures ------------------------------------------------------

    async def _op(self, call: Awaitable[_T]) -> _T:
        """One store call, bounded; any failure as a `TokenStoreError` naming only its kind."""
        try:
            async with asyncio.timeout(self.op_timeout):
                result = await call
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
        if self.down:
            self.down = False
            logger.warning("token store %r answers again: sharing tokens", self.store)
        return result

    def _store_failed(self, exc: TokenStoreError) -> None:
        if not self.down:
            self.down = True
            logger.warning(
                "token store %r failed (%s): renewing on our own until it answers",
                self.store,
                exc,
            )
        else:
            logger.debug("token store %r still failing (%s)", self.store, exc)

    def _report(self, raw: bytes, why: str) -> None:
        digest = hashlib.sha256(raw).digest()[:8]
        if digest in self._reported:
            return
        self._reported.append(digest)
        logger.warning("ignored the token store's entry: %s", why)


def _not_later(token: Token, current: Token) -> bool:
    if token.value == current.value:
        return True
    if token.expires_at is None or current.expires_at is None:
        return False
    return token.expires_at <= current.expires_at
