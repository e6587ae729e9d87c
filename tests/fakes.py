"""Fakes for the unit tests of the manager's parts: clocks, and a scripted token source."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable

import yarl

from aioica_auth import Policy, Token, TokenManager
from aioica_auth._clock import Exchange
from aioica_auth._lifecycle.sources import Issued
from aioica_auth.testing import make_jwt


class ManualClock:
    """A `Clock` that moves only when told: `advance` moves both readings, `suspend` moves the
    wall clock only (`time.monotonic()` stops while the machine sleeps)."""

    def __init__(self, mono: float = 1_000.0, wall: float = 1_700_000_000.0) -> None:
        self.mono = mono
        self.wall = wall

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def suspend(self, seconds: float) -> None:
        self.wall += seconds


class RunningClock:
    """A `Clock` on real time whose wall clock can be jumped, as a suspend does."""

    def __init__(self) -> None:
        self.jump = 0.0

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time() + self.jump


class FlightClock:
    """A clock function for `SingleFlight` that moves only when told and counts its reads."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


Step = str | BaseException | Callable[[], str]


class ScriptedSource:
    """A `TokenSource` that answers each renewal with the next step of a script.

    A step is a JWT, a callable making one when asked, or an exception to raise; the last step
    repeats. Replies are stamped with the given clock, so the manager's timing is exact.
    """

    keeps_session = False
    extra_budget = 0.0
    waiting_for = None

    def __init__(
        self, clock: ManualClock | RunningClock, script: Iterable[Step], initial: str | None = None
    ) -> None:
        self.clock = clock
        self.script = list(script)
        self.given = Token.from_jwt(initial) if initial is not None else None
        self.calls: list[Token | None] = []

    def initial(self) -> Token | None:
        return self.given

    async def renew(self, current: Token | None) -> Issued:
        self.calls.append(current)
        await asyncio.sleep(0)  # a real source awaits its request
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        value = step if isinstance(step, str) else step()
        mono, wall = self.clock.monotonic(), self.clock.time()
        reply = Exchange(mono, wall, mono, None)
        return Issued(Token.from_jwt(value), reply, minted=True)

    async def keep_alive(self) -> None:
        return None

    async def revoke(self, token: Token) -> None:
        return None

    def refused(self, token: Token) -> None:
        return None


def manager(
    source: ScriptedSource, clock: ManualClock | RunningClock, **policy: float
) -> TokenManager:
    """A manager over `source`, judged by `clock`, with a seeded random source."""
    return TokenManager._build(
        lambda session, rules: source,
        base_url=yarl.URL("https://example.org"),
        clock=clock,
        rng=random.Random(1),
        policy=Policy(**policy),
    )


def must_wait_token(clock: ManualClock) -> str:
    """A 1 h JWT with 45 s left: 15 s after the 30 s leeway, inside the 30 s hard window, so a
    caller waits for the renewal instead of getting it from the hot path."""
    return make_jwt(issued_at=clock.wall - 3555, lifetime=3600)
