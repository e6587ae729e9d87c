"""The one implementation of the bearer rules, shared by the aiohttp and httpx adapters.

Sans-IO: `rules()` is a plain generator that decides, and the adapter does the I/O. It
yields steps and is sent back what each step produced:

    ACQUIRE       the adapter awaits `source.lease()`      -> sends back the Lease
    Send(lease)   the adapter sends with lease's header    -> sends back the status code
    DISCARD       the adapter reads and releases its last answer (before any wait)
    Sleep(s)      the adapter awaits `asyncio.sleep(s)`
    Await(probe)  the adapter awaits the probe's outcome, at most `PROBE_AWAIT` seconds

`Exchange` runs all but Send itself, so an adapter sees only "send with this lease"
(`first()`, then `answer(status)` until None: the last answer goes to the caller).

Who gets the bearer (`Recovery.applies`): the scheme, host and port of the base URL only,
and never a request that already carries an `Authorization` of its own.

A renewed token is handed out only once it has matured while the one it replaced is still
good (`maturity`), so a resource whose clock lags sees no young token in steady state. A 401
for a token the manager handed out is judged once (`judge`, a `Verdict`):

- STALE: the token sent has expired, or (never accepted) is no longer the one handed out:
  resend with the one handed out now (at most 5 times: a stale resend costs no mint, and
  under load a request can wait in a connection pool past a short token's life more than
  once; `MAX_SENDS` bounds it all).
- EARLY: young (no resource had accepted it when the request went out, issued less than
  `max(3 s, maturity)` ago in the server's time): it may only be early. If the token it
  replaced is still good, that one is handed out longer and the request resent with it.
  Else the token's one shared probe: the first such request resends it after waits of
  0.25, 0.5 and 1 s (4 sends at most, its first included); the others await the outcome
  (at most `PROBE_AWAIT` s) and resend once if it was accepted, else get their 401 back.
  A young token is never re-minted: a new one would be younger still.
- REVOKED: a resource had accepted it and it has not expired: exactly that token is
  invalidated at once (never handed out again, not even while a newer one matures), and the
  request replayed with the next one.
- REFUSED: never accepted and no longer young: as REVOKED, but a refusal that would re-mint
  does so at most once per `error_memory` seconds per manager; else the 401 goes back.

At most 2 invalidations and 6 sends per request; the last answer goes to the caller. So a
resource that refuses every token answers a request within about 2 s after at most 4 sends,
and costs at most one mint per `error_memory` seconds. A body that cannot be replayed gets
the 401 back.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import weakref
from collections.abc import Awaitable, Callable, Generator
from typing import Protocol

import attrs

from .._clock import Clock
from .._events import Event, fields
from .._lifecycle.lease import Lease, TokenState
from .._lifecycle.policy import Policy
from .._lifecycle.probe import Probe, ProbeState
from .._token import Token

__all__ = [
    "ACQUIRE",
    "DISCARD",
    "Await",
    "Exchange",
    "LeaseSource",
    "Recovery",
    "Send",
    "Sleep",
    "Verdict",
    "judge",
    "origin",
    "rules",
]

logger = logging.getLogger("aioica_auth")

STALE_REPLAYS = 5  # resends of a request that went out with a token no longer handed out
REFUSED_REPLAYS = 2  # invalidate-and-replays of one request
MAX_SENDS = 6  # sends of one request, in all
PROBE_SENDS = 4  # sends of a request that probes a young token, its first included
PROBE_WAITS = (0.25, 0.5, 1.0)  # seconds before each resend of a probe
PROBE_AWAIT = 5.0  # seconds a request awaits another's probe, at most
YOUNG_WINDOW = 3.0  # seconds after issue in which a refused token may only be early (at least)

_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str | None, int | None]


class LeaseSource(Protocol):
    """What the adapters need of a token manager: a view of it that the manager builds."""

    @property
    def clock(self) -> Clock:
        """The manager's clock."""

    @property
    def policy(self) -> Policy:
        """The manager's policy."""

    async def lease(self) -> Lease:
        """A usable lease, waiting for a renewal if needed (`TokenUnavailableError`)."""

    def current(self) -> Lease | None:
        """The newest lease, without waiting."""

    def served(self) -> Lease | None:
        """The lease handed out now: the newest, or the one it replaced while it matures."""

    def defer(self, lease: Lease) -> bool:
        """`lease` was refused as young: serve the one it replaced longer, if still good."""

    def is_ours(self, authorization: str) -> bool:
        """Whether an `Authorization` value is one the manager handed out lately."""

    def invalidate(self, token: Token | str) -> bool:
        """Drop exactly `token` if it is still handed out (renewing when it is the newest)."""


def origin(scheme: str, host: str | None, port: int | None) -> Origin:
    """Scheme, lower-case host and port (the scheme's default when none is given)."""
    scheme = scheme.lower()
    return (scheme, host.lower() if host else None, port or _DEFAULT_PORTS.get(scheme))


class _Acquire:
    def __repr__(self) -> str:
        return "ACQUIRE"


class _Discard:
    def __repr__(self) -> str:
        return "DISCARD"


