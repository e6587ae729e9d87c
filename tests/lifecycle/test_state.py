"""Lease states, token timing with a seeded rng, suspend drift, shortfall, and what gets adopted."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest

from aioica_auth import Policy, Token, TokenUnavailableError
from aioica_auth._clock import Exchange
from aioica_auth._lifecycle import renewal as renewal_module
from aioica_auth._lifecycle.acquire import judge_shortfall
from aioica_auth._lifecycle.backoff import Severity, SoftFailureError, classify
from aioica_auth._lifecycle.lease import Lease, Provenance, TokenState
from aioica_auth._lifecycle.timing import Timing
from aioica_auth.testing import make_jwt

from ..fakes import ManualClock, RunningClock, ScriptedSource, manager, must_wait_token
from ..support import wait_until

WALL = 1_700_000_000.0
MONO = 1_000.0
U42 = 0.6394267984578837  # random.Random(42).random(): the first jitter draw of seed 42


def timing(
    *, valid_from: float = 10.0, refresh_at: float = 100.0, hard_at: float = 150.0
) -> Timing:
    return Timing(0.0, valid_from, refresh_at, hard_at, 200.0, 200.0, None)


def lease_of(t: Timing, *, received_at: float = 0.0, wall_offset: float = 0.0) -> Lease:
    return Lease(Token.opaque("opaque-value-xyz"), t, Provenance.MINTED, received_at, wall_offset)


def jwt_token(
    *, lifetime: float = 3600.0, issued_at: float = WALL, not_before: float | None = None
) -> Token:
    return Token.from_jwt(make_jwt(issued_at=issued_at, lifetime=lifetime, not_before=not_before))


# -- Lease.state: the one judgement -------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "state"),
    [
        (-1e9, TokenState.NOT_YET_VALID),
        (9.999, TokenState.NOT_YET_VALID),
        (10.0, TokenState.FRESH),
        (99.999, TokenState.FRESH),
        (100.0, TokenState.REFRESH_DUE),
        (149.999, TokenState.REFRESH_DUE),
        (150.0, TokenState.MUST_WAIT),
        (199.999, TokenState.MUST_WAIT),
        (200.0, TokenState.EXPIRED),
        (1e9, TokenState.EXPIRED),
    ],
)
def test_each_moment_of_a_lease_has_one_state(now: float, state: TokenState) -> None:
    """A lease is not yet valid, fresh, due, must-wait, then expired, each from its boundary on."""
    assert lease_of(timing()).state(now) is state


def test_expiry_outranks_not_yet_valid() -> None:
    """A token whose nbf lies past its expiry is expired, never 'not yet valid' (waited for)."""
    lease = lease_of(timing(valid_from=300.0))
    assert lease.state(250.0) is TokenState.EXPIRED
    assert lease.state(50.0) is TokenState.NOT_YET_VALID


def test_not_yet_valid_outranks_the_windows() -> None:
    """Before nbf a token is not yet valid, even where the windows say due or must-wait."""
    lease = lease_of(timing(valid_from=180.0))
    assert lease.state(160.0) is TokenState.NOT_YET_VALID
    assert lease.state(180.0) is TokenState.MUST_WAIT


@pytest.mark.parametrize(
    ("state", "live"),
    [
        (TokenState.NOT_YET_VALID, False),
        (TokenState.FRESH, True),
        (TokenState.REFRESH_DUE, True),
        (TokenState.MUST_WAIT, True),
        (TokenState.EXPIRED, False),
    ],
)
def test_live_means_past_nbf_and_not_expired(state: TokenState, live: bool) -> None:
    """`live` is true in the three windows and false before nbf and after expiry."""
    assert state.live is live


def test_a_lease_hands_out_a_read_only_header_and_hides_the_token() -> None:
    """The header mapping cannot be changed by a caller, and the repr names no token value."""
    lease = lease_of(timing())
    assert dict(lease.headers) == {"Authorization": "Bearer opaque-value-xyz"}
    with pytest.raises(TypeError):
        lease.headers["Authorization"] = "Bearer other"  # type: ignore[index]
    assert "opaque-value-xyz" not in repr(lease)


def test_validity_age_and_initial_validity_count_from_the_anchors() -> None:
    """validity is expiry - now, age is now - issued, initial validity is expiry - receipt."""
    lease = lease_of(Timing(5.0, 5.0, 100.0, 150.0, 200.0, 195.0, None), received_at=7.0)
    assert lease.validity(60.0) == 140.0
    assert lease.age(60.0) == 55.0
    assert lease.initial_validity == 193.0


# -- plan: windows scaled to the lifetime, jitter from a seeded rng ----------------------------


@pytest.mark.parametrize(
    ("lifetime", "leeway", "window", "hard"),
    [
        (4.0, 0.2, 2.0, 0.4),
        (60.0, 3.0, 30.0, 6.0),
        (3600.0, 30.0, 1200.0, 30.0),
        (86400.0, 30.0, 1200.0, 30.0),
    ],
)
def test_plan_windows_are_exact_with_a_seeded_rng(
    lifetime: float, leeway: float, window: float, hard: float
) -> None:
    """leeway min(30, L/20), hard min(30, L/10, window/2), refresh min(1200, L/2) + u*10% early."""
    t = Timing.of(
        jwt_token(lifetime=lifetime), None, Policy(), rng=random.Random(42), now=(MONO, WALL)
    )
    assert t.issued == t.valid_from == MONO
    assert t.lifetime == lifetime
    assert t.expires == pytest.approx(MONO + lifetime - leeway)
    assert t.hard_at == pytest.approx(t.expires - hard)
    assert t.refresh_at == pytest.approx(t.expires - window - U42 * 0.1 * window)
    assert t.skew is None


def test_the_same_seed_gives_the_same_timing_and_another_seed_moves_only_the_refresh() -> None:
    """Jitter is the rng's only effect: equal seeds plan equal timings, others move refresh_at."""
    token = jwt_token()
    a, b, c = (
        Timing.of(token, None, Policy(), rng=random.Random(seed), now=(MONO, WALL))
        for seed in (7, 7, 8)
    )
    assert a == b
    assert a.refresh_at != c.refresh_at
    assert (a.expires, a.hard_at, a.valid_from) == (c.expires, c.hard_at, c.valid_from)


