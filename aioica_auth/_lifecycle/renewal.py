"""`Renewal`: getting the next lease, one attempt at a time, spaced by backoff.

It owns the token source (the rules of one platform and credential), the `SingleFlight` of
renewal attempts and the `Backoff`. Each attempt runs as its own task: it waits out any
backoff, asks the source (bounded by `2 * request_timeout + 1` s: a keep-alive and a mint at
most), plans the token's timing, refuses a token that is no use (no later expiry than the one
in use, or expired on arrival: soft failures, backed off like any transient one), holds a
token whose `nbf` is a little ahead until it is valid, and puts the lease in the manager's
`Slot` before any waiter wakes. It also runs the scheduler (`schedule`: the refresh point, the
keep-alives, a suspend noticed within seconds), psToken keep-alives and the revoke on close.
"""

from __future__ import annotations

import asyncio
import logging
import math

import aiohttp
import attrs

from .._clock import Clock
from .._errors import ApiError, IcaError, TokenUnavailableError, TransportTimeoutError
from .._events import Event, fields
from .._token import Token
from .backoff import Backoff, SoftFailureError
from .flight import Landing, Outcome, SingleFlight
from .flight import outcome_of as _outcome
from .lease import Lease, Provenance, TokenState
from .policy import Policy
from .slot import Slot
from .sources import Issued, TokenSource
from .stats import Counters
from .telemetry import NO_TELEMETRY, Reason, Telemetry, reason_of
from .timing import Timing

__all__ = ["Renewal"]

logger = logging.getLogger("aioica_auth")

_CLOCK_CHECK = 2.0  # seconds: the longest the scheduler sleeps without re-judging the clocks


