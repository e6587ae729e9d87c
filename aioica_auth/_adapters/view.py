"""`LeaseView`: a token manager as the adapters see it (`recovery.LeaseSource`).

The manager builds one over its `Slot` and hands it to the middleware and the httpx auth, so
that what they need (the lease in use, the one served, a deferral, an invalidation) is no
public member of the manager. One view per manager: the rules remember per view (weakly).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._clock import Clock
from .._lifecycle.lease import Lease
from .._lifecycle.policy import Policy
from .._lifecycle.slot import Slot
from .._token import Token

__all__ = ["LeaseView"]


class LeaseView:
    """What the adapters need of one manager: its slot, and its two ways of acting."""

    __slots__ = ("__weakref__", "_invalidate", "_slot", "_wait", "clock", "policy")

    def __init__(
        self,
        slot: Slot,
        clock: Clock,
        policy: Policy,
        *,
        wait: Callable[[], Awaitable[Lease]],
        invalidate: Callable[[Token | str], bool],
    ) -> None:
        self._slot = slot
        self.clock = clock
        self.policy = policy
        self._wait = wait  # the manager's slow path (it binds the manager to its loop)
        self._invalidate = invalidate  # the manager's own `invalidate`

    async def lease(self) -> Lease:
        """A usable lease, as `headers()` would give."""
        return self._slot.hot or await self._wait()

    def current(self) -> Lease | None:
        """The newest lease, without waiting."""
        return self._slot.lease

    def served(self) -> Lease | None:
        """The lease handed out now: the newest, or the one it replaced while it matures."""
        return self._slot.served()

    def defer(self, lease: Lease) -> bool:
        """`lease` was refused as young: serve the one it replaced longer, if that is good."""
        return self._slot.defer(lease)

    def is_ours(self, authorization: str) -> bool:
        """Whether `authorization` is a header value the manager handed out lately."""
        return self._slot.is_ours(authorization)

    def invalidate(self, token: Token | str) -> bool:
        """Drop exactly `token` if it is still handed out (renewing when it is the newest)."""
        return self._invalidate(token)