def test_jitter_only_brings_the_refresh_forward_within_its_fraction() -> None:
    """Over 200 seeds the refresh point lies in [expiry - 1.1 w, expiry - w], never later."""
    token = jwt_token()
    points = [
        Timing.of(token, None, Policy(), rng=random.Random(s), now=(MONO, WALL)).refresh_at
        for s in range(200)
    ]
    expires = MONO + 3600 - 30
    assert all(expires - 1320 <= p <= expires - 1200 for p in points)
    assert max(points) - min(points) > 100  # spread, not a constant


def test_no_jitter_means_no_randomness() -> None:
    """With jitter=0 the refresh point is exactly expiry minus the window, whatever the seed."""
    token = jwt_token()
    points = {
        Timing.of(token, None, Policy(jitter=0), rng=random.Random(s), now=(MONO, WALL)).refresh_at
        for s in range(5)
    }
    assert points == {MONO + 3600 - 30 - 1200}


def test_a_reply_anchors_expiry_on_iat_and_sending_time() -> None:
    """With a reply, a server 10 min ahead does not matter: expiry is sent_at + L - 1 s - leeway."""
    reply = Exchange(MONO, WALL, MONO + 0.2, 600.0)
    token = jwt_token(issued_at=WALL + 600)  # whole-second claims: iat truncated by up to 1 s
    t = Timing.of(token, reply, Policy(), rng=random.Random(42))
    assert t.issued == MONO
    assert t.expires == pytest.approx(MONO + 3600 - 1 - 30)
    assert t.skew == pytest.approx(600.0)


def test_nbf_ahead_makes_a_token_not_yet_valid_until_then() -> None:
    """nbf 5 s after iat: valid from receipt + 5 s, not yet valid a moment before."""
    reply = Exchange(MONO, WALL, MONO + 0.5, None)
    token = jwt_token(not_before=WALL + 5)
    t = Timing.of(token, reply, Policy(), rng=random.Random(42))
    assert t.valid_from == pytest.approx(MONO + 0.5 + 5)
    lease = Lease(token, t, Provenance.MINTED, MONO + 0.5, WALL - MONO)
    assert lease.state(MONO + 5.4) is TokenState.NOT_YET_VALID
    assert lease.state(MONO + 5.5) is TokenState.FRESH


def test_nbf_ahead_is_honoured_for_a_token_without_exp() -> None:
    """A JWT without exp but with nbf 20 s ahead is not yet valid until its nbf."""
    token = Token.from_jwt(make_jwt(issued_at=WALL, not_before=WALL + 20, include_exp=False))
    t = Timing.of(token, None, Policy(), rng=random.Random(42), now=(MONO, WALL))
    lease = Lease(token, t, Provenance.GIVEN, MONO, WALL - MONO)
    assert t.expires == float("inf")
    assert lease.state(MONO + 10) is TokenState.NOT_YET_VALID


def test_a_token_without_exp_is_fresh_forever() -> None:
    """No exp: never due, never expired by the clock, lifetime unknown."""
    token = Token.from_jwt(make_jwt(issued_at=WALL, include_exp=False))
    t = Timing.of(token, None, Policy(), rng=random.Random(42), now=(MONO, WALL))
    lease = Lease(token, t, Provenance.GIVEN, MONO, WALL - MONO)
    assert t.lifetime is None
    assert lease.state(MONO + 1e9) is TokenState.FRESH


