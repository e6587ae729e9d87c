"""The engine's assembly: one manager's renewal and callers' bounded waits, over its slot.

`TokenManager` calls `telemetry_for` and `assemble` once, on first use in the running loop,
with the parts it keeps (the slot, the counters, the clock) and the source its spec made over
the session.
"""

from __future__ import annotations

import asyncio
import random
import sys

import aiohttp

from .._clock import Clock
from .acquire import Acquire
from .backoff import Backoff
from .lease import Lease, Provenance
from .policy import Policy
from .renewal import Renewal
from .slot import Slot
from .sources import TokenSource
from .stats import Counters
from .telemetry import NO_TELEMETRY, Telemetry
from .timing import Timing

__all__ = ["assemble", "telemetry_for"]


def assemble(
    loop: asyncio.AbstractEventLoop,
    source: TokenSource,
    policy: Policy,
    rng: random.Random,
    clock: Clock,
    slot: Slot,
    counters: Counters,
    *,
    session: aiohttp.ClientSession | None,
    telemetry: Telemetry,
) -> tuple[Renewal, Acquire]:
    """The renewal (owning `session`, if given: one the manager made) and the bounded wait
    over `slot`; a token the source was given (a `Jwt`) is adopted at once and scheduled."""
    backoff = Backoff(policy, rng)
    renewal = Renewal(
        loop, source, policy, backoff, clock, slot, counters, session=session, telemetry=telemetry
    )
    telemetry.bind(slot, backoff, counters, clock)
    given = source.initial()
    if given is not None:
        now = clock.monotonic(), clock.time()
        timing = Timing.of(given, None, policy, rng=rng, now=now)
        slot.adopt(Lease(given, timing, Provenance.GIVEN, now[0], now[1] - now[0]))
        renewal.schedule()
    return renewal, Acquire(slot, renewal, clock, policy, counters)


def telemetry_for(platform: str, name: str) -> Telemetry:
    """OpenTelemetry for a manager (`platform` `ica` or `console`, named `name`), or the
    base that records nothing.

    Nothing is recorded unless the application has imported OpenTelemetry by the manager's
    first call (as configuring its SDK does): the manager never imports it itself (0.2 s of
    a command line's start), and without an SDK every instrument would be a no-op anyway.
    """
    if sys.modules.get("opentelemetry.metrics") is None:
        return NO_TELEMETRY
    from .otel import OtelTelemetry

    return OtelTelemetry(platform, name)
