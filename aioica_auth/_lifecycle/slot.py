"""`Slot`: the token in use, and which token is handed out from it.

One per manager. It holds the newest lease, the one it replaced (`maturity.Bridge`, served
while the newest matures), the authorizations handed out lately (so the adapters can tell a
401 for one of ours), the validity new tokens give (the `ceiling` a renewal for a
`min_validity` learnt), and the timer that retires the hot path at the next judgement.

The hot path itself is not read here: `headers()` reads one attribute of the manager, and a
`SyncTokenManager` reads the same one from other threads. The slot writes it through the
`publish` function given at `bind` (see `TokenManager._publish`): one deliberate mirror,
because an attribute of the manager is one load fewer than an attribute of its slot on every
call of the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from .._clock import Clock
from .._events import Event, fields
from .._token import Token
from .lease import Lease, Provenance
from .maturity import Bridge
from .stats import Counters

__all__ = ["Slot"]

logger = logging.getLogger("aioica_auth")

_ISSUED_KEPT = 4  # authorizations remembered as ours: the newest, and those it replaced


def _nowhere(lease: Lease | None) -> None:
    """Where a slot publishes before it is bound: nothing is served yet."""


class Slot:
    """The token in use: the lease, the one it replaced, what was handed out, when to retire."""

    def __init__(
        self,
        clock: Clock,
        counters: Counters,
        on_token: Callable[[Token], object] | None = None,
    ) -> None:
        self.lease: Lease | None = None
        self.bridge = Bridge()
        self.ceiling: float | None = None  # validity a renewal for a min_validity gave
        self.closed = False
        self.hot: Lease | None = None  # the lease the hot path serves, as published
        self._clock = clock
        self._counters = counters
        self._on_token = on_token
        self._issued: tuple[str, ...] = ()  # authorizations handed out lately, newest first
        self._retire_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publish: Callable[[Lease | None], None] = _nowhere

    def bind(
        self, loop: asyncio.AbstractEventLoop, publish: Callable[[Lease | None], None]
    ) -> None:
        """Serve on `loop` from now on, through `publish` (the manager's hot-path mirror)."""
        self._loop, self._publish = loop, publish

    def served(self) -> Lease | None:
        """The lease handed out now: the newest, or the one it replaced while it matures."""
        return self.hot or self.lease

    def is_ours(self, authorization: str) -> bool:
        """Whether `authorization` is a header value handed out lately."""
        return authorization in self._issued

    def adopt(self, lease: Lease) -> None:
        """Make `lease` the one in use (before any waiter wakes), and say so."""
        if self.closed:
            return
        self.bridge.replaced(self.lease)
        self.lease = lease
        self.serve(lease)
        self._issued = (lease.authorization, *self._issued[: _ISSUED_KEPT - 1])
        self._counters.adopted(lease.provenance)
        timing = lease.timing
        lifetime = "unknown" if timing.lifetime is None else f"{timing.lifetime:.1f} s"
        skew = "" if timing.skew is None else f", server clock {timing.skew:+.0f} s from ours"
        refresh_in = timing.refresh_at - lease.now(self._clock)
        logger.info(
            "%s token %s (lifetime %s, refresh in %.1f s%s)",
            "using given" if lease.provenance is Provenance.GIVEN else lease.provenance.value,
            lease.token.fingerprint,
            lifetime,
            refresh_in,
            skew,
            extra=fields(
                Event.TOKEN_RENEWED,
                token_id=lease.token.fingerprint,
                provenance=lease.provenance.value,
                lifetime=timing.lifetime,
                refresh_in=refresh_in,
                skew=timing.skew,
            ),
        )
        if self._on_token is not None and self._loop is not None:
            self._loop.call_soon(self._notify, lease.token)

    def serve(self, lease: Lease | None) -> None:
        """Serve `lease` (or, while it matures, the one it replaced: `Bridge.serve`) from the
        hot path until its next judgement (None: stop serving)."""
        if self._retire_timer is not None:
            self._retire_timer.cancel()
            self._retire_timer = None
        loop = None if self.closed else self._loop
        if lease is not None and loop is not None and lease.state(lease.now(self._clock)).fresh:
            served, delay = self.bridge.serve(lease, self._clock)
            if not math.isinf(delay):  # a token without `exp` is never retired by time
                then = None if served is lease else lease  # retire it, or re-judge
                self._retire_timer = loop.call_later(delay, self.serve, then)
            self.hot = served
        else:
            self.hot = None
        self._publish(self.hot)

    def retire(self) -> None:
        """Stop serving from the hot path: callers judge the lease on the slow path."""
        self.serve(None)

    def defer(self, lease: Lease) -> bool:
        """`lease` was refused as young: serve the one it replaced longer, if that is good."""
        if lease is not self.lease or not self.bridge.defer(lease, self._clock):
            return False
        self.serve(lease)
        return True

    def rejudge(self) -> None:
        """After a jump of the wall clock against the monotonic one (a suspend): re-judge."""
        lease = self.lease
        if lease is None or self.hot is None:
            return
        drift = lease.now(self._clock) - self._clock.monotonic()
        if drift > 0 and drift != lease.drift_seen:
            lease.drift_seen = drift
            logger.warning(
                "the wall clock ran %.0f s ahead of the monotonic one (the machine slept?): "
                "token %s re-judged",
                drift,
                lease.token.fingerprint,
                extra=fields(Event.TOKEN_CLOCK_JUMP, token_id=lease.token.fingerprint, drift=drift),
            )
            self.serve(lease)

    def drop(self, value: str) -> Lease | None:
        """Never hand out the token `value` again: the lease dropped, or None if it is not in
        use. Dropping the newest empties the slot (the caller renews); dropping the one it
        replaced only ends the bridge."""
        lease, bridged = self.lease, self.bridge.prior
        if bridged is not None and bridged.token.value == value and self.bridge.drop(bridged):
            self.serve(lease)
            lease = bridged
        elif lease is None or lease.token.value != value:
            return None
        else:
            lease.refused, self.lease = True, None
            self.retire()
        self._counters.invalidations += 1
        logger.info(
            "token %s refused by a resource: dropped",
            lease.token.fingerprint,
            extra=fields(Event.TOKEN_INVALIDATED, token_id=lease.token.fingerprint),
        )
        return lease

    def close(self) -> Lease | None:
        """Serve nothing more, ever; returns the lease that was in use."""
        self.closed = True
        lease, self.lease, self.bridge.prior = self.lease, None, None
        self.retire()
        return lease

    def _notify(self, token: Token) -> None:
        assert self._on_token is not None
        try:
            self._on_token(token)
        except Exception:
            logger.exception(
                "on_token callback failed for token %s",
                token.fingerprint,
                extra=fields(Event.TOKEN_CALLBACK_FAILED, token_id=token.fingerprint),
            )