# -- Lease.now: suspend drift --------------------------------------------------------------------


def fresh_lease(clock: ManualClock, lifetime: float = 3600.0) -> Lease:
    token = jwt_token(issued_at=clock.wall, lifetime=lifetime)
    now = clock.monotonic(), clock.time()
    t = Timing.of(token, None, Policy(), rng=random.Random(42), now=now)
    return Lease(token, t, Provenance.GIVEN, now[0], now[1] - now[0])


def test_a_suspend_of_3_hours_is_noticed() -> None:
    """Wall time jumps 3 h while monotonic stands still: the 1 h token is judged expired."""
    clock = ManualClock()
    lease = fresh_lease(clock)
    assert lease.state(lease.now(clock)) is TokenState.FRESH
    clock.suspend(3 * 3600)
    assert clock.monotonic() == MONO
    assert lease.now(clock) == MONO + 3 * 3600
    assert lease.state(lease.now(clock)) is TokenState.EXPIRED
    assert lease.state(clock.monotonic()) is TokenState.FRESH  # what monotonic alone would say


def test_suspend_drift_stays_added_as_time_goes_on() -> None:
    """After a 10 min suspend, later readings are monotonic + 10 min, not reset by the next tick."""
    clock = ManualClock()
    lease = fresh_lease(clock)
    clock.suspend(600)
    clock.advance(60)
    assert lease.now(clock) == MONO + 60 + 600


@pytest.mark.parametrize(("jump", "drift"), [(0.9, 0.0), (1.0, 0.0), (1.5, 1.5), (60.0, 60.0)])
def test_a_second_of_wall_clock_drift_is_noise(jump: float, drift: float) -> None:
    """Up to 1 s of wall-vs-monotonic drift is ignored; more is counted in full."""
    clock = ManualClock()
    lease = fresh_lease(clock)
    clock.suspend(jump)
    assert lease.now(clock) == MONO + drift


def test_a_wall_clock_stepped_back_is_ignored() -> None:
    """A wall clock set back an hour cannot make a token look younger: now stays monotonic."""
    clock = ManualClock()
    lease = fresh_lease(clock)
    clock.advance(100)
    clock.suspend(-3600)
    assert lease.now(clock) == MONO + 100


# -- judge_shortfall -----------------------------------------------------------------------------


def shortfall_lease(validity_at_zero: float = 100.0) -> Lease:
    return lease_of(
        Timing(0.0, 0.0, 50.0, 90.0, validity_at_zero, validity_at_zero, None), received_at=0.0
    )


def test_a_met_need_is_no_shortfall_and_not_judged() -> None:
    """validity >= need: no wait, and the once-per-lease renewal is not spent on it."""
    lease = shortfall_lease()
    assert judge_shortfall(lease, 0.0, 100.0, 50.0) is False
    assert lease.shortfall_asked is False


def test_an_unmet_need_is_worth_a_renewal_when_nothing_says_otherwise() -> None:
    """Need 300 s of a token valid 100 s, no ceiling known: renew, and say so again when asked."""
    lease = shortfall_lease()
    assert judge_shortfall(lease, 0.0, 300.0, None) is True
    assert judge_shortfall(lease, 10.0, 300.0, None) is True


def test_a_need_no_new_token_can_meet_is_not_renewed_for() -> None:
    """Ceiling 100 s < need 300 s: no renewal while the lease is nearly as good as new, one
    when it has aged, none after that."""
    lease = shortfall_lease()
    assert judge_shortfall(lease, 5.0, 300.0, 100.0) is False  # validity 95 >= 0.9 * 100
    assert judge_shortfall(lease, 80.0, 300.0, 100.0) is True  # aged: the one renewal
    assert judge_shortfall(lease, 85.0, 300.0, 100.0) is False  # once per lease


def test_an_aged_lease_is_renewed_for_even_a_hopeless_need() -> None:
    """Ceiling 100 s < need 300 s but only 50 s left: a new token is better, so renew."""
    lease = shortfall_lease()
    assert judge_shortfall(lease, 50.0, 300.0, 100.0) is True


def test_a_need_within_the_ceiling_is_renewed_for() -> None:
    """Need 100 s of a token with 95 s left, new ones give 120 s: renew."""
    lease = shortfall_lease()
    assert judge_shortfall(lease, 5.0, 100.0, 120.0) is True


def test_a_lease_served_short_is_not_renewed_again_for_that_need() -> None:
    """After a renewal served it short of a need of 300 s (new tokens give 100 s), asking again
    for 300 s is answered 'no renewal' without judging again."""
    lease = shortfall_lease()
    lease.shortfall_asked = True  # as a renewal that came back short marks it
    assert judge_shortfall(lease, 0.0, 300.0, 100.0) is False
    assert judge_shortfall(lease, 60.0, 300.0, 100.0) is False


