"""The shared 401 rules (`_recovery.rules`): driven step by step with no I/O and a manual
clock, and through both adapters over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest

from aioica_auth import ApiKey, Policy, Token, TokenManager
from aioica_auth._lease import Lease, Provenance
from aioica_auth._policy import plan
from aioica_auth._recovery import ACQUIRE, DISCARD, Recovery, Send, Sleep, origin, rules
from aioica_auth.testing import make_jwt

from .fakes import ManualClock


class FakeSource:
    """A `LeaseSource` whose leases are made on demand, judged by a manual clock."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.policy = Policy()
        self.invalidated: list[Token] = []
        self._current: Lease | None = None
        self._prior: Lease | None = None
        self.mint()

    def mint(self) -> Lease:
        now = (self.clock.monotonic(), self.clock.time())
        token = Token.from_jwt(make_jwt(issued_at=now[1], lifetime=3600))
        timing = plan(token, None, self.policy, now=now)
        lease = Lease(token, timing, Provenance.MINTED, now[0], now[1] - now[0])
        old = self._current
        self._prior = old if old is not None and old.accepted else None
        self._current = lease
        return lease

    async def lease(self) -> Lease:  # pragma: no cover - the driver below acquires
        return self._current or self.mint()

    def acquire(self) -> Lease:
        return self._current or self.mint()

    def current(self) -> Lease | None:
        return self._current

    def prior(self) -> Lease | None:
        return self._prior

    def is_ours(self, authorization: str) -> bool:
        return self._current is not None and authorization == self._current.authorization

    def invalidate(self, token: Token | str) -> bool:
        assert isinstance(token, Token)
        self.invalidated.append(token)
        if self._current is not None and self._current.token == token:
            self._current = None
            return True
        return False


def drive(
    source: FakeSource,
    status: Callable[[Lease, int], int],
    replayable: Callable[[], bool] = lambda: True,
) -> tuple[list[Lease], float]:
    """Run the rules to the end: the leases sent with, and the seconds slept in all."""
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
        else:
            assert step is DISCARD


def test_accepted_request_is_sent_once() -> None:
    """A 200 ends the exchange after one send, and marks the token accepted."""
    source = FakeSource()
    sent, slept = drive(source, lambda lease, n: 200)
    assert len(sent) == 1
    assert sent[0].accepted
    assert slept == 0


def test_refused_young_token_is_retried_in_bounded_time_then_invalidated() -> None:
    """Every send refused, young token: at most 4 young resends within 3 s, then exactly that
    token is invalidated and the request replayed once (6 sends in all)."""
    source = FakeSource()
    first = source.acquire()
    sent, slept = drive(source, lambda lease, n: 401)
    assert len(sent) == 6
    assert sent[:5] == [first] * 5
    assert sent[5] is not first
    assert slept < 3.0
    assert source.invalidated == [first.token]


def test_refused_accepted_token_is_invalidated_and_replayed_once() -> None:
    """A token a resource accepted before, now refused (revoked): invalidated, one replay."""
    source = FakeSource()
    first = source.acquire()
    first.accepted = True
    sent, slept = drive(source, lambda lease, n: 401 if lease is first else 200)
    assert sent == [first, sent[1]]
    assert sent[1] is not first
    assert source.invalidated == [first.token]
    assert slept == 0


def test_stale_token_is_resent_at_most_three_times() -> None:
    """A token superseded before each answer: resent with the current one, at most 3 times."""
    source = FakeSource()
    source.acquire().accepted = True

    def superseding(lease: Lease, n: int) -> int:
        source.mint().accepted = True  # another task got a newer token meanwhile
        return 401

    sent, _ = drive(source, superseding)
    # first, 3 stale resends, then replays: a second one only because the first replay's
    # token was one a resource had accepted (refused then: revoked)
    assert len(sent) == 1 + 3 + 2
    assert len({id(lease) for lease in sent}) == len(sent)


def test_unreplayable_body_gets_the_first_401() -> None:
    """A body that cannot be replayed: one send, no invalidation."""
    source = FakeSource()
    sent, _ = drive(source, lambda lease, n: 401, replayable=lambda: False)
    assert len(sent) == 1
    assert source.invalidated == []


