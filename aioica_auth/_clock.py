"""Time as the manager reads it: the two clocks, and when one token request went and came back.

`Clock` is injected in tests (a manual clock, a running clock with jumps); `SystemClock` is the
real one. `Exchange` is the timing of one token request on our clocks plus the server's `Date`:
everything `Timing.of` needs to place a token's life on the monotonic clock, whether the token
came over HTTP or from a fleet's store (which builds one honestly from the entry's age).
"""

from __future__ import annotations

import time
from typing import Protocol

import attrs

__all__ = ["Clock", "Exchange", "SystemClock"]


class Clock(Protocol):
    """The two clocks the manager reads; injected in tests."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (asyncio's loop clock)."""

    def time(self) -> float:
        """POSIX wall-clock seconds."""


class SystemClock:
    """The real clocks: `time.monotonic()`, and `time.time()` looked up at each call."""

    monotonic = staticmethod(time.monotonic)

    def time(self) -> float:
        """`time.time()`."""
        return time.time()


@attrs.frozen
class Exchange:
    """When a token request went out and its answer came back.

    Attributes:
        sent_at: `time.monotonic()` just before the request was sent.
        sent_wall: `time.time()` at the same moment.
        received_at: `time.monotonic()` when the answer was read.
        server_offset: The server's `Date` minus our wall clock at receipt, in seconds, or
            None (no usable `Date`).
    """

    sent_at: float
    sent_wall: float
    received_at: float
    server_offset: float | None = None

    @property
    def wall_offset(self) -> float:
        """Wall minus monotonic when the request was sent (a suspend since shows as growth)."""
        return self.sent_wall - self.sent_at