@pytest.mark.parametrize("first", ["hopeless need", "served short"])
def test_a_need_new_tokens_can_meet_is_renewed_for_after_a_hopeless_one(first: str) -> None:
    """A lease found hopeless for 300 s (new tokens give 100 s) is still renewed for a later
    need of 60 s when it has 40 s left: a new token meets that need."""
    lease = shortfall_lease()
    if first == "served short":
        lease.shortfall_asked = True  # as a renewal that came back short marks it
    else:
        assert judge_shortfall(lease, 5.0, 300.0, 100.0) is False
    assert judge_shortfall(lease, 60.0, 60.0, 100.0) is True


# -- what the manager adopts: progress and arrival -----------------------------------------------


@pytest.mark.parametrize(
    ("case", "exp_offset", "adopted"),
    [("older", 40, False), ("same expiry", 45, False), ("newer", 3600, True)],
)
async def test_an_older_token_never_replaces_a_newer_one(
    case: str, exp_offset: float, adopted: bool
) -> None:
    """A renewal whose token expires no later than the one in use is a soft failure, not adopted."""
    clock = ManualClock()
    given = must_wait_token(clock)
    answer = make_jwt(issued_at=clock.wall - 10, expires_at=clock.wall + exp_offset)
    source = ScriptedSource(clock, [answer], initial=given)
    async with manager(source, clock, retry_initial=0.001, retry_max=0.002) as m:
        headers = await m.headers()
        current = m._lease
        assert current is not None
        if adopted:
            assert headers == {"Authorization": "Bearer " + answer}
            assert current.token.value == answer
            assert (m.stats.mints, m.stats.failures) == (1, 0)
        else:
            assert headers == {"Authorization": "Bearer " + given}
            assert current.token.value == given
            assert current.provenance is Provenance.GIVEN
            assert (m.stats.mints, m.stats.failures) == (0, 1)
    assert len(source.calls) == 1


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda wall: make_jwt(claims={"iat": None}, expires_at=wall - 5), id="no-iat"),
        pytest.param(lambda wall: make_jwt(issued_at=wall, lifetime=0), id="exp-equals-iat"),
    ],
)
async def test_token_expired_on_arrival_is_a_soft_failure(answer: Callable[[float], str]) -> None:
    """A minted token already expired is never adopted; retried as transient, then the caller
    gets TokenUnavailableError caused by the SoftFailureError."""
    clock = RunningClock()
    source = ScriptedSource(clock, [lambda: answer(clock.time())])
    m = manager(source, clock, acquire_timeout=0.3, retry_initial=0.01, retry_max=0.02)
    async with m:
        with pytest.raises(TokenUnavailableError) as info:
            await m.headers()
    cause = info.value.__cause__
    assert isinstance(cause, SoftFailureError)
    assert "already expired" in str(cause)
    assert classify(cause) is Severity.TRANSIENT
    assert m.stats.mints == 0
    # Spaced by backoff, not a spin; the last attempt may have been cut short by the deadline.
    assert 1 <= m.stats.failures <= len(source.calls) <= min(m.stats.failures + 1, 60)


async def test_a_suspend_of_3_hours_is_noticed_by_the_manager(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """After a 3 h suspend the scheduler's next clock check drops the expired 1 h token from the
    hot path and mints anew without offering the dead token for refresh."""
    monkeypatch.setattr(renewal_module, "_CLOCK_CHECK", 0.01)
    clock = RunningClock()
    given = make_jwt(issued_at=clock.time(), lifetime=3600)
    source = ScriptedSource(
        clock, [lambda: make_jwt(issued_at=clock.time(), lifetime=3600)], initial=given
    )
    async with manager(source, clock) as m:
        assert await m.headers() == {"Authorization": "Bearer " + given}
        clock.jump = 3 * 3600
        await wait_until(lambda: m.stats.mints == 1)
        assert (await m.headers())["Authorization"] != "Bearer " + given
    assert source.calls == [None]
    assert any("ran 10800 s ahead" in r.getMessage() for r in caplog.records)
    assert all(r.levelno < logging.ERROR for r in caplog.records)


async def test_a_lease_served_short_of_a_long_need_is_renewed_for_a_shorter_one() -> None:
    """A 1 h token served short of min_validity=7200 is not handed out, 55 min later, to a caller
    needing 600 s: a new token meets that, so the caller gets one."""
    clock = ManualClock()
    source = ScriptedSource(clock, [lambda: make_jwt(issued_at=clock.wall, lifetime=3600)])
    async with manager(source, clock) as m:
        first = await m.token(min_validity=7200)  # no token lasts that long: served short
        clock.advance(3300)  # about 270 s left
        second = await m.token(min_validity=600)
        assert second.fingerprint != first.fingerprint
    assert len(source.calls) >= 2
