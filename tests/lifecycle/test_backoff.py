"""classify, Backoff with a seeded rng, remembered failures, and the manager under failures."""

from __future__ import annotations

import inspect
import logging
import random
from typing import Any

import aiohttp
import pytest

from aioica_auth import _errors
from aioica_auth._errors import (
    ApiError,
    BadRequestError,
    ForbiddenError,
    IcaError,
    InvalidResponseError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TokenUnavailableError,
    TransportError,
    TransportTimeoutError,
    UnauthorizedError,
    error_class,
)
from aioica_auth._lifecycle.backoff import (
    Backoff,
    RememberedFailure,
    Severity,
    SoftFailureError,
    classify,
)
from aioica_auth._lifecycle.lease import Provenance
from aioica_auth._lifecycle.policy import Policy
from aioica_auth._wire.core import HttpCore
from aioica_auth.testing import make_jwt

from ..fakes import (
    ManualClock,
    RunningClock,
    ScriptedSource,
    Step,
    manager,
    must_wait_token,
)
from ..support import wait_until

T, P = Severity.TRANSIENT, Severity.PERMANENT
# random.Random(42).random(), the first nine draws: the jitter of the seeded backoffs below.
DRAWS_42 = [
    0.6394267984578837,
    0.025010755222666936,
    0.27502931836911926,
    0.22321073814882275,
    0.7364712141640124,
    0.6766994874229113,
    0.8921795677048454,
    0.08693883262941615,
    0.4219218196852704,
]

CLASSIFIED: list[tuple[IcaError, Severity]] = [
    (IcaError("something of ours"), T),
    # Neither reaches a renewal (a store's failure is the store's to absorb; discovery runs
    # before a manager exists): classified as any error of ours is.
    (_errors.TokenStoreError("store down"), T),
    (_errors.DiscoveryError("nothing found"), T),
    (ApiError(409), P),
    (ApiError(408), T),
    (BadRequestError(400), P),
    (UnauthorizedError(401), P),
    (ForbiddenError(403), P),
    (NotFoundError(404), P),
    (RateLimitError(429), T),
    (RateLimitError(429, retry_after=30.0), T),
    (ServerError(500), T),
    (ServerError(502), T),
    (ServerError(503), T),
    (ServerError(504), T),
    (InvalidResponseError(200, reason="not JSON"), P),
    (TransportError("connection refused"), T),
    (TransportTimeoutError("timed out"), T),
    (TokenUnavailableError("no valid token"), P),
    (SoftFailureError("no later expiry"), T),
]


@pytest.mark.parametrize(
    ("error", "severity"), CLASSIFIED, ids=[f"{type(e).__name__}-{s.value}" for e, s in CLASSIFIED]
)
def test_classify_each_error_class(error: IcaError, severity: Severity) -> None:
    """Refusals, malformed answers and unavailability are permanent; the rest is transient."""
    assert classify(error) is severity


def test_classify_covers_every_error_class() -> None:
    """Every exception class aioica_auth raises has a classify case above."""
    classes = {
        obj
        for name in _errors.__all__
        if inspect.isclass(obj := getattr(_errors, name)) and issubclass(obj, BaseException)
    } | {SoftFailureError}
    assert classes <= {type(e) for e, _ in CLASSIFIED}


@pytest.mark.parametrize("status", range(400, 600))
def test_every_4xx_but_408_and_429_is_permanent_and_every_5xx_transient(status: int) -> None:
    """For the error each status maps to: 4xx is a refusal except 408 and 429; 5xx is transient."""
    error = error_class(status)(status)
    refusal = status < 500 and status not in {408, 429}
    assert classify(error) is (P if refusal else T)


