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

`LeaseSource` is what the aiohttp middleware needs from a manager, so that the middleware
does not depend on the manager's private members.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import attrs

from .._clock import Clock
from .._token import Token
from .policy import Policy
from .timing import Timing

if TYPE_CHECKING:
    from .maturity import Probe

__all__ = ["Lease", "LeaseSource", "Provenance", "TokenState"]

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
        probe: The shared probe of it after a 401 while it was young (`_maturity.Probe`).
        shortfall_asked: A renewal for a `min_validity` beyond what new tokens give was
            asked from it, or it is what such a renewal brought (see `judge_shortfall`).
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

    def judge_shortfall(self, now: float, need: float, ceiling: float | None) -> bool:
        """Whether a caller that needs `need` seconds should wait for a renewal.

        `ceiling` is what new tokens give (the validity of the last token a renewal for a
        `min_validity` brought, short of it), None while unknown. A need at or below it is
        worth a renewal: the new token meets it. A need beyond it no token can meet: it is
        worth one renewal per lease at most, and only when this lease has aged (a new one
        would be meaningfully fresher); otherwise this lease is the best there is.
        """
        validity = self.validity(now)
        if validity >= need:
            return False
        if ceiling is None or need <= ceiling:
            return True
        if self.shortfall_asked or validity >= 0.9 * ceiling:
            return False
        self.shortfall_asked = True
        return True

    def note_short(self, now: float, need: float) -> None:
        """Say, once per lease, that it is served short of a caller's `min_validity`."""
        if self.shortfall_logged or self.validity(now) >= need:
            return
        self.shortfall_logged = True
        logger.warning(
            "min_validity=%g s cannot be met: serving token %s, valid for %.0f s "
            "(this server's tokens last about %.0f s)",
            need,
            self.token.fingerprint,
            self.validity(now),
            self.initial_validity,
        )

    def served_short(self) -> None:
        """Mark a lease that a renewal for a need brought, short of it: a need beyond what
        new tokens give is not renewed for again from it."""
        self.shortfall_asked = True


class LeaseSource(Protocol):
    """What the middleware needs from a token manager."""

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
        """The lease handed out now without waiting: the newest, or while it matures the one
        it replaced; None when callers must wait."""

    def defer(self, lease: Lease) -> bool:
        """`lease` was refused as young: serve the one it replaced a while longer, if that is
        still good (True), as `_maturity.Bridge.defer` says."""

    def is_ours(self, authorization: str) -> bool:
        """Whether an `Authorization` value is one the manager handed out lately."""

    def invalidate(self, token: Token | str) -> bool:
        """Drop exactly `token` if it is still handed out (renewing when it is the newest)."""
