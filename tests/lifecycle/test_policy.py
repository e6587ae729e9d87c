"""Policy validation and token timing: windows scale with the lifetime, skew does not matter."""

from __future__ import annotations

import time
from typing import Any

import pytest

from aioica_auth import ApiKey, Policy, Token, TokenManager
from aioica_auth._clock import Exchange
from aioica_auth._lifecycle.timing import Timing
from aioica_auth.testing import make_jwt


def reply(*, offset: float | None = None, sent_wall: float | None = None) -> Exchange:
    now = time.monotonic()
    return Exchange(now, sent_wall or time.time(), now, offset)


@pytest.mark.parametrize(
    ("keyword", "value", "error"),
    [
        ("refresh_margin", 0, ValueError),
        ("refresh_margin", float("inf"), ValueError),
        ("min_validity", -1, ValueError),
        ("leeway", float("nan"), ValueError),
        ("jitter", 0.6, ValueError),
        ("acquire_timeout", "60", TypeError),
        ("retry_max", True, TypeError),
        ("revoke_on_close", "yes", TypeError),
    ],
)
def test_bad_policy_values_are_refused_by_name(keyword: str, value: Any, error: type) -> None:
    """A bad policy value raises ValueError/TypeError naming the keyword."""
    with pytest.raises(error, match=keyword):
        Policy(**{keyword: value})


def test_unknown_policy_keyword_lists_the_known_ones() -> None:
    """A misspelt keyword is a TypeError that lists the real ones."""
    with pytest.raises(TypeError, match="refresh_margin") as info:
        TokenManager.for_ica(ApiKey("k" * 16), refresh_margn=10)
    assert "refresh_margn" in str(info.value)


def test_plain_http_to_a_remote_host_is_refused() -> None:
    """A bearer never crosses a network in clear: http:// only on loopback."""
    with pytest.raises(ValueError, match="https"):
        TokenManager.for_ica(ApiKey("k" * 16), base_url="http://ica.example.org/ica/rest")
    TokenManager.for_console(ApiKey("k" * 16), base_url="http://localhost:8080")


@pytest.mark.parametrize("lifetime", [4.0, 3600.0, 86400.0])
def test_windows_scale_with_the_lifetime(lifetime: float) -> None:
    """refresh < hard < expiry, each a bounded fraction of L: a 4 s token is not refreshed on
    every call, a day-long one keeps 20 min (+ jitter) of headroom, a short one half its life."""
    now = time.time()
    token = Token.from_jwt(make_jwt(issued_at=now, lifetime=lifetime))
    r = reply(sent_wall=now)
    t = Timing.of(token, r, Policy())
    left = t.expires - r.sent_at
    assert lifetime * 0.94 <= left <= lifetime
    assert t.valid_from == r.sent_at
    assert t.refresh_at < t.hard_at < t.expires
    window = t.expires - t.refresh_at
    assert min(1200, lifetime / 2) <= window <= min(1200, lifetime / 2) * 1.1 + 1e-9
    assert t.expires - t.hard_at == pytest.approx(min(30, lifetime / 10, window / 2), rel=0.11)


@pytest.mark.parametrize("skew", [-600.0, 600.0])
def test_client_clock_offset_does_not_move_expiry(skew: float) -> None:
    """A token from a server whose clock is 10 minutes off expires L after receipt."""
    now = time.time()  # one reading: a busy machine may pass a while between two
    token = Token.from_jwt(make_jwt(issued_at=now + skew, lifetime=60))
    r = reply(offset=skew, sent_wall=now)
    t = Timing.of(token, r, Policy())
    assert t.expires - r.sent_at == pytest.approx(60 - 3, abs=0.01)  # leeway min(30, L/20)
    assert t.skew == pytest.approx(skew, abs=1)


def test_date_header_offset_is_used_without_iat() -> None:
    """No `iat`: the server's Date header places `exp`; sub-2-second offsets are ignored."""
    now = time.time()
    token = Token.from_jwt(make_jwt(issued_at=now + 300, lifetime=100, claims={"iat": None}))
    assert token.issued_at is None
    t = Timing.of(token, reply(offset=300.0, sent_wall=now), Policy())
    assert t.lifetime == pytest.approx(100, abs=0.1)
    noisy = Timing.of(token, reply(offset=1.5, sent_wall=now), Policy())
    assert noisy.lifetime == pytest.approx(400, abs=0.1)


def test_not_before_ahead_delays_validity() -> None:
    """`nbf` after `iat`: usable only that much after the request was sent."""
    now = time.time()
    token = Token.from_jwt(make_jwt(issued_at=now, not_before=now + 2, lifetime=60))
    r = reply(sent_wall=now)
    assert Timing.of(token, r, Policy()).valid_from == pytest.approx(r.sent_at + 2, abs=0.01)


def test_whole_second_claims_allow_for_truncated_iat() -> None:
    """Integer `iat`/`exp` may have lost up to a second: the expiry is brought forward."""
    now = float(int(time.time()))
    token = Token.from_jwt(make_jwt(issued_at=now, lifetime=3600))
    assert isinstance(token.claims["iat"], int)
    r = reply(sent_wall=now)
    assert Timing.of(token, r, Policy()).expires - r.sent_at == pytest.approx(
        3600 - 1 - 30, abs=0.01
    )


def test_token_without_exp_never_expires_by_clock() -> None:
    """A JWT without `exp` (or an opaque token) is used until a resource refuses it."""
    token = Token.from_jwt(make_jwt(include_exp=False))
    assert token.expires_at is None
    t = Timing.of(token, reply(), Policy())
    assert t.refresh_at == t.hard_at == t.expires == float("inf")


def test_backoff_grows_is_capped_by_lifetime_and_honours_retry_after() -> None:
    """Backoff doubles (with equal jitter), is capped at L/6, and never undercuts Retry-After."""
    p = Policy(retry_initial=1.0, retry_max=60.0)
    assert 0.5 <= p.backoff(1, None, None) <= 1.0
    assert 4.0 <= p.backoff(4, None, None) <= 8.0
    assert p.backoff(30, None, None) <= 60.0
    assert p.backoff(30, 6.0, None) <= 1.0
    assert p.backoff(1, 6.0, 5.0) == 5.0
    assert p.backoff(1, None, 10_000.0) == p.retry_after_max


def test_validity_counts_from_receipt_and_expiry_from_sending() -> None:
    """Each bound errs on its safe side: with 0.3 s between sending and receipt, `nbf` is
    counted from receipt (never too early) and `exp` from sending (never too late)."""
    now = time.time()
    token = Token.from_jwt(make_jwt(issued_at=now, not_before=now + 1, lifetime=60))
    sent = time.monotonic()
    slow = Exchange(sent, now, sent + 0.3, None)
    t = Timing.of(token, slow, Policy())
    assert t.valid_from == pytest.approx(sent + 0.3 + 1, abs=1e-6)
    assert t.expires == pytest.approx(sent + 60 - 3, abs=1e-6)