@pytest.mark.parametrize(
    "torn",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_torn_connection_is_transient(
    wire: Any, session: aiohttp.ClientSession, torn: Exception
) -> None:
    """A connection torn during the token POST is a TransportError: retried, never remembered."""
    core = HttpCore.create(session, "https://ica.example.org/ica/rest", 5.0)
    wire.post("https://ica.example.org/ica/rest/api/tokens", exception=torn)
    with pytest.raises(TransportError) as info:
        await core.request("POST", "/api/tokens", headers={}, ok=(201,))
    cause = info.value.__cause__
    assert cause is not None
    assert not isinstance(cause, aiohttp.ClientError)  # sanitised: aiohttp's own never chained
    assert classify(info.value) is T
    backoff = Backoff(Policy(), random.Random(42))
    delay = backoff.failed(info.value, 100.0, None)
    assert backoff.remembered is None
    assert delay == pytest.approx(0.25 * (1 + DRAWS_42[0]))


# -- Backoff -------------------------------------------------------------------------------------


def test_backoff_delays_are_exact_with_a_seeded_rng() -> None:
    """Equal jitter on a doubling base from 0.5 s capped at 60 s: base * (1 + u) / 2, u seeded."""
    backoff = Backoff(Policy(), random.Random(42))
    bases = [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    now = 100.0
    for failures, (base, u) in enumerate(zip(bases, DRAWS_42, strict=True), start=1):
        delay = backoff.failed(ServerError(503), now, None)
        assert delay == pytest.approx(base * (1 + u) / 2), failures
        assert backoff.failures == failures
        assert backoff.next_attempt == now + delay
        assert not backoff.ready(now + delay - 1e-6)
        assert backoff.ready(now + delay)
        now += delay


def test_backoff_grows_and_stays_within_its_bounds() -> None:
    """Each delay lies in [base/2, base], and the base never passes retry_max."""
    policy = Policy(retry_initial=0.1, retry_max=5.0)
    backoff = Backoff(policy, random.Random(3))
    for failures in range(1, 40):
        base = min(5.0, 0.1 * 2 ** (failures - 1))
        delay = backoff.failed(TransportError("refused"), 0.0, None)
        assert base / 2 <= delay <= base


@pytest.mark.parametrize(
    ("lifetime", "cap"), [(60.0, 10.0), (3600.0, 60.0), (0.06, 0.05), (-5.0, 0.05)]
)
def test_backoff_is_capped_by_a_sixth_of_the_lifetime(lifetime: float, cap: float) -> None:
    """After many failures the delay is cap * (1 + u) / 2, cap = min(retry_max, max(L/6, 50 ms))."""
    backoff = Backoff(Policy(), random.Random(42))
    delays = [backoff.failed(ServerError(503), 0.0, lifetime) for _ in DRAWS_42]
    assert delays[-1] == pytest.approx(cap * (1 + DRAWS_42[-1]) / 2)
    assert max(delays) <= cap


def test_retry_after_is_honoured_over_the_backoff() -> None:
    """A 429 asking for 42 s waits 42 s, though the backoff (and a 60 s token's cap) is shorter."""
    backoff = Backoff(Policy(), random.Random(42))
    assert backoff.failed(RateLimitError(429, retry_after=42.0), 0.0, 60.0) == 42.0
    assert backoff.next_attempt == 42.0


@pytest.mark.parametrize(("retry_after_max", "expected"), [(300.0, 300.0), (5.0, 5.0)])
def test_retry_after_is_capped(retry_after_max: float, expected: float) -> None:
    """A Retry-After of a day is cut to retry_after_max."""
    backoff = Backoff(Policy(retry_after_max=retry_after_max), random.Random(42))
    assert backoff.failed(RateLimitError(429, retry_after=86_400.0), 0.0, None) == expected


def test_a_short_retry_after_does_not_shorten_the_backoff() -> None:
    """Retry-After 1 s after seven failures: the backoff of 32 s base still applies."""
    backoff = Backoff(Policy(), random.Random(42))
    for _ in range(6):
        backoff.failed(ServerError(503), 0.0, None)
    delay = backoff.failed(ServerError(503, retry_after=1.0), 0.0, None)
    assert delay == pytest.approx(32 * (1 + DRAWS_42[6]) / 2)


def test_a_permanent_failure_is_remembered_until_its_time() -> None:
    """A 401 at t=100 is re-raised without a request until t=110 (error_memory), then forgotten."""
    backoff = Backoff(Policy(), random.Random(42))
    error = UnauthorizedError(401)
    delay = backoff.failed(error, 100.0, None)
    assert delay == 10.0  # the jittered 0.5 s backoff is raised to the memory
    assert backoff.remembered == RememberedFailure(error, 110.0)
    assert not backoff.ready(109.999)
    remembered = backoff.remembered_at(109.999)
    assert remembered is not None
    assert remembered.error is error
    assert backoff.remembered_at(110.0) is None
    assert backoff.remembered is None  # forgotten, not just hidden
    assert backoff.ready(110.0)


def test_a_transient_failure_is_not_remembered() -> None:
    """A 503 sets the next attempt but leaves nothing to re-raise."""
    backoff = Backoff(Policy(), random.Random(42))
    backoff.failed(ServerError(503), 100.0, None)
    assert backoff.remembered_at(100.0) is None
    assert backoff.last is not None


def test_zero_error_memory_remembers_nothing_past_the_moment() -> None:
    """error_memory=0: a permanent failure does not block the next attempt by memory."""
    backoff = Backoff(Policy(error_memory=0), random.Random(42))
    backoff.failed(ForbiddenError(403), 100.0, None)
    assert backoff.remembered_at(100.0) is None


def test_remember_alone_counts_no_failure() -> None:
    """remember() (a session found over) re-raises for error_memory without moving the backoff."""
    backoff = Backoff(Policy(error_memory=7.0), random.Random(42))
    error = TokenUnavailableError("session over")
    backoff.remember(error, 50.0)
    assert backoff.remembered == RememberedFailure(error, 57.0)
    assert (backoff.failures, backoff.next_attempt) == (0, 0.0)


def test_succeeded_resets_everything() -> None:
    """A success ends the run: it returns the count, clears memory, and the next failure starts
    over at the initial delay."""
    backoff = Backoff(Policy(), random.Random(42))
    backoff.failed(ServerError(503), 0.0, None)
    backoff.failed(ServerError(503), 1.0, None)
    backoff.failed(UnauthorizedError(401), 2.0, None)
    assert backoff.succeeded() == 3
    assert (backoff.failures, backoff.next_attempt, backoff.last) == (0, 0.0, None)
    assert backoff.remembered is None
    assert backoff.ready(0.0)
    assert backoff.succeeded() == 0
    assert 0.25 <= backoff.failed(ServerError(503), 10.0, None) <= 0.5


def test_a_backoff_survives_n_transient_failures() -> None:
    """Ten thousand failures in a row: no overflow, delays within retry_max, none remembered."""
    backoff = Backoff(Policy(), random.Random(42))
    delays = [backoff.failed(TransportError("down"), float(i), None) for i in range(10_000)]
    assert backoff.failures == 10_000
    assert min(delays[8:]) >= 30.0
    assert max(delays) <= 60.0
    assert backoff.remembered is None


# -- the manager under failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ServerError(503),
        TransportError("torn"),
        RateLimitError(429),
        UnauthorizedError(401),
        InvalidResponseError(200, reason="not JSON"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_error_never_displaces_a_valid_token(error: IcaError) -> None:
    """A failed renewal leaves the valid token in use and serves it; a permanent failure is then
    remembered (no second request), a transient one is retried."""
    clock = ManualClock()
    given = must_wait_token(clock)
    source = ScriptedSource(clock, [error], initial=given)
    async with manager(source, clock, retry_initial=0.001, retry_max=0.002) as m:
        for _ in range(2):
            assert await m.headers() == {"Authorization": "Bearer " + given}
            current = m._lease
            assert current is not None
            assert current.token.value == given
            assert current.provenance is Provenance.GIVEN
    permanent = classify(error) is P
    assert len(source.calls) == (1 if permanent else 2)
    assert m.stats.failures == len(source.calls)


async def test_the_loop_survives_n_transient_failures(caplog: pytest.LogCaptureFixture) -> None:
    """With no caller waiting, the background renewal rides out six transient failures of every
    kind (one a no-progress answer) and adopts the seventh answer."""
    clock = RunningClock()
    wall = clock.time()
    given = make_jwt(issued_at=wall - 3000, lifetime=3600)  # 10 min left: refresh due
    older = make_jwt(issued_at=wall - 3000, lifetime=3500)
    newer = make_jwt(issued_at=wall, lifetime=3600)
    script: list[Step] = [
        TransportError("torn"),
        ServerError(503),
        ApiError(408),
        RateLimitError(429),
        TransportTimeoutError("timed out"),
        older,
        newer,
    ]
    source = ScriptedSource(clock, script, initial=given)
    # maturity=0: the new token is handed out at once (not after the given one's last minute).
    async with manager(source, clock, retry_initial=0.001, retry_max=0.002, maturity=0) as m:
        await wait_until(lambda: m.stats.mints == 1)
        assert await m.headers() == {"Authorization": "Bearer " + newer}
        assert m.stats.failures == 6
        assert len(source.calls) == 7
        # The live token was offered for renewal every time.
        assert all(c is not None and c.value == given for c in source.calls)
    assert any("recovered after 6 failures" in r.getMessage() for r in caplog.records)
    assert all(r.levelno < logging.ERROR for r in caplog.records)
