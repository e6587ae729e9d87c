"""`ManagerStats`: a manager's counters, and which counter each kind of new token bumps."""

from __future__ import annotations

import attrs

from .lease import Provenance

__all__ = ["COUNTERS", "ManagerStats"]

COUNTERS = {
    Provenance.MINTED: "mints",
    Provenance.REFRESHED: "refreshes",
    Provenance.SHARED: "shared",
}


@attrs.frozen
class ManagerStats:
    """Counters of a manager's life so far.

    Attributes:
        mints: Tokens minted from the credential.
        refreshes: Tokens obtained by refreshing the previous one.
        keepalives: psToken session keep-alives that succeeded.
        failures: Renewal attempts that failed (each retried with backoff).
        waits: Calls that had to wait for a token instead of getting the cached one.
        invalidations: Tokens dropped because a resource answered 401 for them.
        shared: Tokens taken from the fleet's `TokenStore`, published by another manager.
    """

    mints: int = 0
    refreshes: int = 0
    keepalives: int = 0
    failures: int = 0
    waits: int = 0
    invalidations: int = 0
    shared: int = 0
