"""`TokenManager`: fresh bearer headers for thousands of tasks, one request per refresh.

The façade and composition root over the engine of `_lifecycle`; each part owns one concern:

- `Lifecycle` (NEW, OPEN, CLOSED): bound to the event loop it first runs in at NEW -> OPEN,
  where `_start` builds the session, the source (`SourceSpec`) and the parts below.
- `_slot` (`Slot`): the token in use, the one it replaced while the new one matures, the
  authorizations handed out, the ceiling of a `min_validity`, the hot path's retire timer.
- `_hot`: the headers of a fresh lease, the one attribute the hot path reads (and
  `SyncTokenManager`, from other threads): the slot's one deliberate mirror (`_publish`).
- `_renewal` (`Renewal`): the token source, the `SingleFlight` of renewal attempts, the
  `Backoff`, and the scheduler that renews at the refresh point and notices a suspend.
- `_acquire` (`Acquire`): a caller's bounded wait, the slow path of `headers()` and `token()`.
- `_view` (`LeaseView`): all the middleware and the httpx auth see of the manager.

Every caller's wait is bounded by `acquire_timeout` and awaits something on every pass.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import random
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl

from ._adapters.middleware import BearerMiddleware
from ._adapters.view import LeaseView
from ._checks import check_text
from ._clock import Clock, SystemClock
from ._credentials import ApiKey, BasicAuth, Jwt, PsToken
from ._fleet.shared import shared
from ._fleet.store import TokenStore
from ._lifecycle.acquire import Acquire
from ._lifecycle.engine import assemble, telemetry_for
from ._lifecycle.lease import Lease
from ._lifecycle.policy import Policy
from ._lifecycle.renewal import Renewal
from ._lifecycle.slot import Slot
from ._lifecycle.sources import SourceFactory, SourceSpec
from ._lifecycle.stats import Counters, ManagerStats
from ._lifecycle.telemetry import NO_TELEMETRY, Telemetry
from ._token import Token
from ._wire.console import CONSOLE_BASE_URL, MintOptions
from ._wire.ica import ICA_BASE_URL
from ._wire.urls import check_base_url, check_session

if TYPE_CHECKING:
    from ._adapters.httpx_auth import HttpxAuth

__all__ = ["Lifecycle", "ManagerStats", "TokenManager"]


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

    def __init__(self) -> None:
        """Not for direct use: build one with `for_ica`, `for_console` or `from_environment`."""
        msg = (
            "build a TokenManager with TokenManager.for_ica(...), TokenManager.for_console(...) "
            "or TokenManager.from_environment(...)"
        )
        raise TypeError(msg)

    @classmethod
    def _build(cls, source_factory: SourceFactory, **wiring: Any) -> TokenManager:
        """The wiring behind `for_ica` and `for_console` (the arguments of `_setup`)."""
        self = cls.__new__(cls)
        self._setup(source_factory, **wiring)
        return self

    def _setup(
        self,
        source_factory: SourceFactory,
        *,
        base_url: yarl.URL,
        session: aiohttp.ClientSession | None = None,
        policy: Policy | None = None,
        on_token: Callable[[Token], object] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        name: str = "default",
    ) -> None:
        """`clock` (with `monotonic()` and `time()`) and `rng` are for tests: an injected
        clock and a seeded random source make timing and jitter exact."""
        if session is not None:
            check_session(session)
        if on_token is not None and not callable(on_token):
            msg = "on_token must be callable"
            raise TypeError(msg)
        self._policy = policy or Policy()
        # A spec knows its platform; a test's own factory is taken for ICA's.
        self._platform: str = getattr(source_factory, "platform", "ica")
        self._name = check_text(name, "name")
        self._telemetry: Telemetry = NO_TELEMETRY  # chosen on first use (`telemetry_for`)
        self._source_factory = source_factory
        self._base_url = base_url
        self._session = session
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._lifecycle = Lifecycle.NEW
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counters = Counters()
        self._slot = Slot(self._clock, self._counters, on_token)
        self._hot: Mapping[str, str] | None = None  # the hot path (see the module docstring)
        self._hot_lease: Lease | None = None
        self._renewal: Renewal | None = None
        self._acquire: Acquire | None = None
        self._view = LeaseView(
            self._slot, self._clock, self._policy, wait=self._wait, invalidate=self.invalidate
        )
        self._middleware = BearerMiddleware(self._view, base_url)

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
        name: str = "default",
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
            name: Tells this manager's metrics and spans from other managers' of the process
                (the attribute `aioica_auth.manager`; docs/observability.md).
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
        factory = shared(SourceSpec.ica(credential, url, tenant), store)
        return cls._build(
            factory, base_url=url, session=session, policy=rules, on_token=on_token, name=name
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
        store: TokenStore | None = None,
        name: str = "default",
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
            name: As in `for_ica`.
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
        factory = shared(SourceSpec.console(credential, url, options), store)
        return cls._build(
            factory, base_url=url, session=session, policy=rules, on_token=on_token, name=name
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
        acquire = self._start()
        lease = acquire.ready(min_validity)
        if lease is not None:
            return lease.headers
        # A storm's waiters park right here, with no coroutine of their own.
        deadline = acquire.deadline()
        waiter = acquire.park(min_validity, deadline)
        if waiter is not None:
            try:
                await waiter
            finally:
                acquire.unpark(waiter)
            landed = acquire.landed()
            if landed is not None:
                return landed.headers
        return (await acquire.wait(min_validity, deadline)).headers

    async def token(self, *, min_validity: float | None = None) -> Token:
        """The current `Token`, under the same rules as `headers()`."""
        lease = self._hot_lease
        if lease is not None and min_validity is None:
            return lease.token
        acquire = self._start()
        lease = acquire.ready(min_validity) or await acquire.wait(min_validity, acquire.deadline())
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
        return HttpxAuth(self._view, self._base_url)

    @property
    def stats(self) -> ManagerStats:
        """A snapshot of the manager's counters."""
        return self._counters.snapshot()

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

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
        renewal = self._renewal
        value = token.value if isinstance(token, Token) else token
        return renewal is not None and renewal.drop(value)

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
        renewal = self._renewal
        if self._lifecycle is not Lifecycle.CLOSED:
            self._lifecycle = Lifecycle.CLOSED
            lease = self._slot.close()
            if self._policy.revoke_on_close and renewal is not None:
                renewal.revoke_target = lease
        if renewal is not None:
            await renewal.aclose()
        self._telemetry.close()

    def __repr__(self) -> str:
        lease = self._slot.lease
        state = lease.token if lease is not None else "no token"
        return f"TokenManager(base_url={str(self._base_url)!r}, {self._lifecycle.value}, {state})"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_lifecycle", Lifecycle.CLOSED) is not Lifecycle.OPEN:
            return  # closed, never used, or never built
        if self._renewal is not None and self._renewal.leaking():
            _warn(f"unclosed {self!r}: call `await manager.aclose()`", ResourceWarning, source=self)

    # -- internals --------------------------------------------------------------------------

    @property
    def _lease(self) -> Lease | None:
        """The newest lease (for tests and benchmarks: `_slot.lease`)."""
        return self._slot.lease

    def _publish(self, lease: Lease | None) -> None:
        """The slot's hot-path mirror: what `headers()` and `token()` serve without a wait."""
        self._hot = None if lease is None else lease.headers
        self._hot_lease = lease

    async def _wait(self) -> Lease:
        """The slow path of a lease for the adapters (`LeaseView.lease`)."""
        acquire = self._start()
        return acquire.ready(None) or await acquire.wait(None, acquire.deadline())

    def _start(self) -> Acquire:
        """Bind to the running loop and set up the session and the parts on first use."""
        acquire = self._acquire
        if self._lifecycle is Lifecycle.OPEN and acquire is not None:
            if asyncio.get_running_loop() is not self._loop:
                msg = (
                    "this TokenManager is bound to the event loop it first ran in; "
                    "create one manager per event loop"
                )
                raise RuntimeError(msg)
            return acquire
        if self._lifecycle is Lifecycle.CLOSED:
            msg = "this TokenManager is closed"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        session = self._session or aiohttp.ClientSession(trust_env=True)
        owned = None if session is self._session else session  # made here: closed in aclose()
        source = self._source_factory(session, self._policy)
        self._loop, self._session = loop, session
        self._slot.bind(loop, self._publish)
        parts = self._policy, self._rng, self._clock, self._slot, self._counters
        self._telemetry = telemetry = telemetry_for(self._platform, self._name)
        self._renewal, acquire = assemble(loop, source, *parts, session=owned, telemetry=telemetry)
        self._acquire = acquire
        self._lifecycle = Lifecycle.OPEN
        return acquire
