"""`Acquire`: a caller's bounded wait for a token, the slow path of `headers()` and `token()`.

The hot path (a fresh lease, no `min_validity`) never comes here. A caller that does:

1. `ready()`: the lease in use, if it will do, without a coroutine (past the refresh point it
   kicks a background renewal and still serves it);
2. `park()`: with no token at all and a renewal in flight (a cold storm), a future of its own
   on that flight, awaited by the manager's own coroutine; `landed()` reads what came;
3. `wait()`: otherwise a loop, bounded by the deadline `deadline()` gives, that waits out an
   `nbf`, joins the renewal (`Step`: what one turn brought), and falls back to the valid lease
   in use when the renewal fails or outlasts the deadline (static stability).

The shortfall rules of a `min_validity` live here too. A need beyond what the lease in use
gives is worth a renewal when a new token would meet it (`Slot.ceiling`: the validity new
tokens give, learnt from a renewal for a need that came back short); a need beyond what any
token gives is worth one renewal per lease, and only once it has aged; past that the freshest
token is served, and a log line says so once per lease.
"""

from __future__ import annotations

import asyncio
import enum
import logging

import attrs

from .._clock import Clock
from .._errors import IcaError
from .._events import Event, fields
from .backoff import Severity, classify, unavailable
from .lease import Lease, Provenance, TokenState
from .policy import Policy
from .renewal import Renewal
from .slot import Slot
from .stats import Counters

__all__ = ["Acquire", "Step", "check_min_validity", "judge_shortfall", "note_short"]

logger = logging.getLogger("aioica_auth")

_CLOSED_WHILE_WAITING = "this TokenManager was closed while waiting for a token"


class Step(enum.Enum):
    """What one turn of a wait on the renewal brought."""

    SERVE = "serve"  # a lease landed (the value)
    AGAIN = "again"  # woken before the renewal landed: judge again
    TIMED_OUT = "timed out"  # the deadline passed with the renewal still under way
    FAILED = "failed"  # the renewal failed (the value: its IcaError)


