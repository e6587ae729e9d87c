"""What a manager tells an operator: why each renewal attempt ran, and how its token stands.

Two named judgements live here, each in one place:

- `Reason`, why a renewal attempt ran: `initial` (no token yet), `proactive` (the refresh
  point passed, callers still served), `expired` (callers wait: the token is in its hard
  window, expired, or gone), `invalidated` (a resource's 401 dropped the newest token),
  `min_validity` (a caller needs more validity than the token has left), `keepalive` (a
  psToken session's keep-alive), `close` (the revoke on `aclose()`).
- `Health`, the token's state for an alert: `none`, `fresh`, `refresh_due`, `degraded`
  (renewals are failing while the token in use is still valid), `expired`.

`Telemetry` is what the manager's parts call; this base records nothing, and it is what a
manager gets when OpenTelemetry is not installed, or not imported by the application by the
manager's first call (`engine.telemetry_for`). Otherwise,
`otel.OtelTelemetry` records through the global providers. No part calls it on the hot path.
"""

from __future__ import annotations

import contextlib
import enum

from .._clock import Clock
from .backoff import Backoff
from .lease import TokenState
from .slot import Slot
from .stats import Counters

__all__ = ["NO_TELEMETRY", "Health", "Reason", "Telemetry", "health_of", "reason_of"]


class Reason(enum.StrEnum):
    """Why a renewal attempt ran (the `aioica_auth.reason` attribute)."""

    INITIAL = "initial"
    PROACTIVE = "proactive"
    EXPIRED = "expired"
    INVALIDATED = "invalidated"
    MIN_VALIDITY = "min_validity"
    KEEPALIVE = "keepalive"
    CLOSE = "close"


class Health(enum.StrEnum):
    """How the token in use stands (the `aioica_auth.state` attribute)."""

    NONE = "none"
    FRESH = "fresh"
    REFRESH_DUE = "refresh_due"
    DEGRADED = "degraded"
    EXPIRED = "expired"


def reason_of(state: TokenState | None, *, ever: bool) -> Reason:
    """Why an attempt runs now, judged from the state of the token in use read now (None:
    no token) and whether the manager ever held one; an invalidation says so itself
    (`Renewal.drop`)."""
    if state is None:
        return Reason.EXPIRED if ever else Reason.INITIAL
    if state is TokenState.FRESH or state is TokenState.NOT_YET_VALID:
        return Reason.MIN_VALIDITY  # nothing else renews a token this young
    if state is TokenState.REFRESH_DUE:
        return Reason.PROACTIVE
    return Reason.EXPIRED  # MUST_WAIT or EXPIRED: callers wait for this one


def health_of(state: TokenState | None, failures: int) -> Health:
    """The token's `Health`: its `state` read now (None: no token), and the renewal failures
    in a row."""
    if state is None:
        return Health.NONE
    if state is TokenState.EXPIRED:
        return Health.EXPIRED
    if failures > 0:
        return Health.DEGRADED
    if state is TokenState.FRESH or state is TokenState.NOT_YET_VALID:
        return Health.FRESH
    return Health.REFRESH_DUE


class Telemetry:
    """A manager's telemetry. This base records nothing: no OpenTelemetry."""

    def bind(self, slot: Slot, backoff: Backoff, counters: Counters, clock: Clock) -> None:
        """What the observable instruments read (the manager's parts, once built)."""

    def attempt(self, reason: Reason) -> contextlib.AbstractContextManager[None]:
        """Around one renewal attempt, keep-alive or revoke: its requests are recorded with
        `reason` (in the current task only)."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """The manager closed: its token is no longer observed."""


NO_TELEMETRY = Telemetry()
