"""The token in use, named states, and the one place where a token's state is judged.

A `Lease` is a token with its timing (`Timing.of`, in `timing`) and its provenance (given
by the caller, minted, refreshed). `Lease.state(now)` is the only judgement of where a token
stands; everything that decides behaviour (the hot path, waiters, the scheduler, the
middleware) asks it instead of comparing timestamps:

    NOT_YET_VALID  before `nbf` (as the client reads the server's clock)
    FRESH          before the refresh point: serve it, nothing to do
    REFRESH_DUE    in the advisory window: serve it, renew in the background
    MUST_WAIT      in the hard window: callers wait for the renewal (and fall back to it)
    EXPIRED        past expiry (less the leeway): never handed out

`Lease.now(clock)` is the time to judge a lease by. `time.monotonic()` stops while the machine
sleeps, so after a suspend a token would look younger than it is; the lease remembers the
wall-minus-monotonic offset at its anchor, and a later offset that grew by more than a second
means the machine slept (or the wall clock stepped forward): that much is added to the
lease's "now". A wall clock stepped backward is ignored (it can only make a token look older).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from .._clock import Clock
from .._token import Token
from .probe import Probe
from .timing import Timing

__all__ = ["Lease", "Provenance", "TokenState"]

logger = logging.getLogger("aioica_auth")

_JUMP_TOLERANCE = 1.0  # seconds of wall-vs-monotonic drift that are noise, not a suspend


class Provenance(enum.Enum):
    """Where the token in use came from."""

    GIVEN = "given"
    MINTED = "minted"
    REFRESHED = "refreshed"
    SHARED = "shared"  # taken from a fleet's TokenStore


class TokenState(enum.Enum):
    """Where a token stands at a moment; see the module docstring."""

    NOT_YET_VALID = "not yet valid"
    FRESH = "fresh"
    REFRESH_DUE = "refresh due"
    MUST_WAIT = "must wait"
    EXPIRED = "expired"

    @property
    def fresh(self) -> bool:
        """Before the refresh point: served from the hot path."""
        return self is TokenState.FRESH

    @property
    def live(self) -> bool:
        """Valid now: past `nbf` and not expired (whatever the windows say)."""
        return self is not TokenState.NOT_YET_VALID and self is not TokenState.EXPIRED


@attrs.define(eq=False)
class Lease:
    """A token in use: its value, timing, provenance, and what resources said of it.

    Attributes:
        token: The token.
        timing: When it is valid, due for refresh, must be waited for, expires (monotonic).
        provenance: Given, minted or refreshed.
        received_at: Monotonic time the answer that carried it arrived.
        wall_offset: `time() - monotonic()` at its anchor, to detect a suspend.
        headers: The read-only `{"Authorization": "Bearer ..."}` handed to callers.
        authorization: The header value.
        accepted: A resource has answered something other than 401 for it.
        refused: Invalidated, or dropped as a bridge: never handed out again.
        matures_at: When it may be handed out in place of the token it replaced
            (`Timing.matures`, held back further by `Bridge.defer`).
        probe: The shared probe of it after a 401 while it was young (`probe.Probe`).
        shortfall_asked: A renewal for a `min_validity` beyond what new tokens give was
            asked from it, or it is what such a renewal brought (see `acquire.judge_shortfall`).
        shortfall_logged: Serving it short of a `min_validity` was logged.
        drift_seen: The suspend drift last logged for it.
    """

    token: Token
    timing: Timing
    provenance: Provenance
    received_at: float
    wall_offset: float
    headers: Mapping[str, str] = attrs.field(init=False)
    authorization: str = attrs.field(init=False)
    accepted: bool = False
    refused: bool = False
    matures_at: float = attrs.field(init=False)
    probe: Probe | None = None
    shortfall_asked: bool = False
    shortfall_logged: bool = False
    drift_seen: float = 0.0

    def __attrs_post_init__(self) -> None:
        self.authorization = self.token.authorization
        self.headers = MappingProxyType({"Authorization": self.authorization})
        self.matures_at = self.timing.matures

    def __repr__(self) -> str:
        return f"Lease({self.token!r}, {self.provenance.value})"

    def now(self, clock: Clock) -> float:
        """The monotonic time to judge this lease by, moved on by any suspend since."""
        mono = clock.monotonic()
        drift = clock.time() - mono - self.wall_offset
        return mono + drift if drift > _JUMP_TOLERANCE else mono

    def state(self, now: float) -> TokenState:
        """The one judgement of where this token stands at `now` (from `now(clock)`)."""
        t = self.timing
        if now >= t.expires:
            return TokenState.EXPIRED
        if now < t.valid_from:
            return TokenState.NOT_YET_VALID
        if now >= t.hard_at:
            return TokenState.MUST_WAIT
        if now >= t.refresh_at:
            return TokenState.REFRESH_DUE
        return TokenState.FRESH

    def validity(self, now: float) -> float:
        """Seconds it stays valid from `now`."""
        return self.timing.expires - now

    def age(self, now: float) -> float:
        """Seconds since it was issued, in the server's time (from its anchor)."""
        return now - self.timing.issued

    @property
    def initial_validity(self) -> float:
        """Seconds it was valid for when it arrived: about what any new token would give."""
        return self.timing.expires - self.received_at