def replaced(source: FakeSource) -> tuple[Lease, Lease]:
    """An accepted token, and the young one that has just replaced it."""
    old = source.acquire()
    old.accepted = True
    return old, source.mint()


def test_young_retry_tries_the_accepted_prior_token_first() -> None:
    """A young token refused while the accepted token it replaced is still valid: the prior
    one is tried next, and its acceptance ends the exchange without invalidating anything."""
    source = FakeSource()
    old, young = replaced(source)
    sent, slept = drive(source, lambda lease, n: 401 if lease is young else 200)
    assert sent == [young, old]
    assert source.invalidated == []
    assert slept == 0


def test_young_token_accepted_meanwhile_is_resent_at_once_not_invalidated() -> None:
    """A young token refused, and its revoked prior refused too; meanwhile another request got
    the young token accepted: this request's refusal was early, so it is resent with it at
    once, and nothing is invalidated (no re-mint of a good token)."""
    source = FakeSource()
    old, young = replaced(source)

    def status(lease: Lease, n: int) -> int:
        if lease is old:
            young.accepted = True  # another task's request, while this one tried the prior
            return 401  # revoked
        return 401 if n == 1 else 200

    sent, slept = drive(source, status)
    assert sent == [young, old, young]
    assert source.invalidated == []
    assert slept == 0


def test_young_token_accepted_then_revoked_gets_a_replay_with_young_retries() -> None:
    """As above, but the young token is revoked after its acceptance: the resend is refused,
    that token (only) is invalidated, and the replay's young successor still gets the young
    retries (the earlier ones did not run out), so the caller gets a 200."""
    source = FakeSource()
    old, young = replaced(source)

    def status(lease: Lease, n: int) -> int:
        if lease is old:
            young.accepted = True
        if lease is old or lease is young:
            return 401
        return 200 if n >= 5 else 401  # the successor: early once

    sent, slept = drive(source, status)
    assert sent[:3] == [young, old, young]
    assert len(sent) == 5
    assert sent[3] is sent[4]
    assert {id(sent[3])} - {id(old), id(young)}
    assert source.invalidated == [young.token]
    assert 0 < slept < 3.0


def test_young_token_superseded_by_an_accepted_one_follows_it() -> None:
    """A young token refused twice, and superseded during its retry by a token a resource
    accepted: the request is resent with that one at once, and nothing is invalidated."""
    source = FakeSource()
    young = source.acquire()
    newer: list[Lease] = []

    def status(lease: Lease, n: int) -> int:
        if n == 2:
            newer.append(source.mint())
            newer[0].accepted = True
        return 401 if lease is young else 200

    sent, slept = drive(source, status)
    assert sent == [young, young, newer[0]]
    assert source.invalidated == []
    assert slept == pytest.approx(0.1)


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


def test_revoked_tokens_young_successor_gets_the_young_retries_once() -> None:
    """An accepted token refused (revoked), and its successor refused while young (a resource
    whose clock lags): the successor is retried after short waits instead of the 401 going
    to the caller; one invalidation in all."""
    source = FakeSource()
    first = source.acquire()
    first.accepted = True
    sent, slept = drive(source, lambda lease, n: 200 if n >= 4 else 401)
    assert sent[0] is first
    assert len(sent) == 4
    assert len({id(lease) for lease in sent[1:]}) == 1
    assert sent[-1].accepted
    assert source.invalidated == [first.token]
    assert 0 < slept < 3.0


def test_refusing_everything_stays_bounded_from_an_accepted_token() -> None:
    """A resource that starts refusing every token after accepting one: the replay's young
    token is retried for under 3 s (it stays in use: no more replays), one invalidation."""
    source = FakeSource()
    source.acquire().accepted = True
    sent, slept = drive(source, lambda lease, n: 401)
    assert len(sent) == 1 + 1 + 4
    assert slept < 3.0
    assert len(source.invalidated) == 1


def test_a_revoked_replay_is_replayed_once_more_and_no_more() -> None:
    """Every token refused although a resource accepted it (each revoked as it is sent): two
    invalidate-and-replays in all, then the 401 goes to the caller. Each replay's token was
    accepted by another request while the replay was out, so its refusal may have been early:
    it is resent once at once, and refused again, it is a refusal."""
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
