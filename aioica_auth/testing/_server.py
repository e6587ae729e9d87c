"""`LocalIcaServer`: an ICA v2 + console v1 token service on loopback, for tests.

This module is the server's lifecycle, settings, public state and faults API; the way each
request takes through it (recording, latency, faults, compression) is `_dispatch.Dispatch`, and
the endpoints themselves are `_endpoints`.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
from collections.abc import Sequence
from types import TracebackType

from aiohttp import web

from ._dispatch import Dispatch
from ._endpoints import Endpoints
from ._faults import Fault, FaultBook, RecordedRequest
from ._state import Registry

__all__ = ["LocalIcaServer"]

_log = logging.getLogger("aioica_auth.testing")

_SHUTDOWN_TIMEOUT = 1.0
# How long past its exp a JWT is remembered (plus any resource_clock_lag): a resource whose
# clock lags must still know it, and an expired one is refused as expired, not as unknown.
_RETENTION = 300.0


def _check_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        msg = "LocalIcaServer listens on a loopback IP address only (e.g. 127.0.0.1)"
        raise ValueError(msg)


class LocalIcaServer:
    """A local ICA-compatible token service (aiohttp.web on loopback) for tests.

    Serves, following ICA-API.md: the ICA v2 token API under `ica_base_url`
    (``POST /api/tokens``, ``POST /api/tokens:refresh``), the console v1 token API under
    `base_url` (``POST``/``DELETE /v1/tokens``, ``GET /v1/tokens/details``,
    ``POST /v1/tokens:refresh``), a protected resource (any other path under
    ``/ica/rest/api/`` or ``/v1/``, e.g. `resource_url`) that checks the bearer JWT, and
    ``GET /redirect?to=<url>`` (a 302 to `to`). Endpoint names, as used by `counts`,
    `requests` and `inject`: ``ica.create``, ``ica.refresh``, ``console.create``,
    ``console.details``, ``console.refresh``, ``console.revoke``, ``resource``,
    ``redirect``, and ``other`` (unknown paths: 404, wrong methods: 405).

    JWTs are HS256-signed with a random key of this server (clients cannot verify a
    signature anyway). Their times follow the server clock, `now()`: ``iat = now()``,
    ``nbf = iat + nbf_delay``, ``exp = iat + lifetime``. `lifetime`, `latency`,
    `clock_offset`, `nbf_delay`, `resource_clock_lag`, `session_lifetime` and
    `rotate_ps_tokens` are plain attributes, read on every request, so tests can change them
    while the server runs. Every answer carries a ``Date`` header from the server clock.
    ICA v2 answers are gzip-compressed when the client accepts gzip (as ICA does).

    Authentication follows the specs' security schemes; where they are silent it gives
    the answer a real service would, as written here:

    - ICA v2 ``POST /api/tokens``: ``X-API-Key``, ``Basic base64(username:password)`` or a
      bearer psToken. An API key or a psToken belongs to one tenant: ``tenant`` naming
      another of the user's tenants is 403, one the user is not a member of 400 (also for
      Basic). Basic picks the tenant from ``tenant``, which it needs with several tenants.
      ``POST /api/tokens:refresh``: a bearer JWT that was not minted with an API key.
    - Console v1, all four endpoints (the spec puts each under its Bearer and Basic
      schemes): a bearer JWT or psToken, ``Basic base64(username:password)``, or "Basic
      with apiKey", which the spec names but does not define: here the key as the user-id
      with an empty password, ``Basic base64(<api key>:)`` (what ``curl -u <key>:`` and
      libconsole's ``Configuration(username=<key>, password="")`` send). ``POST /v1/tokens``
      also takes ``X-API-Key`` and the obsolete ``api_key`` query parameter; the other three
      ignore ``X-API-Key``, so a key alone is 401 there. Missing or wrong credentials are a
      401 ``ErrorResponse`` (``GET /v1/tokens/details``: an empty 401, as its spec has no
      schema); on ``POST /v1/tokens:refresh`` a dead bearer psToken gets the spec's "The
      token is no longer able to be refreshed.". The authorization is checked before the
      body. Details for Basic username:password describe the user in the first tenant.
      ``domain`` on ``POST /v1/tokens`` picks any of the user's tenants, whatever the
      credential (the console spec ties no credential to a domain); another is 403.
    - ``returnSessionToken`` is read case-insensitively (``true``, ``True``, ``TRUE``...), as
      the console's model binding does; anything else is 400.

    Its memory is bounded, as `serve` may run for days: a JWT it issued is forgotten 5
    minutes (plus any positive `resource_clock_lag`) past its `exp`, a psToken session once it
    has ended, and it keeps at most `max_tokens` JWTs and `max_tokens` sessions (the newest).
    A forgotten JWT that has not expired, or a forgotten psToken, is refused as unknown (401).
    `counts` and `statuses` still count every request.

    Secrets (API key, password, psTokens, JWTs) never appear in its logs (logger
    ``aioica_auth.testing``, endpoint names and statuses only), reprs or exceptions.

    Example::

        async with LocalIcaServer(lifetime=2.0) as server:
            headers = {"X-API-Key": server.api_key}
            async with session.post(server.ica_base_url + "/api/tokens", headers=headers) as r:
                token = (await r.json(content_type=None))["token"]

    Args:
        host: A loopback IP address to listen on.
        port: The port; 0 picks a free one.
        lifetime: Seconds from `iat` to `exp` of the JWTs it issues.
        latency: Seconds each token endpoint waits before answering (not the resource).
        clock_offset: Seconds the server clock runs ahead of `time.time()` (negative: behind).
        nbf_delay: Seconds from `iat` to `nbf` of the JWTs it issues.
        resource_clock_lag: Seconds the protected resource's clock runs behind the token
            service's when it checks `nbf` and `exp` (no leeway).
        session_lifetime: Seconds a psToken session lasts unless refreshed.
        rotate_ps_tokens: Whether ``/v1/tokens:refresh`` answers with a new psToken (the old
            one then dies) instead of the same one.
        tenants: Tenant names of the test user; the API key belongs to the first.
        max_recorded: How many requests `requests` keeps (the newest); counters count all.
        max_tokens: How many JWTs, and how many psToken sessions, it remembers at most.

    Raises:
        ValueError: For a host that is not a loopback address, no tenants, a negative or
            zero lifetime, or `max_tokens` below 1.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifetime: float = 3600.0,
        latency: float = 0.0,
        clock_offset: float = 0.0,
        nbf_delay: float = 0.0,
        resource_clock_lag: float = 0.0,
        session_lifetime: float = 3600.0,
        rotate_ps_tokens: bool = False,
        tenants: Sequence[str] = ("test-tenant",),
        max_recorded: int = 100_000,
        max_tokens: int = 100_000,
    ) -> None:
        _check_loopback(host)
        if isinstance(tenants, str) or not tenants or len(set(tenants)) != len(tenants):
            msg = "tenants must be a non-empty sequence of distinct names"
            raise ValueError(msg)
        if not (lifetime > 0 and session_lifetime > 0 and latency >= 0):
            msg = "lifetime and session_lifetime must be positive, latency not negative"
            raise ValueError(msg)
        if max_tokens < 1:
            msg = "max_tokens must be at least 1"
            raise ValueError(msg)
        self._host = host
        self._port = port
        self.lifetime = lifetime
        self.latency = latency
        self.clock_offset = clock_offset
        self.nbf_delay = nbf_delay
        self.resource_clock_lag = resource_clock_lag
        self.session_lifetime = session_lifetime
        self.rotate_ps_tokens = rotate_ps_tokens
        self.tenants: tuple[str, ...] = tuple(tenants)
        self.counts: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[tuple[str, int]] = collections.Counter()
        # Bounded: `aioica-auth serve` may run for days under load.
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=max_recorded)
        self._registry = Registry(
            clock=self.now,
            tenants=self.tenants,
            max_tokens=max_tokens,
            retention=lambda: _RETENTION + max(0.0, self.resource_clock_lag),
        )
        self._faults = FaultBook()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._dispatch = Dispatch(
            self, Endpoints(self, self._registry), self._faults, self._closing
        )

    def __repr__(self) -> str:
        where = self.base_url if self._runner is not None else "not started"
        return f"LocalIcaServer({where}, tenants={list(self.tenants)!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening.

        Raises:
            RuntimeError: If the server was started before.
        """
        if self._runner is not None or self._closing.is_set():
            msg = "a LocalIcaServer can be started once"
            raise RuntimeError(msg)
        runner = web.AppRunner(
            self._dispatch.app(),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner
        _log.debug("local ICA server listening on %s", self.base_url)

    async def close(self) -> None:
        """Stop: drop hanging and waiting requests, close every connection. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()
        await self._dispatch.drain(_SHUTDOWN_TIMEOUT)
        _log.debug("local ICA server closed")

    async def __aenter__(self) -> LocalIcaServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- public state ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The console v1 base URL, ``http://127.0.0.1:<port>``.

        Raises:
            RuntimeError: Before `start()`.
        """
        if self._runner is None and not self._closing.is_set():
            msg = "the server is not started"
            raise RuntimeError(msg)
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def ica_base_url(self) -> str:
        """The ICA v2 base URL, `base_url` + ``/ica/rest``."""
        return self.base_url + "/ica/rest"

    @property
    def resource_url(self) -> str:
        """A protected resource, `ica_base_url` + ``/api/projects``."""
        return self.ica_base_url + "/api/projects"

    @property
    def api_key(self) -> str:
        """A valid API key (random per server)."""
        return self._registry.api_key

    @property
    def username(self) -> str:
        """The Basic-auth username of the test user."""
        return self._registry.username

    @property
    def password(self) -> str:
        """The Basic-auth password of the test user (random per server)."""
        return self._registry.password

    def now(self) -> float:
        """The server's clock: `time.time()` + `clock_offset`."""
        return time.time() + self.clock_offset

    def reset_counters(self) -> None:
        """Forget `counts`, `statuses` and `requests` (faults and tokens stay)."""
        self.counts.clear()
        self.statuses.clear()
        self.requests.clear()

    def revoke(self, token: str) -> None:
        """Revoke a psToken (its session ends) or a JWT issued here; others are ignored.

        Args:
            token: The psToken or JWT.
        """
        self._registry.revoke(token)

    def expire_session(self, ps_token: str) -> None:
        """End a psToken session now, as if it had timed out (unknown tokens are ignored).

        Args:
            ps_token: The psToken.
        """
        self._registry.expire_session(ps_token)

    # -- faults ------------------------------------------------------------------------------

    def inject(
        self,
        endpoint: str = "*",
        *,
        kind: str = "status",
        status: int = 503,
        times: int | None = 1,
        retry_after: str | None = None,
    ) -> Fault:
        """Make the next `times` requests of `endpoint` fail (see `Fault` for the kinds).

        Faults apply in the order they were injected, before normal handling; every request
        they hit is still counted and recorded.

        Args:
            endpoint: An endpoint name, or ``"*"`` for any token endpoint (not the resource).
            kind: ``"status"``, ``"drop"``, ``"malformed"``, ``"html"``, ``"empty"`` or
                ``"hang"``.
            status: The status for ``"status"`` and ``"empty"``.
            times: How many requests to hit; None for "until removed".
            retry_after: A ``Retry-After`` header value for ``"status"`` (e.g. with 429).

        Returns:
            The fault; set its `remaining` to 0 or pass it to `remove_fault` to end it.

        Raises:
            ValueError: For an unknown endpoint or kind, a bad status, or `times` below 1.
        """
        if times is not None and times < 1:
            msg = "times must be at least 1, or None for 'until removed'"
            raise ValueError(msg)
        return self._faults.add(Fault(endpoint, kind, status, times, retry_after))

    def outage(self, endpoint: str = "*", status: int = 503) -> Fault:
        """Answer every request of `endpoint` with `status` until the fault is removed.

        Args:
            endpoint: An endpoint name, or ``"*"`` for any token endpoint.
            status: The status to answer.

        Returns:
            The fault (end it with `remove_fault` or `clear_faults`).
        """
        return self.inject(endpoint, status=status, times=None)

    def remove_fault(self, fault: Fault) -> None:
        """Remove one fault (no error when it is already gone).

        Args:
            fault: A fault returned by `inject` or `outage`.
        """
        self._faults.remove(fault)

    def clear_faults(self) -> None:
        """Remove every fault, random faults included."""
        self._faults.clear()

    def random_faults(
        self,
        *,
        endpoints: Sequence[str],
        rate_5xx: float = 0.0,
        rate_429: float = 0.0,
        rate_drop: float = 0.0,
        retry_after: str = "1",
        seed: int | None = None,
    ) -> None:
        """Fail requests of `endpoints` at random, per request (replaces earlier settings).

        Injected faults are applied first. All rates 0 switches random faults off.

        Args:
            endpoints: Endpoint names (``"*"`` for every token endpoint).
            rate_5xx: Probability of a 500, 502, 503 or 504.
            rate_429: Probability of a 429 with ``Retry-After: retry_after``.
            rate_drop: Probability of a dropped connection.
            retry_after: The ``Retry-After`` value of the 429s.
            seed: A seed for a reproducible sequence.

        Raises:
            ValueError: For an unknown endpoint, or rates outside [0, 1] or summing above 1.
        """
        self._faults.set_random(
            endpoints=endpoints,
            rate_5xx=rate_5xx,
            rate_429=rate_429,
            rate_drop=rate_drop,
            retry_after=retry_after,
            seed=seed,
        )