class Renewal:
    """One renewal in flight at a time, for one manager, and the scheduler that starts them.

    It reads and fills the manager's `Slot` (the lease in use) and bumps its `Counters`; it
    owns the session the manager made for it (`session`, closed by `release`), if any.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source: TokenSource,
        policy: Policy,
        backoff: Backoff,
        clock: Clock,
        slot: Slot,
        counters: Counters,
        *,
        session: aiohttp.ClientSession | None = None,
        telemetry: Telemetry = NO_TELEMETRY,
    ) -> None:
        self.source = source
        self.telemetry = telemetry
        self.policy = policy
        self.backoff = backoff
        self.flight: SingleFlight[Lease] = SingleFlight(
            loop, self._renew, name="aioica_auth-renew", clock=clock.monotonic
        )
        self.scheduler: asyncio.Task[None] | None = None
        self._loop = loop
        self._clock = clock
        self._slot = slot
        self._counters = counters
        self._session = session  # made for this manager: closed by `release`
        self.revoke_target: Lease | None = None  # to revoke as the manager closes
        self._ever = False  # whether a renewal ever landed (`reason_of`)
        self._invalidated = False  # the next attempt renews a token a resource refused
        self.next_keepalive = (
            clock.monotonic() + policy.keepalive_interval if source.keeps_session else math.inf
        )

    def kick(self) -> None:
        """Past the refresh point: make sure a renewal is under way, without waiting for it."""
        if not self.flight.running and self.backoff.ready(self._clock.monotonic()):
            self.flight.start()

    def join(self, deadline: float) -> asyncio.Future[None] | Lease | IcaError | None:
        """Join (or start) the renewal, without a coroutine of its own (cheap for a storm).

        Returns a future to await (then `flight.unpark` it and read `outcome()`), or at once:
        the failure that stands (a remembered one, or one whose retry could only start after
        `deadline`), the outcome of a task that finished as it started, or None when
        `deadline` has passed. A caller that gets an answer at once yields before acting on
        it, so a retry loop around it cannot starve the event loop.
        """
        flight = self.flight
        if not flight.running:
            current = self._slot.lease
            if current is None or not current.state(current.now(self._clock)).live:
                self.backoff.starve()  # a backoff set while a token was held is too long now
            remembered = self.backoff.remembered_at(self._clock.monotonic())
            if remembered is not None:
                return remembered.error
            if self.outwaits(deadline):
                return self.backoff.last or TokenUnavailableError("no attempt could start")
        task = flight.start()
        if task.done():  # an eager task that finished at once
            return _judged(_outcome(task))
        return flight.park(deadline)

    def outcome(self) -> Lease | IcaError | None:
        """The last renewal's lease or failure; None while it is in flight.

        Raises:
            RuntimeError: the renewal was cancelled because the manager closed.
        """
        landing = self.flight.landing
        return None if landing is None else _judged(landing)

    def outwaits(self, deadline: float) -> bool:
        """Whether the next attempt (backoff, `Retry-After`) could only start after `deadline`."""
        return self.backoff.next_attempt >= deadline

    def next_wake(self, lease: Lease | None) -> float:
        """Monotonic time of the next thing to do: a refresh, a retry or a keep-alive."""
        wake = math.inf
        if lease is not None:
            drift = lease.now(self._clock) - self._clock.monotonic()
            due = max(lease.timing.refresh_at, lease.timing.valid_from)  # never before nbf
            wake = max(due - drift, self.backoff.next_attempt)
        return min(wake, self.next_keepalive)

    def schedule(self) -> None:
        """Make sure the scheduler runs (after a lease was adopted: it has a point to wake at)."""
        if self.scheduler is None or self.scheduler.done():
            self.scheduler = self._loop.create_task(self._scheduled(), name="aioica_auth-refresh")
            self.scheduler.add_done_callback(_log_crash)

    async def _scheduled(self) -> None:
        try:
            await self.run()
        except asyncio.CancelledError:
            # Cancelled by aclose(), or by asyncio.run ending the loop: a timer of a dead loop
            # must not leave the hot path serving a token nobody will retire, and a session
            # the manager owns must not outlive its loop.
            self._slot.retire()
            if not self._slot.closed:
                await self.release()
            raise

    async def run(self) -> None:
        """The scheduler: sleep until the next thing to do, in chunks of at most
        `_CLOCK_CHECK` seconds (re-judging the slot after each, for a suspend), then do it;
        returns when there is nothing left to do (no lease, or one without `exp`)."""
        clock, slot = self._clock, self._slot
        while True:
            wake = self.next_wake(slot.lease)
            if math.isinf(wake):
                return
            await asyncio.sleep(min(max(0.0, wake - clock.monotonic()), _CLOCK_CHECK))
            slot.rejudge()
            await self.tick(slot.lease)

    async def release(self) -> None:
        """Close the session made for the manager, if it is still open."""
        session = self._session
        if session is not None and not session.closed:
            await session.close()
            logger.debug(
                "token manager closed its session", extra=fields(Event.HTTP_SESSION_CLOSED)
            )

    async def aclose(self) -> None:
        """Cancel and await the scheduler and the renewal, revoke `revoke_target`, release.

        Safe to cancel: the session is released anyway, and a second call finishes what the
        first left (the revoke)."""
        try:
            running = (self.scheduler, self.flight.cancel())
            tasks = [t for t in running if t is not None and not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            target, self.revoke_target = self.revoke_target, None
            if target is not None:
                await self.revoke(target)
        finally:
            await self.release()

    def leaking(self) -> bool:
        """Whether the session made for the manager or the scheduler is still open."""
        session, scheduler = self._session, self.scheduler
        return (session is not None and not session.closed) or (
            scheduler is not None and not scheduler.done()
        )

    def drop(self, value: str) -> bool:
        """A resource refused the token `value`: never hand it out again, and renew if it was
        the newest (`Slot.drop`). Returns whether it was dropped."""
        dropped = self._slot.drop(value)
        if dropped is None:
            return False
        if self._slot.lease is None and not self._slot.closed:
            self.source.refused(dropped.token)
            self._invalidated = self._invalidated or not self.flight.running
            self.flight.start()
        return True

    async def tick(self, lease: Lease | None) -> None:
        """What the scheduler does when it wakes: renew if due, else keep the session alive."""
        now = self._clock.monotonic()
        if lease is not None and self.backoff.ready(now):
            state = lease.state(lease.now(self._clock))
            if state is not TokenState.FRESH and state is not TokenState.NOT_YET_VALID:
                self.flight.start()
                await self.flight.wait(math.inf)  # failures are logged and backed off
                return
        if now >= self.next_keepalive:
            await self.keep_alive()

    # -- one attempt ------------------------------------------------------------------------

    async def _renew(self) -> Lease:
        clock = self._clock
        delay = self.backoff.next_attempt - clock.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        current = self._slot.lease
        state = None if current is None else current.state(current.now(clock))
        live = None if current is None or state is TokenState.EXPIRED else current.token
        reason = reason_of(state, ever=self._ever)
        if self._invalidated:
            reason, self._invalidated = Reason.INVALIDATED, False
        try:
            with self.telemetry.attempt(reason):
                issued = await self._fetch(live)
            lease = self._lease_of(issued, current)
        except IcaError as exc:
            self._failed(exc, current)
            raise
        hold = lease.timing.valid_from - clock.monotonic()
        if hold > self.policy.nbf_wait_max:
            # Too far ahead to wait for: more likely our reading of the server's clock is
            # off than the token useless. Use it now; a resource's 401 gets handled.
            lease.timing = attrs.evolve(lease.timing, valid_from=clock.monotonic())
        elif hold > 0:
            await asyncio.sleep(hold)  # not valid yet: callers keep the old token meanwhile
        failures = self.backoff.succeeded()
        if failures > 1:
            logger.info(
                "token renewal recovered after %d failures",
                failures,
                extra=fields(Event.TOKEN_RENEWAL_RECOVERED, failures=failures),
            )
        if self.source.keeps_session:
            self.next_keepalive = clock.monotonic() + self.policy.keepalive_interval
        if not self._slot.closed:
            self._slot.adopt(lease)
            self._ever = True
            self.schedule()
        return lease

    async def _fetch(self, live: Token | None) -> Issued:
        # A keep-alive and a mint at most, and a fleet store's lease.
        budget = 2 * self.policy.request_timeout + 1 + self.source.extra_budget
        try:
            async with asyncio.timeout(budget):
                return await self.source.renew(live)
        except TimeoutError as exc:
            if isinstance(exc, IcaError):
                raise
            msg = f"token renewal did not finish within {budget:g} s"
            raise TransportTimeoutError(msg) from None

    def _lease_of(self, issued: Issued, current: Lease | None) -> Lease:
        """The lease for a token a source obtained, or a soft failure if it is no use."""
        token, exchange = issued.token, issued.exchange
        old = current.token.expires_at if current is not None else None
        if old is not None and token.expires_at is not None and token.expires_at <= old:
            msg = "the token endpoint answered with a token that expires no later than before"
            raise SoftFailureError(msg)
        timing = Timing.of(token, exchange, self.policy, rng=self.backoff.rng)
        if timing.expires <= exchange.received_at:
            msg = "the token endpoint answered with a token that had already expired"
            raise SoftFailureError(msg)
        if issued.shared:
            provenance = Provenance.SHARED
        else:
            provenance = Provenance.MINTED if issued.minted else Provenance.REFRESHED
        return Lease(token, timing, provenance, exchange.received_at, exchange.wall_offset)

    def _failed(self, exc: IcaError, current: Lease | None) -> None:
        self._counters.failures += 1
        lifetime = current.timing.lifetime if current is not None else None
        now = self._clock.monotonic()
        starving = current is None or not current.state(current.now(self._clock)).live
        delay = self.backoff.failed(exc, now, lifetime, starving=starving)
        validity = current.validity(now) if current is not None else None
        left = f"{validity:.1f} s" if validity is not None else "no token"
        attempt = self.backoff.failures
        logger.log(
            logging.WARNING if attempt == 1 else logging.DEBUG,
            "token renewal failed (%s); attempt %d, next in %.2f s; current token: %s",
            exc,
            attempt,
            delay,
            left,
            extra=fields(
                Event.TOKEN_RENEWAL_FAILED,
                reason=str(exc),
                attempt=attempt,
                next_in=delay,
                validity=validity,
                status=exc.status if isinstance(exc, ApiError) else None,
            ),
        )

    # -- sessions and revocation ------------------------------------------------------------

    async def keep_alive(self) -> None:
        """Extend the psToken session (console); on failure retry within 30 s."""
        clock = self._clock
        self.next_keepalive = clock.monotonic() + self.policy.keepalive_interval
        try:
            async with asyncio.timeout(self.policy.request_timeout + 1):
                with self.telemetry.attempt(Reason.KEEPALIVE):
                    await self.source.keep_alive()
        except (IcaError, TimeoutError) as exc:
            retry = min(self.policy.keepalive_interval, 30.0)
            self.next_keepalive = clock.monotonic() + retry
            logger.warning(
                "psToken session keep-alive failed (%s); retrying in %.1f s",
                exc,
                retry,
                extra=fields(Event.SESSION_KEEPALIVE_FAILED, reason=str(exc), retry_in=retry),
            )
            if isinstance(exc, TokenUnavailableError):
                self.backoff.remember(exc, clock.monotonic())
        else:
            self._counters.keepalives += 1

    async def revoke(self, lease: Lease) -> None:
        """Revoke the lease's token (console), bounded; a failure is logged, not raised."""
        token = lease.token
        try:
            async with asyncio.timeout(self.policy.request_timeout + 1):
                with self.telemetry.attempt(Reason.CLOSE):
                    await self.source.revoke(token)
        except (IcaError, TimeoutError) as exc:
            logger.warning(
                "revoking token %s on close failed: %s",
                token.fingerprint,
                exc,
                extra=fields(
                    Event.TOKEN_REVOKE_FAILED, token_id=token.fingerprint, reason=str(exc)
                ),
            )
        else:
            logger.info(
                "revoked token %s",
                token.fingerprint,
                extra=fields(Event.TOKEN_REVOKED, token_id=token.fingerprint),
            )


def _judged(outcome: Outcome[Lease]) -> Lease | IcaError:
    """A landed renewal as the waiters see it."""
    if outcome.landing is Landing.DONE:
        assert outcome.value is not None
        return outcome.value
    if outcome.landing is Landing.CANCELLED:
        msg = "this TokenManager was closed while waiting for a token"
        raise RuntimeError(msg)
    error = outcome.error
    if isinstance(error, IcaError):
        return error
    assert error is not None
    raise error  # not ours: a bug, let it be seen


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error(
            "token refresh scheduler stopped: %r",
            exc,
            exc_info=exc,
            extra=fields(Event.MANAGER_SCHEDULER_STOPPED, error=type(exc).__name__),
        )
