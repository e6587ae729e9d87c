"""`Probe`: the one probe of a young token that a resource refused.

Where no good token exists to bridge with (the first token, a revocation: see `maturity`), a
401 to a young token is probed: the `Probe` is shared by every request refused with that token
(`Lease.probe`); one request resends it after short, growing waits, the others await its
outcome (`ProbeState`). Its own module, so that `lease` (which holds one) and `maturity`
(which judges leases) do not import each other.
"""

from __future__ import annotations

import asyncio
import enum

__all__ = ["Probe", "ProbeState"]


class ProbeState(enum.Enum):
    """Where the probe of a young token stands."""

    RUNNING = "running"  # one request is resending it after short waits
    ACCEPTED = "accepted"  # a resource took it: the others resend once
    REFUSED = "refused"  # refused to the end: the others get their 401 back
    ABANDONED = "abandoned"  # its request went away first: the others get their 401 back


class Probe:
    """The one probe of a young token that a resource refused, shared by every request that
    got a 401 for it (`Lease.probe`)."""

    __slots__ = ("_done", "state")

    def __init__(self) -> None:
        self.state: ProbeState = ProbeState.RUNNING
        self._done = asyncio.Event()

    def settle(self, state: ProbeState) -> None:
        """End the probe (once) and wake the requests awaiting it."""
        if self.state is ProbeState.RUNNING:
            self.state = state
            self._done.set()

    async def settled(self) -> None:
        """Return once the probe has ended (the caller bounds the wait)."""
        await self._done.wait()
