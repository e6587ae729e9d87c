"""A token's timing: when it becomes usable, when to refresh it, when callers must wait for the
renewal, when it expires, when a renewed one may be handed out.

`Timing.of(token, exchange, policy)` reads the token's own claims in the server's time frame,
anchored on our monotonic clock by the `Exchange` that carried it, so a client clock that is
minutes off does not matter. The windows are `Policy`'s, scaled to the lifetime (see `policy`).
"""

from __future__ import annotations

import math
import random
import time

import attrs

from .._clock import Exchange
from .._token import Token, epoch
from .policy import Policy

__all__ = ["Timing"]

_RANDOM = random.Random()
_DATE_RESOLUTION = 2.0  # `Date` has one-second resolution: smaller offsets are noise


@attrs.frozen
class Timing:
    """When a token becomes usable, when to refresh it, when callers must wait, when it expires.

    All times are `time.monotonic()` seconds, computed in the server's time frame: the
    token's own `exp - iat` anchored at the moment the request was sent (`issued`), so a
    client clock that is minutes off does not matter.
    """

    issued: float
    valid_from: float
    refresh_at: float
    hard_at: float
    expires: float
    lifetime: float | None
    skew: float | None
    matures: float = -math.inf  # when it may be handed out in place of the token it replaces

    @classmethod
    def of(
        cls,
        token: Token,
        exchange: Exchange | None,
        policy: Policy,
        *,
        rng: random.Random | None = None,
        now: tuple[float, float] | None = None,
    ) -> Timing:
        """Compute a token's timing from its claims and the exchange that carried it.

        Without an exchange (a JWT the caller already had), the local wall clock is the only
        reference and is used as is; `now` is then `(monotonic, wall)`, read now by default.
        """
        given = exchange is None
        if exchange is None:
            mono, wall = now if now is not None else (time.monotonic(), time.time())
            exchange = Exchange(mono, wall, mono)
        exp, iat, nbf = epoch(token.expires_at), epoch(token.issued_at), epoch(token.not_before)
        server_now, skew = _server_now(iat, exchange, given=given)
        anchor = exchange.sent_at
        valid_from = anchor
        if nbf is not None and nbf > server_now:
            # Each bound errs on its safe side: expiry counts from when the request was sent
            # (earlier than the server stamped `iat`), validity from when the answer arrived
            # (later than it).
            valid_from = exchange.received_at + (nbf - server_now)
        if exp is None:
            inf = math.inf
            return cls(anchor, valid_from, inf, inf, inf, None, skew, anchor + policy.maturity)
        lifetime = exp - (iat if iat is not None else server_now)
        remaining = exp - server_now
        claims = token.claims
        if not given and isinstance(claims.get("iat"), int) and isinstance(claims.get("exp"), int):
            # Whole-second claims: `iat` was truncated by up to a second.
            remaining -= min(1.0, max(lifetime, 0) / 10)
        scale = max(lifetime, 0.0)
        expires = anchor + remaining - min(policy.leeway, scale / 20)
        window = min(policy.refresh_margin, scale / 2)
        hard = min(policy.min_validity, scale / 10, window / 2)
        refresh_at = expires - window - (rng or _RANDOM).random() * policy.jitter * window
        # Matured counted from the answer's arrival, as validity is: `iat` may be stamped as
        # late as that (a slow server), and a young token is the risk here.
        matures = exchange.received_at + min(policy.maturity, scale / 20)
        return cls(anchor, valid_from, refresh_at, expires - hard, expires, lifetime, skew, matures)


def _server_now(
    iat: float | None, exchange: Exchange, *, given: bool
) -> tuple[float, float | None]:
    """The server's clock when the request was sent, and the skew (server minus us) if known.

    `iat` is the server's clock when it issued the token: the best anchor there is, for a token
    that came back from a request; a given token's `iat` may be of any age. Else the `Date`
    header's offset, when it is larger than its resolution.
    """
    wall = exchange.sent_wall
    if given:
        return wall, None
    if iat is not None:
        return iat, iat - wall
    offset = exchange.server_offset
    if offset is not None and abs(offset) >= _DATE_RESOLUTION:
        return wall + offset, offset
    return wall, offset
