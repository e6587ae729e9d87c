"""When to refresh, how long to wait, how to back off: the manager's policy (a token's
timing under it is `timing.Timing.of`).

Every window is scaled to the token's lifetime L, so the same defaults serve a 2-second test
token and a day-long production one:

    refresh window  = min(refresh_margin, L/2)   background refresh starts this long before expiry
                                                 (20 min of a day-long token, half a short one),
                                                 brought forward by up to `jitter` of itself
    hard window     = min(min_validity, L/10)    from here callers wait for the refresh
    leeway          = min(leeway, L/20)          the token is treated as expired this much early
    maturity        = min(maturity, L/20)        a renewed token's age before it is handed out,
                                                 while the one it replaces stays good

The refresh window is the headroom that survives an outage of the token endpoint: peers give
a day-long token 5 min (Azure .NET), 20 min (Databricks, `min(L/2, 20 min)`) or half its life
(MSAL). Randomness (the jitter, the backoff) comes from a `random.Random` the caller may seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import attrs

from .._checks import MAX_TIMEOUT

__all__ = ["STARVING_RETRY_MAX", "Policy"]

_RANDOM = random.Random()


STARVING_RETRY_MAX = 4.0
"""Seconds: the longest backoff while no valid token is held (2 to 4 s with the jitter), so
callers have a token within about 5 s of the endpoint's recovery; an outage still costs about
one request per 3 s (never sooner than a server's `Retry-After`)."""


def _seconds(*, low: float, high: float = math.inf, allow_low: bool) -> Any:
    """An attrs validator: a real number in (low, high], or [low, high] with `allow_low`."""

    def check(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"{attribute.name} must be a number, not {type(value).__name__}"
            raise TypeError(msg)
        above = value >= low if allow_low else value > low
        if not (math.isfinite(value) and above and value <= high):
            bound = "non-negative" if allow_low else "positive"
            msg = f"{attribute.name} must be a {bound}, finite number" + (
                f" no larger than {high:g}" if math.isfinite(high) else ""
            )
            raise ValueError(msg)

    return check


_positive = _seconds(low=0, allow_low=False)
_non_negative = _seconds(low=0, allow_low=True)
_timeout = _seconds(low=0, high=MAX_TIMEOUT, allow_low=False)


def _flag(instance: Any, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        msg = f"{attribute.name} must be True or False, not {type(value).__name__}"
        raise TypeError(msg)


_fraction = _seconds(low=0, high=0.5, allow_low=True)


@attrs.frozen(kw_only=True)
class Policy:
    """The manager's timing and retry policy; every keyword of `TokenManager.for_*(**policy)`.

    Attributes:
        refresh_margin: Start a background refresh this many seconds before expiry
            (at most half the token's lifetime). The default, 20 minutes, is the headroom a
            day-long token keeps for riding out an outage of the token endpoint.
        min_validity: When less than this remains (at most a tenth of the lifetime), callers
            wait for the in-flight refresh instead of getting the current token.
        leeway: Treat tokens as expired this much early, for clock skew and latency
            (at most a twentieth of the lifetime).
        jitter: Fraction of the refresh window by which a refresh is randomly brought forward,
            so a fleet of processes does not refresh in step.
        request_timeout: Seconds for one request to a token endpoint (at most a day).
        acquire_timeout: Longest any caller waits for a token, across retries: for the
            in-flight renewal, a backoff, a `Retry-After`, a not-yet-valid token. Then the
            current token if it is still valid, else `TokenUnavailableError` naming the cause.
            The default, 15 s, fits a service or an uploader; a batch script that would
            rather wait out a longer outage can raise it.
        retry_initial: First backoff delay after a failed refresh, in seconds.
        retry_max: Longest backoff delay (at most a sixth of the current token's lifetime).
            While no valid token is held, at most 4 s (`STARVING_RETRY_MAX`): a caller then
            has a token within about 5 s of the endpoint's recovery. A server's `Retry-After`
            is honoured over both.
        retry_after_max: Cap on a server's `Retry-After`.
        error_memory: Seconds a permanent failure (wrong credential, malformed answer) is
            remembered and re-raised without a request, so retry loops cannot hammer.
        nbf_wait_max: Longest wait for a token that is not yet valid (`nbf` ahead); one further
            ahead is used at once (the skew is more likely in our reading of the clocks).
            Resources that refuse a young token (their clock lags) are retried for a few
            seconds at most, within this bound.
        maturity: Seconds a new token waits, after a background renewal, before it is handed
            out (at most a twentieth of the lifetime): meanwhile the token it replaces is
            served, while that one is valid and outside its hard window (`min_validity`), and
            was not refused. ICA's services refuse a token for a while after it is minted (their
            clocks lag the token service's; UMCCR's rotators sleep 30 s before first use), so a
            resource never sees a young token in steady state. A new token that a resource
            refuses as young while the previous one is still good is held back longer (its age
            doubled). 0 hands out each new token at once.
        keepalive_interval: For a console psToken: seconds between session keep-alives.
        revoke_on_close: Console only: revoke the current JWT on `aclose()`.
    """

    refresh_margin: float = attrs.field(default=1200.0, validator=_positive)
    min_validity: float = attrs.field(default=30.0, validator=_positive)
    leeway: float = attrs.field(default=30.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_fraction)
    request_timeout: float = attrs.field(default=10.0, validator=_timeout)
    acquire_timeout: float = attrs.field(default=15.0, validator=_timeout)
    retry_initial: float = attrs.field(default=0.5, validator=_positive)
    retry_max: float = attrs.field(default=60.0, validator=_positive)
    retry_after_max: float = attrs.field(default=300.0, validator=_timeout)
    error_memory: float = attrs.field(default=10.0, validator=_non_negative)
    nbf_wait_max: float = attrs.field(default=30.0, validator=_non_negative)
    maturity: float = attrs.field(default=30.0, validator=_non_negative)
    keepalive_interval: float = attrs.field(default=600.0, validator=_positive)
    revoke_on_close: bool = attrs.field(default=False, validator=_flag)

    @classmethod
    def from_keywords(cls, values: Mapping[str, Any]) -> Policy:
        """A policy from `**policy` keywords; a misspelt one names the real ones.

        Raises:
            TypeError: an unknown keyword or a value of the wrong type.
            ValueError: a value out of range.
        """
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            msg = (
                f"unknown keyword(s) {', '.join(unknown)}; "
                f"policy keywords are: {', '.join(sorted(known))}"
            )
            raise TypeError(msg)
        return cls(**values)

    def backoff(
        self,
        failures: int,
        lifetime: float | None,
        retry_after: float | None,
        rng: random.Random | None = None,
        *,
        starving: bool = False,
    ) -> float:
        """Seconds to wait before attempt number `failures + 1`: exponential, equal jitter;
        capped at `STARVING_RETRY_MAX` when `starving` (no valid token is held)."""
        cap = self.retry_max if lifetime is None else min(self.retry_max, max(lifetime / 6, 0.05))
        if starving:
            cap = min(cap, STARVING_RETRY_MAX)
        base = min(cap, self.retry_initial * 2 ** min(failures - 1, 30))
        delay: float = base / 2 + (rng or _RANDOM).random() * base / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay
