"""Failures of renewal: which are transient and which permanent, and when to try again.

`classify` is the one function that decides whether a failure is worth retrying:

    TRANSIENT  no answer (refused, DNS, TLS, timeout, torn connection), 5xx, 408, 429, and the
               soft failures (a renewal that gave no later expiry, a token already expired on
               arrival): back off with jitter, honour `Retry-After`, try again
    PERMANENT  a refusal (any other 4xx; a 1xx or 3xx too), a malformed answer, a credential
               that cannot work, a closed aiohttp session: fail fast, and remember it for
               `error_memory` seconds so retry loops cannot hammer

`Backoff` owns the count of failures in a row, the earliest next attempt and the remembered
permanent failure (`RememberedFailure`). It reads no clock of its own: every method takes
`now`, and the jitter comes from the `random.Random` it is given, so tests are exact.
"""

from __future__ import annotations

import enum
import random

import attrs

from .._errors import (
    ApiError,
    IcaError,
    InvalidResponseError,
    RateLimitError,
    TokenUnavailableError,
    TransportError,
)
from .policy import STARVING_RETRY_MAX, Policy

__all__ = [
    "Backoff",
    "RememberedFailure",
    "Severity",
    "SoftFailureError",
    "classify",
    "is_refusal",
    "unavailable",
]


class SoftFailureError(TokenUnavailableError):
    """A renewal "succeeded" with a token that is no use: no later expiry, or already expired."""


class Severity(enum.Enum):
    """How a renewal failure is treated."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify(exc: IcaError) -> Severity:
    """The one judgement of a failure: retry it later, or give up for now."""
    if isinstance(exc, SoftFailureError):
        return Severity.TRANSIENT
    if isinstance(exc, TokenUnavailableError | InvalidResponseError):
        return Severity.PERMANENT
    if isinstance(exc, TransportError) and exc.kind == "closed":
        return Severity.PERMANENT
    if isinstance(exc, ApiError) and (exc.status < 400 or is_refusal(exc)):
        return Severity.PERMANENT  # a refusal, or an answer no token endpoint gives
    return Severity.TRANSIENT


def is_refusal(exc: ApiError) -> bool:
    """A 4xx that means "no", not "not now" (429 and 408 are "not now"): permanent for
    `classify`, and for a source the sign to stop refreshing and mint anew."""
    return 400 <= exc.status < 500 and exc.status not in {408, 429}


@attrs.frozen
class RememberedFailure:
    """A permanent failure, re-raised without a request until `until` (monotonic)."""

    error: IcaError
    until: float


@attrs.define
class Backoff:
    """Failures in a row, the next attempt, and a remembered permanent failure."""

    policy: Policy
    rng: random.Random = attrs.field(factory=random.Random)
    failures: int = 0
    next_attempt: float = 0.0
    next_if_starving: float = 0.0  # the next attempt, should the token in use expire
    last: IcaError | None = None
    remembered: RememberedFailure | None = None

    def failed(
        self, exc: IcaError, now: float, lifetime: float | None, *, starving: bool = False
    ) -> float:
        """Record a failed attempt at `now`; returns the delay until the next one (a short
        one while `starving`: no valid token is held, so callers wait on the next attempt)."""
        self.failures += 1
        self.last = exc
        retry_after = exc.retry_after if isinstance(exc, ApiError) else None
        delay = self.policy.backoff(
            self.failures, lifetime, retry_after, self.rng, starving=starving
        )
        if classify(exc) is Severity.PERMANENT:
            self.remember(exc, now)
            delay = max(delay, self.policy.error_memory)
            self.next_if_starving = now + delay
        else:
            honoured = min(retry_after or 0.0, self.policy.retry_after_max)
            self.next_if_starving = now + max(min(delay, STARVING_RETRY_MAX), honoured)
        self.next_attempt = now + delay
        return delay

    def starve(self) -> None:
        """No valid token is held any more: the next attempt comes no later than a starving
        manager's backoff would have put it (`STARVING_RETRY_MAX`)."""
        self.next_attempt = min(self.next_attempt, self.next_if_starving)

    def remember(self, exc: IcaError, now: float) -> None:
        """Re-raise `exc` without a request for `error_memory` seconds."""
        self.remembered = RememberedFailure(exc, now + self.policy.error_memory)

    def succeeded(self) -> int:
        """Record a success; returns how many failures in a row it ended."""
        failures, self.failures = self.failures, 0
        self.next_attempt = self.next_if_starving = 0.0
        self.last = self.remembered = None
        return failures

    def ready(self, now: float) -> bool:
        """Whether an attempt may start at `now`."""
        return now >= self.next_attempt

    def remembered_at(self, now: float) -> RememberedFailure | None:
        """The remembered permanent failure, while it is remembered."""
        remembered = self.remembered
        if remembered is not None and now >= remembered.until:
            self.remembered = remembered = None
        return remembered


def unavailable(
    cause: IcaError | None,
    acquire_timeout: float,
    *,
    in_flight: bool = False,
    waiting_for: str | None = None,
) -> TokenUnavailableError:
    """The error for a caller left without a valid token, saying why (raise it from `cause`).

    Args:
        cause: The last failure, if any.
        acquire_timeout: The caller's bound, for the message.
        in_flight: The bound passed with a renewal still under way.
        waiting_for: What that renewal was waiting for, when not its own token request
            (another process's renewal, through a fleet store).
    """
    if in_flight:
        pending = f"waiting for {waiting_for}" if waiting_for else "the token request was"
        why = f"{pending} still under way after acquire_timeout={acquire_timeout:g} s"
        if cause is not None:
            why += f"; the attempt before it failed: {cause}"
    elif isinstance(cause, RateLimitError) and cause.retry_after is not None:
        why = f"rate limited: the server asked to wait {cause.retry_after:g} s ({cause})"
    elif cause is None:
        why = f"no attempt could start within acquire_timeout={acquire_timeout:g} s"
    elif classify(cause) is Severity.PERMANENT:
        why = str(cause)
    else:
        why = f"still failing after acquire_timeout={acquire_timeout:g} s: {cause}"
    return TokenUnavailableError(f"no valid token: {why}")
