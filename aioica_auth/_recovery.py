"""The one implementation of the bearer rules, shared by the aiohttp and httpx adapters.

Sans-IO: `rules()` is a plain generator that decides, and the adapter does the I/O. It
yields steps and is sent back what each step produced:

    ACQUIRE       the adapter awaits `source.lease()`      -> sends back the Lease
    Send(lease)   the adapter sends with lease's header    -> sends back the status code
    DISCARD       the adapter reads and releases its last answer (before any wait)
    Sleep(s)      the adapter awaits `asyncio.sleep(s)`

`Exchange` runs ACQUIRE, DISCARD and Sleep itself, so an adapter sees only "send with this
lease" (`first()`, then `answer(status)` until None: the last answer goes to the caller).

Who gets the bearer (`Recovery.applies`): the scheme, host and port of the base URL only,
and never a request that already carries an `Authorization` of its own.

On a 401 for a token the manager handed out, in this order, each step bounded:

1. Stale: the token sent is no longer the one in use, or expired while the request waited
   (in a connection pool, say): resent with the current one, at most 3 times.
2. Young: a token that no resource had accepted when the request went out, issued less
   than a few seconds ago (in the server's time), may only be early for a resource whose
   clock lags the token service (ICA's `nbf` skew). If another request got it accepted
   meanwhile (its answer may have come first), the request is resent with it at once.
   Otherwise the token it replaced, if a resource accepted it and it is still valid, is
   tried first; then the young token again after short, growing waits (or the token that
   superseded it meanwhile, if young or accepted): at most `YOUNG_SENDS` sends within
   `YOUNG_WINDOW` seconds (and `nbf_wait_max`). A token accepted meanwhile is resent at
   once, and nothing is invalidated; refused again, it was revoked (step 3).
3. Refused: exactly that token is invalidated (not a newer one another task already got), a
   new one is awaited, and the request is replayed. A refusal of the replay, whose token is
   young, gets the young retries of step 2, unless earlier young retries ran out while
   their token stayed in use and no resource accepted it (then they cannot help): so a
   revoked token's successor is not refused to the caller by a resource whose clock lags.
   When the replay's token is refused although a resource accepted it (revoked too,
   meanwhile), one more replay, no more (`REFUSED_REPLAYS`). The last answer goes to the caller.

So a resource that refuses every token answers the caller within a few seconds, and one
whose clock lags costs no re-mint. A body that cannot be replayed gets the 401 back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator

import attrs

from ._lease import Lease, LeaseSource, TokenState

__all__ = [
    "ACQUIRE",
    "DISCARD",
    "Exchange",
    "Recovery",
    "Send",
    "Sleep",
    "origin",
    "rules",
]

logger = logging.getLogger("aioica_auth")

STALE_REPLAYS = 3  # resends of a request that went out with a superseded or expired token
REFUSED_REPLAYS = 2  # invalidate-and-replays; the second only when the first's token is revoked
YOUNG_WINDOW = 3.0  # seconds after issue in which a refused token may only be early
YOUNG_SENDS = 4  # sends of a young token after its first refusal, at most
FIRST_YOUNG_RETRY = 0.1  # seconds; doubled on each further refusal of a young token

_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str | None, int | None]


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


Step = _Acquire | _Discard | Send | Sleep
Rules = Generator[Step, "Lease | int | None", None]


@attrs.frozen
class _Answer:
    """What a resource answered to one send: its status, the lease sent with, and whether a
    resource had accepted that token before the send went out (`proven`). A 401 to an
    unproven token may be early (a resource whose clock lags); to a proven one, it is a
    refusal."""

    status: int
    lease: Lease
    proven: bool


_Sent = Generator[Step, "Lease | int | None", _Answer]


def rules(source: LeaseSource, replayable: Callable[[], bool]) -> Rules:
    """The steps of one request for the manager's origin (see the module docstring)."""
    answer = yield from _send((yield from _acquire()))
    if answer.status != 401:
        return
    answer = yield from _stale_resends(source, answer, replayable)
    if answer.status != 401 or not replayable():
        return
    settled = False  # young retries ran out with the token still in use: they cannot help
    if _early(source, answer):
        answer = yield from _young_retries(source, answer, replayable)
        if answer.status != 401 or not replayable():
            return
        settled = _settled(source, answer.lease)
    yield from _replays(source, answer.lease, replayable, settled=settled)


def _stale_resends(source: LeaseSource, answer: _Answer, replayable: Callable[[], bool]) -> _Sent:
    """Resend with the current token while the one sent was superseded or has expired."""
    for _ in range(STALE_REPLAYS):
        if not _stale(source, answer.lease) or not replayable():
            break
        yield DISCARD
        answer = yield from _send((yield from _acquire()))
        if answer.status != 401:
            break
    return answer


def _replays(
    source: LeaseSource, lease: Lease, replayable: Callable[[], bool], *, settled: bool
) -> Generator[Step, Lease | int | None, None]:
    """Invalidate exactly the refused token and replay with a new one (see step 3)."""
    for _ in range(REFUSED_REPLAYS):
        yield DISCARD
        source.invalidate(lease.token)
        answer = yield from _send((yield from _acquire()))
        if answer.status != 401 or not replayable():
            return
        if not settled and _early(source, answer):
            # A revoked token's successor, early for a resource whose clock lags.
            answer = yield from _young_retries(source, answer, replayable)
            if answer.status != 401 or not replayable():
                return
            settled = _settled(source, answer.lease)
        lease = answer.lease
        if not lease.accepted:
            return  # refused though no resource ever took it: another replay cannot help


def _acquire() -> Generator[Step, Lease | int | None, Lease]:
    lease = yield ACQUIRE
    assert isinstance(lease, Lease)
    return lease


def _send(lease: Lease) -> _Sent:
    proven = lease.accepted
    status = yield Send(lease)
    assert isinstance(status, int)
    if status != 401:
        lease.accepted = True
    return _Answer(status, lease, proven)


def _stale(source: LeaseSource, lease: Lease) -> bool:
    """Sent with a token that is no longer the one in use, or that has expired since."""
    if source.current() is not lease:
        return True
    return lease.state(lease.now(source.clock)) is TokenState.EXPIRED


def _window(source: LeaseSource) -> float:
    return min(YOUNG_WINDOW, source.policy.nbf_wait_max)


def _young(source: LeaseSource, lease: Lease) -> bool:
    """Not yet accepted by any resource, and issued only seconds ago (server time)."""
    return not lease.accepted and lease.age(lease.now(source.clock)) < _window(source)


def _early(source: LeaseSource, answer: _Answer) -> bool:
    """A 401 that may only be early: its token was issued seconds ago, and no resource had
    accepted it when the request went out (one may have since)."""
    lease = answer.lease
    return not answer.proven and lease.age(lease.now(source.clock)) < _window(source)


def _young_retries(source: LeaseSource, answer: _Answer, replayable: Callable[[], bool]) -> _Sent:
    """The token it replaced first, then the young token after short, growing waits; a
    young or accepted token that supersedes it meanwhile is followed, and one that a
    resource accepted meanwhile is resent at once. Returns the last answer."""
    lease = answer.lease
    prior = source.prior()
    if not lease.accepted and prior is not None and prior.state(prior.now(source.clock)).live:
        yield DISCARD
        tried = yield from _send(prior)
        if tried.status != 401 or not replayable():
            return tried
    delay = FIRST_YOUNG_RETRY
    for _ in range(YOUNG_SENDS):
        lease = _follow(source, lease)
        if source.current() is not lease:
            break
        if lease.accepted:
            # Another request got it through since this one's refusal, which was early: resent
            # at once (refused now, it was revoked: the replays' case).
            yield DISCARD
            answer = yield from _send(lease)
            break
        if not _young(source, lease):
            break
        yield DISCARD
        yield Sleep(delay)
        delay *= 2
        answer = yield from _send(lease)
        if answer.status != 401:
            logger.info(
                "token %s accepted %.2f s after issue (resource clock lag)",
                lease.token.fingerprint,
                lease.age(lease.now(source.clock)),
            )
            break
        if not replayable():
            break
    return answer


def _follow(source: LeaseSource, lease: Lease) -> Lease:
    """The current lease if it superseded `lease` and is young or accepted, else `lease`."""
    current = source.current()
    if current is None or current is lease:
        return lease
    return current if current.accepted or _young(source, current) else lease


def _settled(source: LeaseSource, lease: Lease) -> bool:
    """Young retries ran out with their token still in use and never accepted: more young
    retries cannot help."""
    return source.current() is lease and not lease.accepted


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
