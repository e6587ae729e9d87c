"""Back within seconds of an outage: while no valid token is held, the backoff between
attempts is capped (`STARVING_RETRY_MAX`), never below a server's `Retry-After`; with a valid
token held, the long backoff stays."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from aioica_auth import TokenUnavailableError
from aioica_auth._errors import RateLimitError, ServerError
from aioica_auth._lifecycle.backoff import Backoff
from aioica_auth._lifecycle.policy import STARVING_RETRY_MAX, Policy
from aioica_auth.testing import make_jwt

from ..fakes import RunningClock, ScriptedSource, manager

pytestmark = pytest.mark.timeout(60)


def test_a_starving_backoff_is_capped_but_honours_retry_after() -> None:
    backoff = Backoff(Policy(), random.Random(7))
    delays = [backoff.failed(ServerError(503), 0.0, None, starving=True) for _ in range(12)]
    assert max(delays) <= STARVING_RETRY_MAX
    assert min(delays[4:]) >= STARVING_RETRY_MAX / 2  # an outage costs a request per 2-4 s
    limited = RateLimitError(429, retry_after=9.0)
    assert backoff.failed(limited, 0.0, None, starving=True) == 9.0


def test_a_long_backoff_set_while_a_token_was_held_is_cut_when_it_expires() -> None:
    backoff = Backoff(Policy(), random.Random(7))
    for _ in range(9):
        delay = backoff.failed(ServerError(503), 100.0, 3600.0)  # a day-long token held
    assert delay >= 30.0
    backoff.starve()
    assert backoff.next_attempt <= 100.0 + STARVING_RETRY_MAX
    backoff.failed(RateLimitError(429, retry_after=20.0), 100.0, 3600.0)
    backoff.starve()
    assert backoff.next_attempt == 120.0  # never sooner than the server asked


@pytest.mark.slow
async def test_a_caller_has_a_token_within_five_seconds_of_the_endpoint_recovering() -> None:
    """The endpoint fails for 10 s while callers keep asking (each with an acquire_timeout of
    2 s). With a first backoff of 4 s, uncapped, the attempts came at about 0, 3 and 9 s, and
    the next one 8-16 s after that; capped, every 2-4 s."""
    clock = RunningClock()
    outage = 10.0
    recovered = time.monotonic() + outage
    sends: list[float] = []

    def answer() -> str:
        sends.append(time.monotonic())
        if time.monotonic() < recovered:
            raise ServerError(503)
        return make_jwt(issued_at=clock.time(), lifetime=3600)

    source = ScriptedSource(clock, [answer])
    async with manager(source, clock, acquire_timeout=2.0, retry_initial=4.0) as m:
        while True:
            try:
                await m.headers()
            except TokenUnavailableError:
                continue
            break
        served = time.monotonic()
    during = [t for t in sends if t < recovered]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    print(f"{len(during)} sends in {outage:g} s of outage; token {served - recovered:.2f} s after")
    assert served - recovered <= 5.0
    assert max(gaps) <= STARVING_RETRY_MAX + 0.5
    assert len(during) <= 12  # a few quick ones, then one per 2-4 s
