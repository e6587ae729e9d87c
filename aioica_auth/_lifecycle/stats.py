"""A manager's counters: `Counters`, bumped by its parts, and `ManagerStats`, its snapshot."""

from __future__ import annotations

import attrs

from .lease import Provenance

__all__ = ["Counters", "ManagerStats"]


@attrs.define
class _Counts:
    """The counters' names, once for both classes below."""

    mints: int = 0
    refreshes: int = 0
    keepalives: int = 0
    failures: int = 0
    waits: int = 0
    invalidations: int = 0
    shared: int = 0


@attrs.frozen
class ManagerStats(_Counts):
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


@attrs.define
class Counters(_Counts):
    """The live counters one manager's parts share (the slot, the renewal, the waits); typed
    fields, so that a misspelt counter is a type error, not a new key."""

    def adopted(self, provenance: Provenance) -> None:
        """Count a new token by where it came from (a given one is not counted)."""
        if provenance is Provenance.MINTED:
            self.mints += 1
        elif provenance is Provenance.REFRESHED:
            self.refreshes += 1
        elif provenance is Provenance.SHARED:
            self.shared += 1

    def snapshot(self) -> ManagerStats:
        """The counters now, as the public, frozen `ManagerStats`."""
        return ManagerStats(**attrs.asdict(self))
