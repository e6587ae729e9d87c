"""`TokenManager`: fresh bearer headers for thousands of tasks, one request per refresh.

The manager is a small state machine over named parts, each owning one concern:

- `Lifecycle` (NEW, OPEN, CLOSED): bound to the event loop it first runs in at NEW -> OPEN.
- `_lease` (`_lease.Lease`): the token in use, with its timing and provenance; its state
  (not yet valid, fresh, refresh due, must wait, expired) is judged by `Lease.state` alone.
  `_bridge` (`_maturity.Bridge`) holds the lease it replaced, handed out until it matures.
- `_hot`: the header mapping handed out while the lease is fresh; the hot path reads this one
  attribute and nothing else. A loop timer clears it at the refresh point; so do
  invalidation, `aclose()`, a detected suspend, and the end of the scheduler task.
- `_renewal` (`_renewal.Renewal`): the token source, the `SingleFlight` of renewal attempts
  (one task, bounded waiters) and the `Backoff` (failures in a row, the next attempt, a
  remembered permanent failure; `_backoff.classify` alone says what is transient).
- `_scheduler`: runs `Renewal.run`, which sleeps until the refresh point or the next
  keep-alive in chunks of at most 2 s, so that a suspend of the machine is noticed within
  seconds (`_rejudge`).
- The `LeaseSource` methods (`lease`, `current`, `served`, `defer`, `invalidate`...) are all
  the middleware sees of it.

Every caller's wait is bounded by `acquire_timeout` and awaits something on every pass.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import math
import random
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs
import yarl

from ._adapters.middleware import BearerMiddleware
from ._clock import Clock, SystemClock
from ._credentials import ApiKey, BasicAuth, Jwt, PsToken
from ._errors import IcaError
from ._fleet.shared import shared_sources
from ._fleet.store import TokenStore
from ._lifecycle.backoff import Backoff, Severity, classify, unavailable
from ._lifecycle.lease import Lease, Provenance, TokenState
from ._lifecycle.maturity import Bridge
from ._lifecycle.policy import Policy
from ._lifecycle.renewal import Renewal
from ._lifecycle.sources import SourceFactory, TokenSource, console_sources, ica_sources
from ._lifecycle.stats import COUNTERS, ManagerStats
from ._lifecycle.timing import Timing
from ._token import Token
from ._wire.console import CONSOLE_BASE_URL, MintOptions
from ._wire.core import check_base_url, check_session
from ._wire.ica import ICA_BASE_URL

if TYPE_CHECKING:
    from ._adapters.httpx_auth import HttpxAuth

__all__ = ["Lifecycle", "ManagerStats", "TokenManager"]

logger = logging.getLogger("aioica_auth")


class _Again(enum.Enum):
    AGAIN = "again"


_AGAIN = _Again.AGAIN


class Lifecycle(enum.Enum):
    """A manager's life: built, bound to a loop and serving, closed."""

    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


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
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Prefer `for_ica` and `for_console`; this is the general constructor.

        `clock` (with `monotonic()` and `time()`) and `rng` are for tests: an injected clock
        and a seeded random source make timing and jitter exact.
        """
        if session is not None:
            check_session(session)
        if on_token is not None and not callable(on_token):
            msg = "on_token must be callable"
            raise TypeError(msg)
        self._policy = policy or Policy()
        self._source_factory = source_factory
        self._base_url = base_url
        self._session = session
        self._owns_session = session is None
        self._on_token = on_token
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._lifecycle = Lifecycle.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._renewal: Renewal | None = None
        self._lease: Lease | None = None
        self._bridge = Bridge()
        self._hot: Mapping[str, str] | None = None
        self._hot_lease: Lease | None = None
        self._cool: asyncio.TimerHandle | None = None
        self._recent: tuple[str, ...] = ()  # authorizations handed out lately
        self._scheduler: asyncio.Task[None] | None = None
        self._revoke_target: Lease | None = None
        self._ceiling: float | None = None  # validity a renewal for a min_validity gave
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
        store: TokenStore | None = None,
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
            store: A `TokenStore` (`FileTokenStore`, `RedisTokenStore`) shared by the
                managers of a fleet, so that they make about one token request per refresh
                in all; yours to close. Not for a `Jwt`.
            **policy: Any `Policy` field: `refresh_margin`, `min_validity`, `leeway`, ...
                (`revoke_on_close` is for the console: ICA v2 has no revoke endpoint).

        Raises:
            ValueError: a bad base URL or policy value. TypeError: an unknown keyword or a
                value of the wrong type.
        """
        url = check_base_url(base_url)
        rules = Policy.from_keywords(policy)
        if rules.revoke_on_close:
            msg = "revoke_on_close is for the console (for_console): ICA v2 cannot revoke a JWT"
            raise ValueError(msg)
        factory = ica_sources(credential, url, tenant)
        factory = shared_sources(
            factory,
            store,
            platform="ica",
            base_url=str(url),
            credential=credential,
            options=[f"tenant={tenant or ''}"],
        )
        return cls(factory, base_url=url, session=session, policy=rules, on_token=on_token)

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
        store: TokenStore | None = None,
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
            store: As in `for_ica`; not for a `PsToken` (its session is one manager's), nor
                with `revoke_on_close` (the stored token is every sharing manager's).
            **policy: Any `Policy` field, including `keepalive_interval` and
                `revoke_on_close`.

        Raises:
            ValueError: a bad base URL, option or policy value. TypeError: an unknown keyword.
        """
        url = check_base_url(base_url)
        rules = Policy.from_keywords(policy)
        if rules.revoke_on_close and store is not None:
            msg = (
                "revoke_on_close cannot be used with a store: the stored token is shared by "
                "every manager on the store, and revoking it when one of them closes (a deploy, "
                "a scale-down) would make the others' requests fail with 401; drop one of the two"
            )
            raise ValueError(msg)
        options = MintOptions(client_id, domain, data, scopes, cwid, cid)
        factory = console_sources(credential, url, options)
        factory = shared_sources(
            factory,
            store,
            platform="console",
            base_url=str(url),
            credential=credential,
            options=[f"{k}={v}" for k, v in options.params(return_session_token=False)],
        )
        return cls(
            factory,
            base_url=url,
            session=session,
            policy=rules,
            on_token=on_token,
        )

    @classmethod
    def from_environment(cls, *, console: bool = False, **kwargs: Any) -> TokenManager:
        """A manager for the credential and base URL the user already has.

        They are found as `discover_credentials` finds them: `ICAV2_X_API_KEY`,
        `ICAV2_ACCESS_TOKEN`, a plaintext `x-api-key` in `~/.icav2/config.yaml`, the
        `access-token` of the icav2 CLI's session file; the base URL from `ICAV2_BASE_URL`,
        `ICAV2_SERVER_URL` or the config's `server-url`, else `ICA_BASE_URL`.

        Args:
            console: A manager for the console v1 (`for_console`) instead of ICA v2.
            **kwargs: As for `for_ica` / `for_console` (a `base_url` given wins over the
                discovered one), plus `environ` and `home` as for `discover_credentials`.

        Raises:
            IcaError: no credential found (the message lists what was tried), or one that
                cannot be used (an encrypted `x-api-key`; a console JWT).
            ValueError, TypeError: as for `for_ica` / `for_console`.
        """
        from ._discovery.api import environment_credentials

        with_store = isinstance(kwargs.get("store"), TokenStore)
        found = environment_credentials(
            console=console,
            environ=kwargs.pop("environ", None),
            home=kwargs.pop("home", None),
            base_url=kwargs.pop("base_url", None),
            with_store=with_store,
        )
        credential = found.credential
        if isinstance(credential, Jwt):  # an ICA JWT: a console one was refused
            if with_store:
                del kwargs["store"]  # nothing to share: see environment_credentials
        elif console:
            return cls.for_console(credential, base_url=found.base_url, **kwargs)
        return cls.for_ica(credential, base_url=found.base_url, **kwargs)

    # -- public API -------------------------------------------------------------------------

    async def headers(self, *, min_validity: float | None = None) -> Mapping[str, str]:
        """`{"Authorization": "Bearer <jwt>"}` with a token that is valid now.

        Before the token's refresh point this returns the cached mapping with no I/O and no
        wait. Near expiry it waits for the one in-flight refresh, never longer than
        `acquire_timeout`.

        Args:
            min_validity: Seconds the token must stay valid (for a long upload); the manager
                renews first when the current one would not last that long (once per token:
                when the server's tokens cannot last that long, the freshest one is served and
                a log line says so).

        Raises:
            TokenUnavailableError: no valid token could be had (the cause is chained).
            RuntimeError: the manager is closed, or used from another event loop.
        """
        hot = self._hot
        if hot is not None and min_validity is None:
            return hot
        lease = self._ready(min_validity)
        if lease is not None:
            return lease.headers
        # A storm's waiters park right here, with no coroutine of their own.
        deadline = self._deadline()
        joined = self._join_plain(min_validity, deadline)
        if joined is not None:
            renewal, waiter = joined
            try:
                await waiter
            finally:
                renewal.flight.unpark(waiter)
            landed = renewal.outcome()
            if landed is not None and landed is self._lease:
                return landed.headers
        return (await self._wait(min_validity, deadline)).headers

    async def token(self, *, min_validity: float | None = None) -> Token:
        """The current `Token`, under the same rules as `headers()`."""
        lease = self._hot_lease
        if lease is not None and min_validity is None:
            return lease.token
        lease = self._ready(min_validity) or await self._wait(min_validity, self._deadline())
        return lease.token

    @property
    def middleware(self) -> BearerMiddleware:
        """An aiohttp client middleware: `ClientSession(middlewares=(manager.middleware,))`.

        It adds the bearer header to requests for the base URL's origin only, and recovers
        from a 401 in bounded time (see `BearerMiddleware`).
        """
        return self._middleware

    @functools.cached_property
    def httpx_auth(self) -> HttpxAuth:
        """An `httpx.Auth` for `httpx.AsyncClient(auth=manager.httpx_auth)`, under the rules
        of `middleware` (the extra `aioica_auth[httpx]` installs httpx).

        Raises:
            ImportError: httpx is not installed.
        """
        try:
            from ._adapters.httpx_auth import HttpxAuth
        except ImportError as exc:
            msg = "manager.httpx_auth needs httpx: pip install 'aioica_auth[httpx]'"
            raise ImportError(msg, name="httpx") from exc
        return HttpxAuth(self, self._base_url)

    @property
    def stats(self) -> ManagerStats:
        """A snapshot of the manager's counters."""
        return ManagerStats(**self._counts)

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

    @property
    def clock(self) -> Clock:
        """The clocks the manager judges tokens by."""
        return self._clock

    @property
    def lifecycle(self) -> Lifecycle:
        """New, open (bound to its event loop) or closed."""
        return self._lifecycle

    @property
    def closed(self) -> bool:
        """Whether `aclose()` was called."""
        return self._lifecycle is Lifecycle.CLOSED

    def invalidate(self, token: Token | str) -> bool:
        """Stop using `token` (a resource refused it) and start getting a new one.

        Only a token in use is dropped: if another task already replaced it, nothing
        happens; the one a renewal replaced, still handed out while the new one matures, is
        dropped without a renewal. A dropped token is never handed out again. Returns whether
        it was dropped.
        """
        value = token.value if isinstance(token, Token) else token
        lease, bridged = self._lease, self._bridge.prior
        if bridged is not None and bridged.token.value == value and self._bridge.drop(bridged):
            self._set_hot(lease)
            lease = bridged
        elif lease is None or lease.token.value != value:
            return False
        else:
            lease.refused, self._lease = True, None
            self._set_hot(None)
            if self._renewal is not None and self._lifecycle is Lifecycle.OPEN:
                self._renewal.source.refused(lease.token)
                self._renewal.flight.start()
        self._counts["invalidations"] += 1
        logger.info("token %s refused by a resource: dropped", lease.token.fingerprint)
        return True

    async def __aenter__(self) -> TokenManager:
        self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop refreshing, cancel and await background work, close what the manager owns.

        Idempotent, and safe to cancel: a cancelled `aclose()` still closes the session it
        owns, and a second call finishes whatever the first left. With `revoke_on_close`
        (console), revokes the current JWT first.
        """
        if self._lifecycle is not Lifecycle.CLOSED:
            self._lifecycle = Lifecycle.CLOSED
            lease, self._lease, self._bridge.prior = self._lease, None, None
            self._set_hot(None)
            if self._policy.revoke_on_close:
                self._revoke_target = lease
            logger.debug("token manager closing")
        try:
            tasks = [t for t in (self._scheduler, self._cancel_flight()) if t and not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            target, self._revoke_target = self._revoke_target, None
            if target is not None and self._renewal is not None:
                await self._renewal.revoke(target)
        finally:
            await self._release()

    def __repr__(self) -> str:
        lease = self._lease
        state = lease.token if lease is not None else "no token"
        return f"TokenManager(base_url={str(self._base_url)!r}, {self._lifecycle.value}, {state})"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_lifecycle", Lifecycle.CLOSED) is not Lifecycle.OPEN:
            return  # closed, never used, or __init__ never finished
        leaked = (
            self._owns_session and self._session is not None and not self._session.closed
        ) or (self._scheduler is not None and not self._scheduler.done())
        if leaked:
            _warn(f"unclosed {self!r}: call `await manager.aclose()`", ResourceWarning, source=self)

    # -- used by the middleware (the `LeaseSource` protocol) --------------------------------

    async def lease(self) -> Lease:
        """A usable lease, as `headers()` would give."""
        lease = self._hot_lease
        if lease is not None:
            return lease
        return self._ready(None) or await self._wait(None, self._deadline())

    def current(self) -> Lease | None:
        """The newest lease, without waiting."""
        return self._lease

    def served(self) -> Lease | None:
        """The lease handed out now: the newest, or the one it replaced while it matures."""
        return self._hot_lease or self._lease

    def defer(self, lease: Lease) -> bool:
        """`lease` was refused as young: serve the one it replaced longer, if that is good."""
        if lease is not self._lease or not self._bridge.defer(lease, self._clock):
            return False
        self._set_hot(lease)
        return True

    def is_ours(self, authorization: str) -> bool:
        """Whether `authorization` is a header value this manager handed out lately."""
        return authorization in self._recent

    # -- internals: acquiring ---------------------------------------------------------------

    def _start(self) -> Renewal:
        """Bind to the running loop and set up the session and source on first use."""
        renewal = self._renewal
        if self._lifecycle is Lifecycle.OPEN and renewal is not None:
            if asyncio.get_running_loop() is not self._loop:
                msg = (
                    "this TokenManager is bound to the event loop it first ran in; "
                    "create one manager per event loop"
                )
                raise RuntimeError(msg)
            return renewal
        if self._lifecycle is Lifecycle.CLOSED:
            msg = "this TokenManager is closed"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        session = self._session or aiohttp.ClientSession(trust_env=True)
        source: TokenSource = self._source_factory(session, self._policy)
        self._loop, self._session = loop, session
        backoff = Backoff(self._policy, self._rng)
        renewal = Renewal(
            loop,
            source,
            self._policy,
            backoff,
            self._clock,
            current=self.current,
            adopt=self._adopt,
            counts=self._counts,
        )
        self._renewal = renewal
        self._lifecycle = Lifecycle.OPEN
        given = source.initial()
        if given is not None:
            now = self._clock.monotonic(), self._clock.time()
            timing = Timing.of(given, None, self._policy, rng=self._rng, now=now)
            self._adopt(Lease(given, timing, Provenance.GIVEN, now[0], now[1] - now[0]))
        return renewal

    def _ready(self, min_validity: float | None) -> Lease | None:
        """The slow path's first step, without a coroutine: the lease in use if it will do
        (kicking a background renewal past its refresh point), or None to wait."""
        renewal = self._start()
        need = _check_min_validity(min_validity)
        lease = self._lease
        if lease is None:
            return None
        now = lease.now(self._clock)
        state = lease.state(now)
        if need is None:
            usable = state is TokenState.FRESH or state is TokenState.REFRESH_DUE
        else:
            usable = state.live and not (
                lease.judge_shortfall(now, need, self._ceiling)
                and self._wants_shortfall_renewal(renewal)
            )
            if usable:
                lease.note_short(now, need)
        if not usable:
            return None
        if state is not TokenState.FRESH:
            renewal.kick()
        return lease

    def _wants_shortfall_renewal(self, renewal: Renewal) -> bool:
        # The one shortfall renewal of this lease: start it, or join the one in flight.
        return renewal.flight.running or renewal.backoff.ready(self._clock.monotonic())

    def _join_plain(
        self, min_validity: float | None, deadline: float
    ) -> tuple[Renewal, asyncio.Future[None]] | None:
        """For a caller with no token and no min_validity: park on the renewal in flight."""
        renewal = self._renewal
        if min_validity is not None or self._lease is not None or renewal is None:
            return None
        if not renewal.flight.running:
            return None
        waiter = renewal.flight.park(deadline)
        return None if waiter is None else (renewal, waiter)

    def _deadline(self) -> float:
        """Count a wait, and return when it must end (acquire_timeout from now)."""
        self._counts["waits"] += 1
        return self._clock.monotonic() + self._policy.acquire_timeout

    async def _wait(self, min_validity: float | None, deadline: float) -> Lease:
        """Wait for the one renewal (starting it if needed), until `deadline`."""
        renewal = self._renewal  # set by _ready(), which always runs first
        assert renewal is not None
        first = self._lease
        while True:
            served, first = self._arrived(self._lease, first, min_validity)
            if served is not None:
                return served
            lease = self._lease
            if self._lifecycle is Lifecycle.CLOSED:
                msg = "this TokenManager was closed while waiting for a token"
                raise RuntimeError(msg)
            hold = self._nbf_hold(lease, deadline)
            if hold is not None:  # valid soon (its nbf): wait for that, not for a renewal
                await asyncio.sleep(hold)
                if (ready := self._ready(min_validity)) is not None:
                    return ready
                continue
            result = await self._renewed(renewal, deadline)
            if result is _AGAIN:
                continue  # woken before the renewal landed: re-judged at the top
            if result is None:  # the deadline passed with the renewal still under way
                cause, waiting_for = renewal.backoff.last, renewal.source.waiting_for
                return self._fallback(self._lease, cause, in_flight=True, waiting_for=waiting_for)
            if result is self._lease and not self._short_share(result, min_validity):
                return self._served(result, min_validity)  # just adopted: as fresh as it gets
            if isinstance(result, IcaError) and (kept := self._failed(result, deadline)):
                return kept

    @staticmethod
    async def _renewed(renewal: Renewal, deadline: float) -> Lease | IcaError | _Again | None:
        """Join the renewal and wait for it: its lease or failure, `_AGAIN` if woken before it
        landed, None once `deadline` has passed with it still under way."""
        joined = renewal.join(deadline)
        if isinstance(joined, asyncio.Future):
            try:
                await joined  # parked on a future of our own, never on the task
            finally:
                renewal.flight.unpark(joined)
            result = renewal.outcome()
            return _AGAIN if result is None else result
        await asyncio.sleep(0)  # an answer at once: still yield, then act on it
        return joined

    def _failed(self, error: IcaError, deadline: float) -> Lease | None:
        """After a failed renewal: the lease to serve, the error raised, or None to retry."""
        lease = self._lease
        assert self._renewal is not None
        retry = classify(error) is Severity.TRANSIENT and not self._renewal.outwaits(deadline)
        if retry and (lease is None or not self._live(lease)):
            return None
        # Static stability: the valid lease if there is one (an error never displaces it).
        return self._fallback(lease, error)

    def _nbf_hold(self, lease: Lease | None, deadline: float) -> float | None:
        """Seconds until a not-yet-valid lease becomes valid, if that is before `deadline`."""
        if lease is None:
            return None
        now = lease.now(self._clock)
        valid_from = lease.timing.valid_from
        if lease.state(now) is not TokenState.NOT_YET_VALID or valid_from >= deadline:
            return None
        return valid_from - now

    def _arrived(
        self, lease: Lease | None, first: Lease | None, min_validity: float | None
    ) -> tuple[Lease | None, Lease | None]:
        """A waiter's look at the lease in use: (the lease to serve, or None to go on
        waiting; the lease that counts as the one it started with from now on)."""
        if lease is None or lease is first or not self._live(lease):
            return None, first
        if self._short_share(lease, min_validity):
            return None, lease  # renew once more, for the need
        return self._served(lease, min_validity), first

    def _short_share(self, lease: Lease, min_validity: float | None) -> bool:
        """A lease from the fleet's store, short of `min_validity`: it says nothing of what a
        new token would give (it was issued a while ago), so renew once more for the need."""
        return (
            min_validity is not None
            and lease.provenance is Provenance.SHARED
            and lease.validity(lease.now(self._clock)) < min_validity
        )

    def _served(self, lease: Lease, min_validity: float | None) -> Lease:
        """A renewed lease for a waiter: as good as it gets, even if short of min_validity."""
        if min_validity is not None:
            now = lease.now(self._clock)
            if lease.validity(now) < min_validity:
                lease.served_short()
                self._ceiling = lease.initial_validity
                lease.note_short(now, min_validity)
        return lease

    def _live(self, lease: Lease) -> bool:
        return lease.state(lease.now(self._clock)).live

    def _fallback(
        self,
        lease: Lease | None,
        cause: IcaError | None,
        *,
        in_flight: bool = False,
        waiting_for: str | None = None,
    ) -> Lease:
        """After failures: the current lease while it is valid, else the error, naming why."""
        if lease is not None and self._live(lease):
            return lease
        timeout = self._policy.acquire_timeout
        raise unavailable(cause, timeout, in_flight=in_flight, waiting_for=waiting_for) from cause

    # -- internals: adopting and serving ----------------------------------------------------

    def _adopt(self, lease: Lease) -> None:
        """Make `lease` the one in use (before any waiter wakes), and say so."""
        if self._lifecycle is Lifecycle.CLOSED:
            return
        self._bridge.replaced(self._lease)
        self._lease = lease
        self._set_hot(lease)
        self._recent = (lease.authorization, *self._recent[:3])
        counter = COUNTERS.get(lease.provenance)
        if counter is not None:
            self._counts[counter] += 1
        timing = lease.timing
        lifetime = "unknown" if timing.lifetime is None else f"{timing.lifetime:.1f} s"
        skew = "" if timing.skew is None else f", server clock {timing.skew:+.0f} s from ours"
        logger.info(
            "%s token %s (lifetime %s, refresh in %.1f s%s)",
            "using given" if lease.provenance is Provenance.GIVEN else lease.provenance.value,
            lease.token.fingerprint,
            lifetime,
            timing.refresh_at - lease.now(self._clock),
            skew,
        )
        self._ensure_scheduler()
        if self._on_token is not None and self._loop is not None:
            self._loop.call_soon(self._notify, lease.token)

    def _notify(self, token: Token) -> None:
        assert self._on_token is not None
        try:
            self._on_token(token)
        except Exception:
            logger.exception("on_token callback failed for token %s", token.fingerprint)

    def _set_hot(self, lease: Lease | None) -> None:
        """Serve `lease` (or, while it matures, the one it replaced: `Bridge.serve`) from the
        hot path until its refresh point (None: stop serving)."""
        if self._cool is not None:
            self._cool.cancel()
            self._cool = None
        loop = self._loop if self._lifecycle is Lifecycle.OPEN else None
        if lease is not None and loop is not None and lease.state(lease.now(self._clock)).fresh:
            served, delay = self._bridge.serve(lease, self._clock)
            if not math.isinf(delay):  # a token without `exp` is never retired by time
                then = None if served is lease else lease  # retire it, or re-judge
                self._cool = loop.call_later(delay, self._set_hot, then)
            self._hot, self._hot_lease = served.headers, served
            return
        self._hot = self._hot_lease = None

    # -- internals: background --------------------------------------------------------------

    def _ensure_scheduler(self) -> None:
        if (self._scheduler is None or self._scheduler.done()) and self._loop is not None:
            self._scheduler = self._loop.create_task(self._schedule(), name="aioica_auth-refresh")
            self._scheduler.add_done_callback(_log_crash)

    async def _schedule(self) -> None:
        """Sleep until the next refresh point or keep-alive, then do it; until closed."""
        assert self._renewal is not None
        try:
            await self._renewal.run(lambda: self._lease, self._rejudge)
        except asyncio.CancelledError:
            # Cancelled by aclose(), or by asyncio.run ending the loop: a timer of a dead loop
            # must not leave the hot path serving a token nobody will retire, and a session
            # the manager owns must not outlive its loop.
            self._set_hot(None)
            if self._lifecycle is not Lifecycle.CLOSED:
                await self._release()
            raise

    def _rejudge(self) -> None:
        """After a jump of the wall clock against the monotonic one (a suspend): re-judge."""
        lease = self._lease
        if lease is None or self._hot_lease is None:
            return
        drift = lease.now(self._clock) - self._clock.monotonic()
        if drift > 0 and drift != lease.drift_seen:
            lease.drift_seen = drift
            logger.warning(
                "the wall clock ran %.0f s ahead of the monotonic one (the machine slept?): "
                "token %s re-judged",
                drift,
                lease.token.fingerprint,
            )
            self._set_hot(lease)

    def _cancel_flight(self) -> asyncio.Task[Lease] | None:
        return self._renewal.flight.cancel() if self._renewal is not None else None

    async def _release(self) -> None:
        session = self._session
        if self._owns_session and session is not None and not session.closed:
            await session.close()
            logger.debug("token manager closed its session")


def _check_min_validity(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        msg = "min_validity must be a non-negative number of seconds"
        raise ValueError(msg)
    return float(value)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("token refresh scheduler stopped: %r", exc, exc_info=exc)
