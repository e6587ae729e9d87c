"""A new token matures before use: the token it replaced is served meanwhile.

ICA's services refuse a JWT for a while after it is minted (their clocks lag the token
service's, and the token carries `nbf`). So after a renewal the manager keeps handing out the
token it replaced until the new one is `Timing.matures` old (`min(maturity, L/20)`), while
that one stays good: live, outside its hard window, never refused. `Bridge.serve` is the one
judgement of which token is handed out (`Phase`). A new token that a resource refuses as young
while the bridge is still good is held back longer (`Bridge.defer`: its age doubled, at least
`DEFER_MIN` s more), so a resource that lags more than the default never sees it young twice in
a row.

Where no good token exists to bridge with (the first token, a revocation), a 401 to a young
token is probed instead (`probe.Probe`).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._clock import Clock
    from .lease import Lease

__all__ = ["DEFER_MIN", "Bridge", "Phase"]

DEFER_MIN = 0.25  # seconds: the least a deferral holds a young token back


class Phase(enum.Enum):
    """Which token the manager hands out."""

    MATURE = "mature"  # the newest: it has matured, or nothing good can stand in for it
    BRIDGING = "bridging"  # the one it replaced, until the newest matures


class Bridge:
    """The token a renewal replaced, served until the new one matures (one per manager)."""

    __slots__ = ("prior",)

    def __init__(self) -> None:
        self.prior: Lease | None = None

    def replaced(self, old: Lease | None) -> None:
        """A renewal replaced `old` (None: it was invalidated, or there was none)."""
        self.prior = None if old is None or old.refused else old

    def phase(self, lease: Lease, clock: Clock) -> Phase:
        """The one judgement: hand out `lease` (the newest), or the one it replaced."""
        prior = self.prior
        if prior is None or prior.refused or lease.now(clock) >= lease.matures_at:
            return Phase.MATURE
        now = prior.now(clock)  # each lease by its own reading: a suspend may lie between
        good = prior.state(now).live and now < prior.timing.hard_at
        return Phase.BRIDGING if good else Phase.MATURE

    def serve(self, lease: Lease, clock: Clock) -> tuple[Lease, float]:
        """The lease to hand out now, and in how many seconds to judge again."""
        prior = self.prior
        now = lease.now(clock)
        if prior is not None and self.phase(lease, clock) is Phase.BRIDGING:
            return prior, min(lease.matures_at - now, prior.timing.hard_at - prior.now(clock))
        return lease, lease.timing.refresh_at - now

    def defer(self, lease: Lease, clock: Clock) -> bool:
        """`lease`, the newest, was refused as young: hold it back longer, if the token it
        replaced can stand in meanwhile (then True)."""
        prior = self.prior
        if prior is None or prior.refused:
            return False
        then = prior.now(clock)
        if not prior.state(then).live or then >= prior.timing.hard_at:
            return False
        now = lease.now(clock)
        lease.matures_at = max(lease.matures_at, now + max(DEFER_MIN, lease.age(now)))
        return True

    def drop(self, lease: Lease) -> bool:
        """Never serve `lease` again if it is the one bridged with (a resource refused it)."""
        if lease is not self.prior:
            return False
        lease.refused = True
        self.prior = None
        return True