@attrs.define(eq=False, repr=False)
class Acquire:
    """A caller's bounded wait, over one manager's slot, renewal and counters."""

    _slot: Slot
    _renewal: Renewal
    _clock: Clock
    _policy: Policy
    _counters: Counters

    def ready(self, min_validity: float | None) -> Lease | None:
        """The slow path's first step, without a coroutine: the lease in use if it will do
        (kicking a background renewal past its refresh point), or None to wait."""
        need = check_min_validity(min_validity)
        lease = self._slot.lease
        if lease is None:
            return None
        now = lease.now(self._clock)
        state = lease.state(now)
        if need is None:
            usable = state is TokenState.FRESH or state is TokenState.REFRESH_DUE
        else:
            usable = state.live and not (
                judge_shortfall(lease, now, need, self._slot.ceiling)
                and self._wants_shortfall_renewal()
            )
            if usable:
                note_short(lease, now, need)
        if not usable:
            return None
        if state is not TokenState.FRESH:
            self._renewal.kick()
        return lease

    def deadline(self) -> float:
        """Count a wait, and return when it must end (acquire_timeout from now)."""
        self._counters.waits += 1
        return self._clock.monotonic() + self._policy.acquire_timeout

    def park(self, min_validity: float | None, deadline: float) -> asyncio.Future[None] | None:
        """For a caller with no token and no min_validity: a future of its own on the renewal
        in flight (await it, then `unpark` it and read `landed()`), else None."""
        flight = self._renewal.flight
        if min_validity is not None or self._slot.lease is not None or not flight.running:
            return None
        return flight.park(deadline)

    def unpark(self, waiter: asyncio.Future[None]) -> None:
        """Forget a parked future (woken, timed out or cancelled)."""
        self._renewal.flight.unpark(waiter)

    def landed(self) -> Lease | None:
        """After a parked wait: the renewal's lease if it is the one in use, else None."""
        landed = self._renewal.outcome()
        return landed if landed is not None and landed is self._slot.lease else None

    async def wait(self, min_validity: float | None, deadline: float) -> Lease:
        """Wait for the one renewal (starting it if needed), until `deadline`."""
        slot = self._slot
        first = slot.lease
        while True:
            served, first = self._arrived(slot.lease, first, min_validity)
            if served is not None:
                return served
            if slot.closed:
                raise RuntimeError(_CLOSED_WHILE_WAITING)
            hold = self._nbf_hold(slot.lease, deadline)
            if hold is not None:  # valid soon (its nbf): wait for that, not for a renewal
                await asyncio.sleep(hold)
                if slot.closed:
                    msg = "this TokenManager is closed"
                    raise RuntimeError(msg)
                if (ready := self.ready(min_validity)) is not None:
                    return ready
                continue
            step, value = await self._turn(deadline)
            if (served := self._settle(step, value, min_validity, deadline)) is not None:
                return served

    # -- one turn ---------------------------------------------------------------------------

    def _settle(
        self,
        step: Step,
        value: Lease | IcaError | None,
        min_validity: float | None,
        deadline: float,
    ) -> Lease | None:
        """What a turn's step means for the caller: the lease to serve, the error raised, or
        None to go round again (re-judged at the top)."""
        if step is Step.TIMED_OUT:  # the deadline passed with the renewal still under way
            renewal = self._renewal
            cause, waiting_for = renewal.backoff.last, renewal.source.waiting_for
            lease = self._slot.lease
            return self._fallback(lease, cause, in_flight=True, waiting_for=waiting_for)
        if step is Step.SERVE:
            assert isinstance(value, Lease)
            if value is self._slot.lease and not self._short_share(value, min_validity):
                return self._served(value, min_validity)  # just adopted: the freshest
        elif step is Step.FAILED:
            assert isinstance(value, IcaError)
            return self._failed(value, deadline)
        return None  # AGAIN: woken before the renewal landed

    async def _turn(self, deadline: float) -> tuple[Step, Lease | IcaError | None]:
        """Join the renewal and wait for it, once: what that brought."""
        renewal = self._renewal
        joined = renewal.join(deadline)
        if isinstance(joined, asyncio.Future):
            try:
                await joined  # parked on a future of our own, never on the task
            finally:
                renewal.flight.unpark(joined)
            result = renewal.outcome()
            if result is None:
                return Step.AGAIN, None
        else:
            await asyncio.sleep(0)  # an answer at once: still yield, then act on it
            if joined is None:
                return Step.TIMED_OUT, None
            result = joined
        return (Step.SERVE if isinstance(result, Lease) else Step.FAILED), result

    def _wants_shortfall_renewal(self) -> bool:
        # The one shortfall renewal of this lease: start it, or join the one in flight.
        renewal = self._renewal
        return renewal.flight.running or renewal.backoff.ready(self._clock.monotonic())

    def _failed(self, error: IcaError, deadline: float) -> Lease | None:
        """After a failed renewal: the lease to serve, the error raised, or None to retry."""
        lease = self._slot.lease
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
        """A renewed lease for a waiter: as good as it gets, even if short of min_validity.
        Short of it, it teaches the ceiling, and a need beyond that is not renewed for again
        from it."""
        if min_validity is not None:
            now = lease.now(self._clock)
            if lease.validity(now) < min_validity:
                lease.shortfall_asked = True
                self._slot.ceiling = lease.initial_validity
                note_short(lease, now, min_validity)
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
        error = unavailable(cause, timeout, in_flight=in_flight, waiting_for=waiting_for)
        logger.debug(
            "a caller gets no token: %s",
            error,
            extra=fields(
                Event.TOKEN_EXPIRED_UNAVAILABLE,
                reason=str(error),
                had_token=lease is not None,
                in_flight=in_flight,
            ),
        )
        raise error from cause


def check_min_validity(value: float | None) -> float | None:
    """A caller's `min_validity`, checked: None, or a non-negative number of seconds.

    Raises:
        ValueError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        msg = "min_validity must be a non-negative number of seconds"
        raise ValueError(msg)
    return float(value)


def judge_shortfall(lease: Lease, now: float, need: float, ceiling: float | None) -> bool:
    """Whether a caller that needs `need` seconds of `lease` should wait for a renewal.

    `ceiling` is what new tokens give (the validity of the last token a renewal for a
    `min_validity` brought, short of it), None while unknown. A need at or below it is worth a
    renewal: the new token meets it. A need beyond it no token can meet: it is worth one
    renewal per lease at most, and only when this lease has aged (a new one would be
    meaningfully fresher); otherwise this lease is the best there is.
    """
    validity = lease.validity(now)
    if validity >= need:
        return False
    if ceiling is None or need <= ceiling:
        return True
    if lease.shortfall_asked or validity >= 0.9 * ceiling:
        return False
    lease.shortfall_asked = True
    return True


def note_short(lease: Lease, now: float, need: float) -> None:
    """Say, once per lease, that it is served short of a caller's `min_validity`."""
    if lease.shortfall_logged or lease.validity(now) >= need:
        return
    lease.shortfall_logged = True
    logger.warning(
        "min_validity=%g s cannot be met: serving token %s, valid for %.0f s "
        "(this server's tokens last about %.0f s)",
        need,
        lease.token.fingerprint,
        lease.validity(now),
        lease.initial_validity,
        extra=fields(
            Event.TOKEN_SERVED_SHORT,
            token_id=lease.token.fingerprint,
            min_validity=need,
            validity=lease.validity(now),
            lifetime=lease.initial_validity,
        ),
    )
