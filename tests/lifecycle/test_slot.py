"""`Slot`: the token in use, what it hands out, and what it drops."""

from __future__ import annotations

import asyncio

from aioica_auth import Token
from aioica_auth._lifecycle.lease import Lease, Provenance
from aioica_auth._lifecycle.slot import Slot
from aioica_auth._lifecycle.stats import Counters
from aioica_auth._lifecycle.timing import Timing

from ..fakes import ManualClock


def lease_of(value: str, clock: ManualClock, provenance: Provenance = Provenance.MINTED) -> Lease:
    now = clock.monotonic()
    timing = Timing(now, now, now + 100.0, now + 150.0, now + 200.0, 200.0, None)
    return Lease(Token.opaque(value), timing, provenance, now, clock.time() - now)


def test_an_unbound_slot_adopts_but_serves_nothing_from_the_hot_path() -> None:
    """Before it is bound to a loop, a slot keeps the lease and counts it; the hot path stays
    empty (the manager is not open)."""
    clock, counters = ManualClock(), Counters()
    slot = Slot(clock, counters)
    lease = lease_of("token-one", clock)
    slot.adopt(lease)
    assert slot.lease is lease
    assert slot.hot is None
    assert slot.served() is lease
    assert counters.snapshot().mints == 1


async def test_a_bound_slot_publishes_and_retires_the_hot_path() -> None:
    """Bound, a fresh lease is published through the given function; closing retires it."""
    clock, published = ManualClock(), []
    slot = Slot(clock, Counters())
    slot.bind(asyncio.get_running_loop(), published.append)
    lease = lease_of("token-one", clock)
    slot.adopt(lease)
    assert published == [lease]
    assert slot.is_ours(lease.authorization)
    assert slot.close() is lease
    assert published == [lease, None]
    slot.adopt(lease_of("token-two", clock))  # closed: ignored
    assert slot.lease is None


async def test_dropping_the_newest_empties_the_slot_and_the_prior_only_ends_the_bridge() -> None:
    """`drop` of the token in use empties the slot; of the one it replaced, only the bridge;
    of any other token, nothing."""
    clock, counters = ManualClock(), Counters()
    slot = Slot(clock, counters)
    slot.bind(asyncio.get_running_loop(), lambda lease: None)
    old, new = lease_of("token-old", clock), lease_of("token-new", clock)
    slot.adopt(old)
    slot.adopt(new)
    assert slot.bridge.prior is old
    assert slot.drop("token-unknown") is None
    assert slot.drop("token-old") is old
    assert slot.lease is new
    assert slot.bridge.prior is None
    assert old.refused
    assert slot.drop("token-new") is new
    assert slot.lease is None
    assert counters.invalidations == 2
    assert slot.is_ours(new.authorization)  # still recognised: a late 401 for it is ours
    slot.close()
