"""`TokenManager`: fresh bearer headers for thousands of tasks, one request per refresh.

State, all owned by one event loop (no locks: asyncio runs one task at a time):

- `_entry`: the token in use and its timing.
- `_hot`: its header mapping while it is before its refresh point, else None; the hot path
  reads this one attribute and nothing else (no clock call). A loop timer clears it at the
  refresh point; so do invalidation, `aclose()` and the end of the scheduler task (which
  `asyncio.run` cancels when its loop ends, so a dead loop's timer cannot leave it set).
- `_inflight`: the one renewal task. Each waiter parks on a future of its own, resolved when
  the renewal ends, so a cancelled waiter cancels nothing but itself; the slot is cleared in
  the task's done-callback only if it still holds that task.
- `_scheduler`: sleeps until the refresh point (or the next keep-alive) and renews in the
  background while callers keep the current token.
- `_failures`, `_next_attempt`, `_permanent`: backoff state; a permanent failure is remembered
  for `error_memory` seconds and re-raised without a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import aiohttp
import attrs
import yarl

from ._console import CONSOLE_BASE_URL, MintOptions
from ._credentials import ApiKey, BasicAuth, Jwt, PsToken
from ._errors import (
    ApiError,
    IcaError,
    InvalidResponseError,
    TokenUnavailableError,
    TransportTimeoutError,
)
from ._http import check_base_url
from ._ica import ICA_BASE_URL
from ._middleware import BearerMiddleware
from ._policy import Policy, Timing, plan
from ._sources import SourceFactory, TokenSource, console_sources, ica_sources, is_refusal
from ._token import Token

__all__ = ["ManagerStats", "TokenManager"]

logger = logging.getLogger("aioica_auth")


@attrs.frozen
class ManagerStats:
    """Counters of a manager's life so far.

    Attributes:
        mints: Tokens minted from the credential.
        refreshes: Tokens obtained by refreshing the previous one.
        keepalives: psToken session keep-alives that succeeded.
        failures: Renewal attempts that failed (each retried with backoff).
        waits: Calls that had to wait for a token instead of getting the cached one.
        invalidations: Tokens dropped because a resource answered 401 for them.
    """

    mints: int = 0
    refreshes: int = 0
    keepalives: int = 0
    failures: int = 0
    waits: int = 0
    invalidations: int = 0


@attrs.define(eq=False)
class _Entry:
    """The token in use, its header, and its timing (monotonic seconds)."""

    token: Token
    timing: Timing
    received_at: float
    headers: Mapping[str, str]
    authorization: str
    accepted: bool = False  # a resource has answered something other than 401 for it

    def live(self, now: float) -> bool:
        """Valid at `now`: past `nbf`, before expiry (windows aside)."""
        return self.timing.valid_from <= now < self.timing.expires


class _NoProgressError(TokenUnavailableError):
    """A renewal answered with a token that expires no later than the one in use."""


def _is_permanent(exc: IcaError) -> bool:
    if isinstance(exc, _NoProgressError):
        return False  # a soft failure: back off and try again, don't loop, don't give up
    if isinstance(exc, TokenUnavailableError | InvalidResponseError):
        return True
    return isinstance(exc, ApiError) and is_refusal(exc)


class TokenManager:
    """Hands out fresh bearer headers for ICA v2 or the console v1, refreshing in the background.

    Build one with `TokenManager.for_ica(...)` or `TokenManager.for_console(...)` and share it
    across every task of an event loop. Use it as an async context manager, or call
    `await manager.aclose()` when done.
    """

    def __init__(
        self,
        source_factory: SourceFactory,
        *,
        base_url: yarl.URL,
        session: aiohttp.ClientSession | None = None,
        policy: Policy | None = None,
        on_token: Callable[[Token], object] | None = None,
    ) -> None:
        """Prefer `for_ica` and `for_console`; this is the general constructor."""
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            msg = f"session must be an aiohttp.ClientSession, not {type(session).__name__}"
            raise TypeError(msg)
        if on_token is not None and not callable(on_token):
            msg = "on_token must be callable"
            raise TypeError(msg)
        self._policy = policy or Policy()
        self._source_factory = source_factory
        self._base_url = base_url
        self._session = session
        self._owns_session = session is None
        self._on_token = on_token
        self._source: TokenSource | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._entry: _Entry | None = None
        self._hot: Mapping[str, str] | None = None
        self._hot_entry: _Entry | None = None
        self._cool: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._recent: tuple[str, ...] = ()  # authorizations we handed out lately
        self._inflight: asyncio.Task[_Entry] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._closed = False
        self._failures = 0
        self._next_attempt = 0.0
        self._next_keepalive = math.inf
        self._permanent: tuple[float, IcaError] | None = None
        self._counts = dict.fromkeys(attrs.fields_dict(ManagerStats), 0)
        self._middleware = BearerMiddleware(self, base_url)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def for_ica(
        cls,
        credential: ApiKey | BasicAuth | PsToken | Jwt,
        *,
        base_url: str = ICA_BASE_URL,
        tenant: str | None = None,
        session: aiohttp.ClientSession | None = None,
        on_token: Callable[[Token], object] | None = None,
        **policy: Any,
    ) -> TokenManager:
        """A manager for ICA v2 (`/ica/rest/api/tokens`).

        Args:
            credential: `ApiKey` (re-minted, never refreshed), `BasicAuth` or `PsToken`
                (minted, then refreshed; re-minted when refresh is refused), or a `Jwt` you
                already hold (refreshed for as long as the server allows).
            base_url: The API root; https, or http on loopback only.
            tenant: The tenant to mint for, when your user belongs to several.
            session: An `aiohttp.ClientSession` for the token requests; by default the
                manager creates its own and closes it in `aclose()`.
            on_token: Called with each new `Token`, outside the refresh path.
            **policy: Any `Policy` field: `refresh_margin`, `min_validity`, `leeway`, ...

        Raises:
            ValueError: a bad base URL or policy value. TypeError: an unknown keyword.
        """
        url = check_base_url(base_url)
        factory = ica_sources(credential, url, tenant)
        return cls(
            factory,
            base_url=url,
            session=session,
            policy=Policy.from_keywords(policy),
            on_token=on_token,
        )

    @classmethod
    def for_console(
        cls,
        credential: ApiKey | BasicAuth | PsToken,
        *,
        base_url: str = CONSOLE_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        client_id: str | None = None,
        domain: str | None = None,
        data: str | None = None,
        scopes: str | Iterable[str] | None = None,
        cwid: str | None = None,
        cid: str | None = None,
        on_token: Callable[[Token], object] | None = None,
        **policy: Any,
    ) -> TokenManager:
        """A manager for the console v1 (`/v1/tokens`).

        Args:
            credential: `ApiKey` or `BasicAuth` (every renewal is a mint), or a `PsToken`
                (its session is kept alive through `/v1/tokens:refresh`; JWTs are minted
                with it).
            base_url: `https://<region>.platform.illumina.com`; https, or http on loopback.
            session: As in `for_ica`.
            client_id, domain, data, scopes, cwid, cid: Query options of every mint
                (see `ConsoleTokenApi.create_token`).
            on_token: Called with each new `Token`, outside the refresh path.
            **policy: Any `Policy` field, including `keepalive_interval` and
                `revoke_on_close`.

        Raises:
            ValueError: a bad base URL, option or policy value. TypeError: an unknown keyword.
        """
        url = check_base_url(base_url)
        options = MintOptions(client_id, domain, data, scopes, cwid, cid)
        factory = console_sources(credential, url, options)
        return cls(
            factory,
            base_url=url,
            session=session,
            policy=Policy.from_keywords(policy),
            on_token=on_token,
        )

    # -- public API -------------------------------------------------------------------------

    async def headers(self, *, min_validity: float | None = None) -> Mapping[str, str]:
        """`{"Authorization": "Bearer <jwt>"}` with a token that is valid now.

        Before the token's refresh point this returns the cached mapping with no I/O and no
        wait. Near expiry it waits for the one in-flight refresh.

        Args:
            min_validity: Seconds the token must stay valid (for a long upload); the manager
                refreshes first when the current one would not last that long.

        Raises:
            TokenUnavailableError: no valid token could be had (the cause is chained).
            RuntimeError: the manager is closed, or used from another event loop.
        """
        hot = self._hot
        if hot is not None and min_validity is None:
            return hot
        entry = self._ready(min_validity) or await self._wait_for_token(min_validity)
        return entry.headers

    async def token(self, *, min_validity: float | None = None) -> Token:
        """The current `Token`, under the same rules as `headers()`."""
        entry = self._hot_entry
        if entry is not None and min_validity is None:
            return entry.token
        entry = self._ready(min_validity) or await self._wait_for_token(min_validity)
        return entry.token

    @property
    def middleware(self) -> BearerMiddleware:
        """An aiohttp client middleware: `ClientSession(middlewares=(manager.middleware,))`.

        It adds the bearer header to requests for the base URL's origin only, and on a 401
        for the token it sent refreshes once and replays the request once.
        """
        return self._middleware

    @property
    def stats(self) -> ManagerStats:
        """A snapshot of the manager's counters."""
        return ManagerStats(**self._counts)

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

    @property
    def closed(self) -> bool:
        """Whether `aclose()` was called."""
        return self._closed

    def invalidate(self, token: Token | str) -> bool:
        """Stop using `token` (a resource refused it) and start getting a new one.

        Only the token in use is dropped: if another task already replaced it, nothing
        happens. Returns whether it was dropped.
        """
        value = token.value if isinstance(token, Token) else token
        entry = self._entry
        if entry is None or entry.token.value != value:
            return False
        self._entry = None
        self._set_hot(None)
        self._counts["invalidations"] += 1
        logger.info("token %s refused by a resource: renewing", entry.token.fingerprint)
        if not self._closed and self._loop is not None:
            self._start_renewal()
        return True

    async def __aenter__(self) -> TokenManager:
        self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop refreshing, cancel and await background work, close what the manager owns.

        Idempotent. With `revoke_on_close` (console), revokes the current JWT first.
        """
        if self._closed:
            return
        self._closed = True
        entry, self._entry = self._entry, None
        self._set_hot(None)
        tasks = [t for t in (self._scheduler, self._inflight) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._scheduler = self._inflight = None
        try:
            if self._policy.revoke_on_close and entry is not None and self._source is not None:
                await self._revoke(entry.token)
        finally:
            if self._owns_session and self._session is not None:
                await self._session.close()
        logger.debug("token manager closed")

    def __repr__(self) -> str:
        entry = self._entry
        state = "closed" if self._closed else f"token={entry.token!r}" if entry else "no token"
        return f"TokenManager(base_url={str(self._base_url)!r}, {state})"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_closed", True):  # closed, or __init__ never finished
            return
        leaked = (
            self._owns_session and self._session is not None and not self._session.closed
        ) or (self._scheduler is not None and not self._scheduler.done())
        if leaked:
            _warn(f"unclosed {self!r}: call `await manager.aclose()`", ResourceWarning, source=self)

    # -- internals: acquiring ---------------------------------------------------------------

    def _start(self) -> None:
        """Bind to the running loop and set up the session and source on first use."""
        if self._closed:
            msg = "this TokenManager is closed"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            if self._session is None:
                self._session = aiohttp.ClientSession()
            self._source = self._source_factory(self._session, self._policy)
            if self._source.keeps_session:
                self._next_keepalive = time.monotonic() + self._policy.keepalive_interval
            given = self._source.initial()
            if given is not None:
                self._adopt(given, None, minted=False, quiet=True)
        elif loop is not self._loop:
            msg = (
                "this TokenManager is bound to the event loop it first ran in; "
                "create one manager per event loop"
            )
            raise RuntimeError(msg)

    def _usable(self, entry: _Entry | None, now: float, min_validity: float | None) -> bool:
        if entry is None or now < entry.timing.valid_from:
            return False
        if min_validity is not None:
            return entry.timing.expires - now >= min_validity
        return now < entry.timing.hard_at

    def _ready(self, min_validity: float | None) -> _Entry | None:
        """The slow path's first step, without a coroutine: the token in use if it will do
        (kicking a background refresh past its refresh point), or None to wait."""
        self._start()
        if min_validity is not None and (
            isinstance(min_validity, bool)
            or not isinstance(min_validity, int | float)
            or not min_validity >= 0
        ):
            msg = "min_validity must be a non-negative number of seconds"
            raise ValueError(msg)
        now = time.monotonic()
        entry = self._entry
        if self._usable(entry, now, min_validity):
            assert entry is not None
            if now >= entry.timing.refresh_at:
                self._kick()
            return entry
        return None

    async def _wait_for_token(self, min_validity: float | None) -> _Entry:
        """Wait for the one renewal (starting it if needed), retrying within acquire_timeout."""
        now = time.monotonic()
        self._counts["waits"] += 1
        deadline = now + self._policy.acquire_timeout
        first = self._entry
        last: IcaError | None = None
        while True:
            entry = self._entry
            if self._usable(entry, now, min_validity) or (
                entry is not None and entry is not first and entry.live(now)
            ):
                assert entry is not None
                return entry  # a renewed token is as good as it gets, even if short-lived
            remembered = self._permanent
            if remembered is not None and now < remembered[0]:
                return self._fallback(entry, now, remembered[1])
            if self._closed:
                msg = "this TokenManager was closed while waiting for a token"
                raise RuntimeError(msg)
            if max(self._next_attempt, now) >= deadline and self._inflight is None:
                return self._fallback(entry, now, last, timed_out=True)
            task = self._start_renewal()
            try:
                if not task.done():
                    # Parked on a future of our own (not the task): cancelling this caller
                    # never cancels the renewal. Cheaper than asyncio.shield for 10,000.
                    assert self._loop is not None
                    waiter: asyncio.Future[None] = self._loop.create_future()
                    self._waiters.append(waiter)
                    await waiter
                task.result()
            except IcaError as exc:
                last = exc
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if self._closed and current is not None and not current.cancelling():
                    # The renewal was cancelled by aclose(), not this caller.
                    msg = "this TokenManager was closed while waiting for a token"
                    raise RuntimeError(msg) from None
                raise
            now = time.monotonic()
            if last is not None and self._entry is entry:
                # The attempt failed: a still-unexpired token beats no token.
                if entry is not None and entry.live(now):
                    return entry
                if _is_permanent(last) or now >= deadline:
                    return self._fallback(entry, now, last, timed_out=now >= deadline)

    def _fallback(
        self, entry: _Entry | None, now: float, cause: IcaError | None, *, timed_out: bool = False
    ) -> _Entry:
        """After failures: the current token while it is unexpired, else the error."""
        if entry is not None and entry.live(now):
            return entry
        if cause is not None and not timed_out:
            msg = f"no valid token: {cause}"
        else:
            msg = f"no valid token within acquire_timeout={self._policy.acquire_timeout:g} s" + (
                f"; last failure: {cause}" if cause is not None else ""
            )
        raise TokenUnavailableError(msg) from cause

    def _kick(self) -> None:
        """In the advisory window: make sure a renewal is under way, without waiting for it."""
        if self._inflight is None and time.monotonic() >= self._next_attempt:
            self._start_renewal()

    def _start_renewal(self) -> asyncio.Task[_Entry]:
        task = self._inflight
        if task is None:
            assert self._loop is not None
            task = self._loop.create_task(self._renew(), name="aioica_auth-renew")
            self._inflight = task
            task.add_done_callback(self._renewal_done)
        return task

    def _renewal_done(self, task: asyncio.Task[_Entry]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: logged in _renew, raised to waiters
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _set_hot(self, entry: _Entry | None) -> None:
        """Serve `entry` from the hot path until its refresh point (None: stop serving)."""
        if self._cool is not None:
            self._cool.cancel()
            self._cool = None
        if entry is not None and self._loop is not None and not self._closed:
            now = time.monotonic()
            if entry.timing.valid_from <= now < entry.timing.refresh_at:
                delay = entry.timing.refresh_at - now
                if not math.isinf(delay):  # a token without `exp` is never retired by time
                    self._cool = self._loop.call_at(self._loop.time() + delay, self._set_hot, None)
                self._hot, self._hot_entry = entry.headers, entry
                return
        self._hot = self._hot_entry = None

    async def _renew(self) -> _Entry:
        """One renewal attempt (after any backoff), bounded in time. Runs as its own task."""
        delay = self._next_attempt - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        assert self._source is not None
        current = self._entry
        now = time.monotonic()
        live = current.token if current is not None and now < current.timing.expires else None
        budget = 2 * self._policy.request_timeout + 1  # a keep-alive and a mint at most
        try:
            try:
                async with asyncio.timeout(budget):
                    issued = await self._source.renew(live)
            except TimeoutError as exc:
                if isinstance(exc, IcaError):
                    raise
                msg = f"token renewal did not finish within {budget:g} s"
                raise TransportTimeoutError(msg) from exc
            if (
                current is not None
                and current.token.expires_at is not None
                and issued.token.expires_at is not None
                and issued.token.expires_at <= current.token.expires_at
            ):
                msg = "the token endpoint answered with a token that expires no later than before"
                raise _NoProgressError(msg)
        except IcaError as exc:
            self._failed(exc, current)
            raise
        timing = plan(issued.token, issued.reply, self._policy)
        hold = timing.valid_from - time.monotonic()
        if hold > self._policy.nbf_wait_max:
            # Too far ahead to wait for: more likely our reading of the server's clock is
            # off than the token useless. Use it now; a resource's 401 gets handled.
            timing = attrs.evolve(timing, valid_from=time.monotonic())
        elif hold > 0:
            # Not yet valid (`nbf` ahead): callers keep the old token meanwhile.
            await asyncio.sleep(hold)
        return self._adopt(
            issued.token, timing, minted=issued.minted, reply_at=issued.reply.received_at
        )

    def _failed(self, exc: IcaError, current: _Entry | None) -> None:
        self._failures += 1
        self._counts["failures"] += 1
        lifetime = current.timing.lifetime if current is not None else None
        retry_after = exc.retry_after if isinstance(exc, ApiError) else None
        delay = self._policy.backoff(self._failures, lifetime, retry_after)
        now = time.monotonic()
        if _is_permanent(exc):
            self._permanent = (now + self._policy.error_memory, exc)
            delay = max(delay, self._policy.error_memory)
        self._next_attempt = now + delay
        left = f"{current.timing.expires - now:.1f} s" if current is not None else "no token"
        log = logger.warning if self._failures == 1 else logger.debug
        log(
            "token renewal failed (%s); attempt %d, next in %.2f s; current token: %s",
            exc,
            self._failures,
            delay,
            left,
        )

    def _adopt(
        self,
        token: Token,
        timing: Timing | None,
        *,
        minted: bool,
        reply_at: float | None = None,
        quiet: bool = False,
    ) -> _Entry:
        if timing is None:
            timing = plan(token, None, self._policy)
        authorization = token.authorization
        entry = _Entry(
            token,
            timing,
            reply_at if reply_at is not None else time.monotonic(),
            MappingProxyType({"Authorization": authorization}),
            authorization,
        )
        if self._closed:
            return entry
        self._entry = entry
        self._set_hot(entry)
        self._recent = (authorization, *self._recent[:3])
        if self._failures > 1:
            logger.info("token renewal recovered after %d failures", self._failures)
        self._failures = 0
        self._next_attempt = 0.0
        self._permanent = None
        if not quiet:
            self._counts["mints" if minted else "refreshes"] += 1
            if self._source is not None and self._source.keeps_session:
                self._next_keepalive = time.monotonic() + self._policy.keepalive_interval
        lifetime = "unknown" if timing.lifetime is None else f"{timing.lifetime:.1f} s"
        skew = "" if timing.skew is None else f", server clock {timing.skew:+.0f} s from ours"
        logger.info(
            "%s token %s (lifetime %s, refresh in %.1f s%s)",
            "using given" if quiet else "minted" if minted else "refreshed",
            token.fingerprint,
            lifetime,
            timing.refresh_at - time.monotonic(),
            skew,
        )
        self._ensure_scheduler()
        if self._on_token is not None and self._loop is not None:
            self._loop.call_soon(self._notify, token)
        return entry

    def _notify(self, token: Token) -> None:
        assert self._on_token is not None
        try:
            self._on_token(token)
        except Exception:
            logger.exception("on_token callback failed for token %s", token.fingerprint)

    # -- internals: background --------------------------------------------------------------

    def _ensure_scheduler(self) -> None:
        if self._scheduler is None or self._scheduler.done():
            assert self._loop is not None
            self._scheduler = self._loop.create_task(self._schedule(), name="aioica_auth-refresh")
            self._scheduler.add_done_callback(_log_crash)

    async def _schedule(self) -> None:
        """Sleep until the next refresh point or keep-alive, then do it; forever."""
        try:
            await self._schedule_loop()
        except asyncio.CancelledError:
            # Cancelled by aclose() or by asyncio.run ending the loop: a timer of a dead loop
            # must not leave the hot path serving a token that nobody will ever expire.
            self._set_hot(None)
            raise

    async def _schedule_loop(self) -> None:
        while not self._closed:
            entry = self._entry
            now = time.monotonic()
            wake = entry.timing.refresh_at if entry is not None else math.inf
            wake = min(max(wake, self._next_attempt), self._next_keepalive)
            if math.isinf(wake):
                return  # nothing to do until a token is adopted again
            await asyncio.sleep(max(0.0, wake - now))
            now = time.monotonic()
            entry = self._entry
            if entry is not None and now >= entry.timing.refresh_at and now >= self._next_attempt:
                with contextlib.suppress(IcaError):  # logged and backed off in _renew
                    await asyncio.shield(self._start_renewal())
            elif now >= self._next_keepalive:
                await self._keep_alive()

    async def _keep_alive(self) -> None:
        assert self._source is not None
        self._next_keepalive = time.monotonic() + self._policy.keepalive_interval
        try:
            async with asyncio.timeout(self._policy.request_timeout + 1):
                await self._source.keep_alive()
        except (IcaError, TimeoutError) as exc:
            retry = min(self._policy.keepalive_interval, 30.0)
            self._next_keepalive = time.monotonic() + retry
            logger.warning("psToken session keep-alive failed (%s); retrying in %.1f s", exc, retry)
            if isinstance(exc, TokenUnavailableError):
                self._permanent = (time.monotonic() + self._policy.error_memory, exc)
        else:
            self._counts["keepalives"] += 1

    async def _revoke(self, token: Token) -> None:
        assert self._source is not None
        try:
            async with asyncio.timeout(self._policy.request_timeout + 1):
                await self._source.revoke(token)
        except (IcaError, TimeoutError) as exc:
            logger.warning("revoking token %s on close failed: %s", token.fingerprint, exc)
        else:
            logger.info("revoked token %s", token.fingerprint)

    # -- used by the middleware -------------------------------------------------------------

    def _is_ours(self, authorization: str) -> bool:
        return authorization in self._recent

    async def _current(self) -> _Entry:
        entry = self._hot_entry
        if entry is not None:
            return entry
        return self._ready(None) or await self._wait_for_token(None)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("token refresh scheduler stopped: %r", exc, exc_info=exc)