ACQUIRE = _Acquire()
DISCARD = _Discard()


@attrs.frozen
class Send:
    """Send the request with `lease.authorization`; answer with the status code."""

    lease: Lease


@attrs.frozen
class Sleep:
    """Wait this many seconds."""

    seconds: float


@attrs.frozen
class Await:
    """Wait for the probe's outcome, at most `PROBE_AWAIT` seconds."""

    probe: Probe


Step = _Acquire | _Discard | Send | Sleep | Await
Rules = Generator[Step, "Lease | int | None", None]


class Verdict(enum.Enum):
    """What a 401 to a token the manager handed out means (see the module docstring)."""

    STALE = "stale"
    EARLY = "early"
    REVOKED = "revoked"
    REFUSED = "refused"


@attrs.frozen
class _Answer:
    """What a resource answered to one send: its status, the lease sent with, and whether a
    resource had accepted that token before the send went out (`proven`)."""

    status: int
    lease: Lease
    proven: bool


def judge(source: LeaseSource, answer: _Answer) -> Verdict:
    """The one judgement of a 401 (see the module docstring)."""
    lease = answer.lease
    now = lease.now(source.clock)
    if lease.state(now) is TokenState.EXPIRED:
        return Verdict.STALE
    if answer.proven:
        # Accepted, unexpired, now refused: revoked, even if a newer token is handed out now
        # (it may be the one bridged with while the newer matures: it must go).
        return Verdict.REVOKED
    if source.served() is not lease:
        return Verdict.STALE
    return Verdict.EARLY if _young(source, lease, now) else Verdict.REFUSED


def _young(source: LeaseSource, lease: Lease, now: float) -> bool:
    window = min(YOUNG_WINDOW, source.policy.nbf_wait_max)
    return lease.age(now) < max(window, lease.timing.matures - lease.timing.issued)


class _Memory:
    """When a 401 last cost a mint, per manager: at most one per `error_memory` seconds."""

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


_MEMORIES: weakref.WeakKeyDictionary[LeaseSource, _Memory] = weakref.WeakKeyDictionary()


def _memory(source: LeaseSource) -> _Memory:
    memory = _MEMORIES.get(source)
    if memory is None:
        memory = _MEMORIES[source] = _Memory()
    return memory


_Sent = Generator[Step, "Lease | int | None", _Answer]


def rules(source: LeaseSource, replayable: Callable[[], bool]) -> Rules:
    """The steps of one request for the manager's origin (see the module docstring)."""
    return _Flow(source, replayable).run()


