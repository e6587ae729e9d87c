"""The shared 401 rules (`_adapters.recovery.rules`): driven step by step with no I/O and a
manual clock, and through both adapters over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest

from aioica_auth import ApiKey, Policy, Token, TokenManager
from aioica_auth._adapters.recovery import (
    ACQUIRE,
    DISCARD,
    PROBE_WAITS,
    Await,
    Recovery,
    Send,
    Sleep,
    origin,
    rules,
)
from aioica_auth._lifecycle.lease import Lease, Provenance
from aioica_auth._lifecycle.maturity import Bridge
from aioica_auth._lifecycle.probe import Probe, ProbeState
from aioica_auth._lifecycle.timing import Timing
from aioica_auth.testing import make_jwt

from ..fakes import ManualClock


class FakeSource:
    """A `LeaseSource` whose leases are made on demand, judged by a manual clock, with the
    manager's `Bridge`: `mint()` is a background renewal (the old token bridges while the new
    one matures), a renewal after `invalidate` has nothing to bridge with."""

    def __init__(self, **policy: float) -> None:
        self.clock = ManualClock()
        self.policy = Policy(**policy)
        self.invalidated: list[Token] = []
        self.bridge = Bridge()
        self._current: Lease | None = None
        self.mint()

    def mint(self) -> Lease:
        now = (self.clock.monotonic(), self.clock.time())
        token = Token.from_jwt(make_jwt(issued_at=now[1], lifetime=3600))
        timing = Timing.of(token, None, self.policy, now=now)
        lease = Lease(token, timing, Provenance.MINTED, now[0], now[1] - now[0])
        self.bridge.replaced(self._current)
        self._current = lease
        return lease

    async def lease(self) -> Lease:  # pragma: no cover - the driver below acquires
        return self.acquire()

    def acquire(self) -> Lease:
        served = self.served()
        return served if served is not None else self.mint()

    def current(self) -> Lease | None:
        return self._current

    def served(self) -> Lease | None:
        current = self._current
        return None if current is None else self.bridge.serve(current, self.clock)[0]

    def defer(self, lease: Lease) -> bool:
        return lease is self._current and self.bridge.defer(lease, self.clock)

    def is_ours(self, authorization: str) -> bool:
        return self._current is not None and authorization == self._current.authorization

    def invalidate(self, token: Token | str) -> bool:
        assert isinstance(token, Token)
        self.invalidated.append(token)
        prior = self.bridge.prior
        if prior is not None and prior.token == token:
            return self.bridge.drop(prior)
        if self._current is not None and self._current.token == token:
            self._current.refused = True
            self._current = None
            return True
        return False


def drive(
    source: FakeSource,
    status: Callable[[Lease, int], int],
    replayable: Callable[[], bool] = lambda: True,
    probe_outcome: ProbeState = ProbeState.REFUSED,
) -> tuple[list[Lease], float]:
    """Run the rules to the end: the leases sent with, and the seconds slept in all. A probe
    awaited (another request's) ends with `probe_outcome`."""
    flow = rules(source, replayable)
    sent: list[Lease] = []
    slept = 0.0
    value: Lease | int | None = None
    while True:
        try:
            step = flow.send(value)
        except StopIteration:
            return sent, slept
        value = None
        if step is ACQUIRE:
            value = source.acquire()
        elif isinstance(step, Send):
            sent.append(step.lease)
            value = status(step.lease, len(sent))
        elif isinstance(step, Sleep):
            slept += step.seconds
            source.clock.advance(step.seconds)
        elif isinstance(step, Await):
            if probe_outcome is ProbeState.ACCEPTED:
                sent[-1].accepted = True
            step.probe.settle(probe_outcome)
        else:
            assert step is DISCARD


def test_accepted_request_is_sent_once() -> None:
    """A 200 ends the exchange after one send, and marks the token accepted."""
    source = FakeSource()
    sent, slept = drive(source, lambda lease, n: 200)
    assert len(sent) == 1
    assert sent[0].accepted
    assert slept == 0


def test_refused_young_token_is_probed_once_never_reminted_while_young() -> None:
    """Every send refused, the first token young: the request probes it (4 sends in all,
    within 2 s) and gets the 401; nothing is invalidated (a new token would be younger). A
    later request refused with it while it is still young gets its 401 after one send."""
    source = FakeSource()
    first = source.acquire()
    sent, slept = drive(source, lambda lease, n: 401)
    assert sent == [first] * 4
    assert slept == pytest.approx(sum(PROBE_WAITS))
    assert first.probe is not None
    assert first.probe.state is ProbeState.REFUSED
    assert source.invalidated == []
    sent, slept = drive(source, lambda lease, n: 401)
    assert sent == [first]
    assert slept == 0


def test_refusals_of_old_tokens_mint_at_most_once_per_error_memory() -> None:
    """A token never accepted and no longer young, refused: invalidated and replayed (one
    mint); its successor, refused once old too, within `error_memory`: the 401 goes back
    with no invalidation; after `error_memory`, one more invalidation. At most 4 sends each."""
    source = FakeSource(maturity=0, nbf_wait_max=0.5, error_memory=10)
    first = source.acquire()
    source.clock.advance(1.0)  # no longer young
    sent, _ = drive(source, lambda lease, n: 401)
    assert sent[0] is first
    assert len(sent) <= 4
    assert source.invalidated == [first.token]
    second = source.current()
    assert second is not None
    source.clock.advance(1.0)
    sent, _ = drive(source, lambda lease, n: 401)
    assert sent == [second]
    assert source.invalidated == [first.token]
    source.clock.advance(10.0)
    sent, _ = drive(source, lambda lease, n: 401)
    assert sent[0] is second
    assert len(sent) <= 4
    assert source.invalidated == [first.token, second.token]


def test_refused_accepted_token_is_revoked_and_renewed_at_once() -> None:
    """A token a resource accepted before, now refused (revoked): invalidated at once, one
    replay, even right after a refusal cost a mint (`error_memory` does not hold it back)."""
    source = FakeSource(maturity=0, nbf_wait_max=0.5)
    old = source.acquire()
    source.clock.advance(1.0)
    drive(source, lambda lease, n: 401 if lease is old else 200)  # refused: one mint
    assert source.invalidated == [old.token]
    first = source.acquire()
    first.accepted = True
    sent, slept = drive(source, lambda lease, n: 401 if lease is first else 200)
    assert sent == [first, sent[1]]
    assert sent[1] is not first
    assert source.invalidated == [old.token, first.token]
    assert slept == 0


def test_stale_token_is_resent_at_most_three_times() -> None:
    """A token superseded before each answer (the new one handed out at once), none of them
    accepted yet: resent with the current one, at most 5 times; then the 401 goes back (no
    replay, no invalidation). (An accepted one refused is revoked: the next test's case.)"""
    source = FakeSource(maturity=0)
    source.acquire()

    def superseding(lease: Lease, n: int) -> int:
        source.mint()  # another task got a newer token meanwhile
        return 401

    sent, _ = drive(source, superseding)
    assert len(sent) == 1 + 5  # MAX_SENDS
    assert len({id(lease) for lease in sent}) == len(sent)
    assert source.invalidated == []


def test_a_superseded_token_that_was_accepted_and_is_refused_is_revoked() -> None:
    """The token a renewal replaced, accepted before, refused now: revoked. It is dropped
    (never handed out again, not even to bridge while the new one matures) and the request
    replayed with the new one, instead of going back and forth between the two."""
    source = FakeSource()
    old, new = renewed(source)
    assert source.served() is old  # bridging while `new` matures

    def refusing_old(lease: Lease, n: int) -> int:
        return 401 if lease is old else 200

    sent, _ = drive(source, refusing_old)
    assert [lease is old for lease in sent] == [True, False]
    assert source.invalidated == [old.token]
    assert source.served() is new


def test_a_young_token_accepted_during_its_probe_then_refused_is_revoked() -> None:
    """The probe's token is accepted by another request meanwhile, then refused to the end of
    the probe (revoked in between): no 401 for the caller, as for any revoked token: it is
    invalidated and the request replayed with the next one."""
    source = FakeSource()
    young = source.acquire()

    def revoked_while_probed(lease: Lease, n: int) -> int:
        if lease is young:
            if n == 2:  # the probe's first resend: meanwhile another request got it through
                young.accepted = True
            return 401
        return 200

    sent, _ = drive(source, revoked_while_probed)
    assert sent[0] is young
    assert sent[-1] is not young
    assert len(sent) <= 6
    assert source.invalidated == [young.token]


def test_unreplayable_body_gets_the_first_401() -> None:
    """A body that cannot be replayed: one send, no invalidation."""
    source = FakeSource()
    sent, _ = drive(source, lambda lease, n: 401, replayable=lambda: False)
    assert len(sent) == 1
    assert source.invalidated == []


def renewed(source: FakeSource) -> tuple[Lease, Lease]:
    """An accepted token, and the one a background renewal has just replaced it with."""
    old = source.acquire()
    old.accepted = True
    source.clock.advance(1800)  # its refresh point
    return old, source.mint()


def test_a_renewed_token_is_handed_out_once_it_has_matured() -> None:
    """After a background renewal the old token is handed out until the new one is
    `min(maturity, L/20)` old (30 s of an hour-long token); then the new one."""
    source = FakeSource()
    old, new = renewed(source)
    assert source.served() is old
    sent, _ = drive(source, lambda lease, n: 200)
    assert sent == [old]
    source.clock.advance(29.9)
    assert source.served() is old
    source.clock.advance(0.2)
    assert source.served() is new


def test_the_bridge_ends_at_its_hard_window_and_with_maturity_zero() -> None:
    """The old token stands in only while it is outside its own hard window; `maturity=0`
    hands the new one out at once."""
    source = FakeSource()
    source.acquire()
    source.clock.advance(3600 - 30 - 30 + 1)  # past its hard window (30 s before expiry)
    new = source.mint()
    assert source.served() is new
    source = FakeSource(maturity=0)
    _, new = renewed(source)
    assert source.served() is new


def test_young_token_refused_while_the_old_one_is_good_is_held_back() -> None:
    """A matured token refused as young, the token it replaced still good: the request is
    resent with the old one, which is handed out again until the new one is older (its age
    doubled, 0.25 s at least); nothing is invalidated."""
    source = FakeSource(maturity=1.0)
    old, new = renewed(source)
    source.clock.advance(1.0)
    assert source.served() is new
    sent, slept = drive(source, lambda lease, n: 401 if lease is new else 200)
    assert sent == [new, old]
    assert source.invalidated == []
    assert slept == 0
    assert source.served() is old
    source.clock.advance(1.0)
    assert source.served() is new


def test_a_refused_bridge_is_dropped_and_never_served_again() -> None:
    """The old token, handed out while the new one matures, revoked: exactly it is dropped
    (no renewal: the new one is there) and the request replayed with the new one."""
    source = FakeSource()
    old, new = renewed(source)
    sent, _ = drive(source, lambda lease, n: 401 if lease is old else 200)
    assert sent == [old, new]
    assert source.invalidated == [old.token]
    assert old.refused
    assert source.served() is new
    assert source.current() is new


def test_young_token_accepted_while_this_request_was_out_is_resent_not_invalidated() -> None:
    """A young token refused, and accepted by another request while this one was out (its
    answer came after): the refusal may have been early, so it is resent at once, and
    nothing is invalidated."""
    source = FakeSource()
    young = source.acquire()

    def status(lease: Lease, n: int) -> int:
        if n == 1:
            young.accepted = True  # another request, checked after this one, got through
            return 401
        return 200

    sent, slept = drive(source, status)
    assert sent == [young, young]
    assert source.invalidated == []
    assert slept == 0


@pytest.mark.parametrize("outcome", [ProbeState.ACCEPTED, ProbeState.REFUSED])
def test_a_request_refused_during_anothers_probe_awaits_it(outcome: ProbeState) -> None:
    """A young token being probed by another request: this one awaits the probe, then
    resends once if it was accepted, else gets its 401 back; no probe of its own."""
    source = FakeSource()
    young = source.acquire()
    young.probe = Probe()
    statuses = {ProbeState.ACCEPTED: 200, ProbeState.REFUSED: 401}

    def status(lease: Lease, n: int) -> int:
        return 401 if n == 1 else statuses[outcome]

    sent, slept = drive(source, status, probe_outcome=outcome)
    assert sent == [young] * (2 if outcome is ProbeState.ACCEPTED else 1)
    assert slept == 0
    assert source.invalidated == []


def test_a_probe_whose_request_goes_away_is_settled_for_the_others() -> None:
    """The probing request ends early (its send failed, or it was cancelled): the probe is
    settled as abandoned, so the requests awaiting it go on, and another may probe."""
    source = FakeSource()
    young = source.acquire()
    flow = rules(source, lambda: True)
    assert flow.send(None) is ACQUIRE
    assert isinstance(flow.send(young), Send)
    assert flow.send(401) is DISCARD
    probe = young.probe
    assert isinstance(flow.send(None), Sleep)
    flow.close()
    assert probe is not None
    assert probe.state is ProbeState.ABANDONED
    assert young.probe is None


def test_revoked_tokens_young_successor_gets_one_probe() -> None:
    """An accepted token refused (revoked), and its successor refused while young (a resource
    whose clock lags): the successor is probed after short waits instead of the 401 going to
    the caller; one invalidation, 4 sends at most."""
    source = FakeSource()
    first = source.acquire()
    first.accepted = True
    sent, slept = drive(source, lambda lease, n: 200 if n >= 4 else 401)
    assert sent[0] is first
    assert len(sent) == 4
    assert len({id(lease) for lease in sent[1:]}) == 1
    assert sent[-1].accepted
    assert source.invalidated == [first.token]
    assert 0 < slept < 1.0


def test_refusing_everything_from_an_accepted_token_sends_at_most_4() -> None:
    """A resource that starts refusing every token after accepting one: one invalidation,
    the successor probed while the request has sends left: 4 sends in all."""
    source = FakeSource()
    source.acquire().accepted = True
    sent, slept = drive(source, lambda lease, n: 401)
    assert len(sent) == 4
    assert slept < 1.0
    assert len(source.invalidated) == 1


def test_a_revoked_replay_is_replayed_once_more_and_no_more() -> None:
    """Every token refused although a resource accepted it (each revoked as it is sent): each
    replay's token was accepted by another request while the replay was out, so its refusal
    may have been early: resent once at once, and refused again, it is a revocation. Two
    invalidations in all, then the 401 goes to the caller."""
    source = FakeSource()
    source.acquire().accepted = True

    def revoked(lease: Lease, n: int) -> int:
        lease.accepted = True  # another task's request got it through before the revocation
        return 401

    sent, slept = drive(source, revoked)
    assert len(sent) == 1 + 2 * 2
    assert [id(lease) for lease in sent[1:]] == [id(sent[1])] * 2 + [id(sent[3])] * 2
    assert len(source.invalidated) == 2
    assert slept == 0


def test_origin_normalises_default_ports_and_case() -> None:
    """An origin is scheme, lower-case host and port, with the scheme's default port."""
    assert origin("HTTPS", "ICA.Example.org", None) == ("https", "ica.example.org", 443)
    assert origin("http", "127.0.0.1", 8080) == ("http", "127.0.0.1", 8080)


def test_applies_only_to_the_origin_and_to_requests_without_their_own_authorization() -> None:
    """The bearer goes to the base origin only, and not over an Authorization of the caller."""
    source = FakeSource()
    recovery = Recovery(source, origin("https", "ica.example.org", None))
    ours = origin("https", "ica.example.org", 443)
    assert recovery.applies(ours, None)
    assert recovery.applies(ours, source.acquire().authorization)
    assert not recovery.applies(ours, "Bearer mine")
    assert not recovery.applies(origin("https", "bucket.example.org", None), None)
    assert not recovery.applies(origin("http", "ica.example.org", None), None)


async def _get_aiohttp(m: TokenManager, url: str, n: int) -> list[int]:
    async with aiohttp.ClientSession(middlewares=(m.middleware,)) as http:

        async def one() -> int:
            async with http.get(url) as r:
                return r.status

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def _get_httpx(m: TokenManager, url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(auth=m.httpx_auth) as http:
        answers = await asyncio.gather(*(http.get(url) for _ in range(n)))
    return [r.status_code for r in answers]


ADAPTERS: dict[str, Callable[[TokenManager, str, int], Awaitable[list[int]]]] = {
    "aiohttp": _get_aiohttp,
    "httpx": _get_httpx,
}


@pytest.mark.parametrize("get", ADAPTERS.values(), ids=ADAPTERS.keys())
async def test_revocation_at_a_lagging_resource_reaches_no_task(
    servers: Any, get: Callable[[TokenManager, str, int], Awaitable[list[int]]]
) -> None:
    """Both adapters, a resource whose clock lags 0.3 s: after the accepted token is revoked,
    50 concurrent requests all get 200 (the new token is retried while early), with one
    invalidation and one new mint."""
    srv = await servers(resource_clock_lag=0.3)
    async with TokenManager.for_ica(ApiKey(srv.api_key), base_url=srv.ica_base_url) as m:
        await m.headers()
        await asyncio.sleep(0.4)  # past the lag: the first token is accepted
        assert await get(m, srv.resource_url, 1) == [200]
        srv.revoke((await m.token()).value)
        statuses = await get(m, srv.resource_url, 50)
        assert m.stats.invalidations == 1
    assert statuses == [200] * 50
    assert srv.counts["ica.create"] == 2