class _Flow:
    """One request's way through the rules, with its counters."""

    def __init__(self, source: LeaseSource, replayable: Callable[[], bool]) -> None:
        self.source = source
        self.replayable = replayable
        self.sends = 0
        self.stale = 0  # resends after a STALE 401
        self.replays = 0  # invalidate-and-replays after a REVOKED or REFUSED one

    def run(self) -> Rules:
        answer = yield from self._send((yield from self._acquire()))
        if (why := (yield from self._recover(answer))) is not None:
            ev = fields(Event.TOKEN_REFUSED_RETURNED, reason=why, sends=self.sends)
            logger.debug("a 401 goes back to the caller: %s (%d sends)", why, self.sends, extra=ev)

    def _recover(self, answer: _Answer) -> Generator[Step, Lease | int | None, str | None]:
        """Follow the rules while the answer is a 401; why the last one goes back, or None."""
        early: Lease | None = None  # the token last met young: one probe or wait per token
        while answer.status == 401:
            if (why := self._spent()) is not None:
                return why
            verdict = judge(self.source, answer)
            if verdict is Verdict.EARLY and self.source.defer(answer.lease):
                verdict = Verdict.STALE  # the token it replaced stands in while it matures
            if verdict is Verdict.EARLY:
                if early is answer.lease:
                    return "its young token was refused again"
                early = answer.lease
                after = yield from self._early(answer)
                if after is not None:
                    answer = after
                    continue
                if not early.accepted:
                    return "its young token was refused to the end of its probe"
                # Another request got it accepted meanwhile, and it is refused now: revoked.
                verdict = Verdict.REVOKED
            if (why := self._resend(verdict, answer.lease)) is not None:
                return why
            yield DISCARD
            answer = yield from self._send((yield from self._acquire()))
        return None

    def _spent(self) -> str | None:
        """Why no send is left to this request, or None."""
        if not self.replayable():
            return "its body cannot be sent again"
        if self.sends >= MAX_SENDS:
            return f"{MAX_SENDS} sends"
        return None

    def _resend(self, verdict: Verdict, lease: Lease) -> str | None:
        """Count a resend for a STALE, REVOKED or REFUSED 401 (invalidating the refused
        token); why there is none left, or None."""
        if verdict is Verdict.STALE:
            if self.stale == STALE_REPLAYS:
                return f"{STALE_REPLAYS} resends with a newer token"
            self.stale += 1
            return None
        if self.replays == REFUSED_REPLAYS:
            return f"{REFUSED_REPLAYS} tokens refused"
        if not self._may_invalidate(verdict, lease):
            return "a refused token was re-minted less than error_memory ago"
        self.replays += 1
        self.source.invalidate(lease.token)
        return None

    def _may_invalidate(self, verdict: Verdict, lease: Lease) -> bool:
        """A revocation always; a refusal that would re-mint once per `error_memory` s."""
        if lease is not self.source.current():
            return True  # the token a new one replaced: dropping it mints nothing
        memory, now = _memory(self.source), self.source.clock.monotonic()
        recent = memory.at is not None and now - memory.at < self.source.policy.error_memory
        if verdict is Verdict.REFUSED and recent:
            return False
        memory.at = now
        return True

    def _early(self, answer: _Answer) -> Generator[Step, Lease | int | None, _Answer | None]:
        """A young token's 401: resend once if accepted meanwhile, else its shared probe (run
        it, or await it). Returns the answer to go on with, or None: give the caller this 401."""
        lease = answer.lease
        probe = lease.probe
        if probe is None and not lease.accepted:
            if self.sends >= PROBE_SENDS:
                return None  # no sends left to probe with: leave it to another request
            return (yield from self._probe(lease))
        if probe is not None and probe.state is ProbeState.RUNNING:
            yield DISCARD
            yield Await(probe)
        if not lease.accepted:
            return None  # refused to the end of the probe: a new token would be younger still
        yield DISCARD
        if lease.refused or not lease.state(lease.now(self.source.clock)).live:
            lease = yield from self._acquire()
        return (yield from self._send(lease))  # the token a resource accepted, once

    def _probe(self, lease: Lease) -> Generator[Step, Lease | int | None, _Answer | None]:
        """Resend `lease` after short, growing waits, for every request refused with it."""
        probe = lease.probe = Probe()
        outcome = ProbeState.ABANDONED
        answer: _Answer | None = None
        try:
            for wait in PROBE_WAITS:
                if self.sends >= PROBE_SENDS or self.source.served() is not lease:
                    break
                if not _young(self.source, lease, lease.now(self.source.clock)):
                    break
                yield DISCARD
                if not lease.accepted:
                    yield Sleep(wait)
                answer = yield from self._send(lease)
                if answer.status != 401:
                    age, token = lease.age(lease.now(self.source.clock)), lease.token.fingerprint
                    ev = fields(Event.TOKEN_ACCEPTED_LATE, token_id=token, age=age)
                    msg = "token %s accepted %.2f s after issue (resource clock lag)"
                    logger.info(msg, token, age, extra=ev)
                    break
                if not self.replayable():
                    break
            outcome = ProbeState.ACCEPTED if lease.accepted else ProbeState.REFUSED
        finally:
            probe.settle(outcome)
            if outcome is ProbeState.ABANDONED:
                lease.probe = None  # its request went away: another may probe
        if answer is None or (answer.status == 401 and self.source.served() is lease):
            return None
        return answer

    @staticmethod
    def _acquire() -> Generator[Step, Lease | int | None, Lease]:
        lease = yield ACQUIRE
        assert isinstance(lease, Lease)
        return lease

    def _send(self, lease: Lease) -> _Sent:
        proven = lease.accepted
        self.sends += 1
        status = yield Send(lease)
        assert isinstance(status, int)
        if status != 401:
            lease.accepted = True
        return _Answer(status, lease, proven)


class Exchange:
    """Runs `rules()` for one request, doing the waits; the adapter only sends."""

    def __init__(
        self,
        source: LeaseSource,
        replayable: Callable[[], bool],
        discard: Callable[[], Awaitable[None]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._source = source
        self._rules = rules(source, replayable)
        self._discard = discard
        self._sleep = sleep

    async def first(self) -> Lease:
        """The lease to send the request with first."""
        lease = await self._advance(None)
        assert lease is not None
        return lease

    async def answer(self, status: int) -> Lease | None:
        """The lease to resend with after an answer of `status`; None: give the caller it."""
        return await self._advance(status)

    def close(self) -> None:
        """End the rules early (the request failed or was cancelled): a probe it ran is
        settled, so the requests awaiting it go on."""
        self._rules.close()

    async def _advance(self, value: Lease | int | None) -> Lease | None:
        while True:
            try:
                step = self._rules.send(value)
            except StopIteration:
                return None
            if isinstance(step, Send):
                return step.lease
            if isinstance(step, Sleep):
                await self._sleep(step.seconds)
                value = None
            elif isinstance(step, Await):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PROBE_AWAIT):
                        await step.probe.settled()
                value = None
            elif step is DISCARD:
                await self._discard()
                value = None
            else:
                value = await self._source.lease()


class Recovery:
    """The rules for one manager and origin; each adapter holds one."""

    def __init__(self, source: LeaseSource, base: Origin) -> None:
        self._source = source
        self.origin = base

    def applies(self, target: Origin, authorization: str | None) -> bool:
        """Whether a request to `target` carrying `authorization` gets the bearer."""
        if target != self.origin:
            return False
        return authorization is None or self._source.is_ours(authorization)

    def exchange(
        self, replayable: Callable[[], bool], discard: Callable[[], Awaitable[None]]
    ) -> Exchange:
        """The rules for one request."""
        return Exchange(self._source, replayable, discard)
