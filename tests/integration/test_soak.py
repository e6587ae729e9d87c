"""The fault matrix as a bounded soak: 1,000 tasks, short tokens, a skewed clock, random faults
on the token endpoint and the resource, and one full outage of the token endpoint.

Runs in the normal suite in a short version (~12 s). ``AIOICA_SOAK_SECONDS=60`` runs the long
one; ``AIOICA_SOAK_SEED=<n>`` replays a seed (the fault sequence and the clock skew; task
interleaving is up to the scheduler). The one-line summary printed at the end (run with
``-s``) is meant to be pasted into a report.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import time
from typing import Any

import aiohttp
import pytest

from aioica_auth import ApiKey, Token, TokenManager, TokenUnavailableError
from aioica_auth.testing import LocalIcaServer

from ..support import wait_until

pytestmark = pytest.mark.slow
SOAK_SECONDS = float(os.environ.get("AIOICA_SOAK_SECONDS") or 12.0)
TASKS = 1000
LIFETIME = 3.0  # seconds from iat to exp of every token but the outage one (see below)
MAX_SKEW = 600.0  # the server clock is off by up to +-10 minutes
RATE_5XX, RATE_429, RATE_DROP = 0.05, 0.01, 0.005
RETRY_AFTER = 1.0  # seconds, on every injected 429
# One full outage of the token endpoint: 5 s in the long run, ~1.2 s in the short one.
OUTAGE = min(5.0, max(1.2, SOAK_SECONDS / 12))
REQUEST_TIMEOUT = 5.0  # the manager's per-request timeout for the token endpoint
SLOW_CALL = 0.1  # a headers() call this slow must have been one of the manager's waits
# Requests on the wire at once. The 1,000 tasks queue for this gate *before* the middleware
# attaches the bearer, as a service bounds its concurrency. Without it they queue in aiohttp's
# connection pool (100 connections), *after* the middleware ran: with the loop saturated on a
# busy 2-core box that wait reached 3 s (p99), longer than a 3 s token lives, so requests
# reached the resource expired and their one replay queued just as long (see the report).
# That measures the box, not the library: production tokens have a 5-minute refresh window.
IN_FLIGHT = 50
PAUSE = (0.02, 0.1)  # seconds between a task's requests: yield, keep the loop bounded

_RESOURCE_FAULT_STATUSES = {429, 500, 502, 503, 504}


def _windows(lifetime: float, policy: Any) -> tuple[float, float, float]:
    """(refresh point, hard point, expiry) of a token, in seconds after it was issued.

    The documented defaults (see `aioica_auth._lifecycle.policy`): the token counts as expired
    `leeway` early, the background refresh starts `min(refresh_margin, L/2)` before that (brought
    forward by up to `jitter` of it), callers wait from `min(min_validity, L/10)` before it.
    """
    expires = lifetime - min(policy.leeway, lifetime / 20)
    window = min(policy.refresh_margin, lifetime / 2)
    hard = min(policy.min_validity, lifetime / 10, window / 2)
    return expires - window, expires - hard, expires


def _outage_plan(policy: Any) -> tuple[float, float]:
    """(lifetime of the token in hand during the outage, outage start after its issue).

    The outage must (a) be shorter than what the token in hand still has, and (b) actually
    hit that token's refresh, or it would test nothing. So it ends midway between the refresh
    point and the hard point (where callers would start waiting), and starts `OUTAGE` earlier.
    A 3 s token has 2.85 s of validity and cannot cover a 5 s outage: for the long run the
    server issues that one token with a longer lifetime (just long enough), then goes back
    to 3 s.
    """
    lifetime = LIFETIME
    while True:
        refresh, hard, _ = _windows(lifetime, policy)
        end = (refresh + hard) / 2
        if end - OUTAGE >= 0.3:  # room for the test to see the token and arm the outage
            return lifetime, end - OUTAGE
        lifetime += 0.1


def _is_server_task(task: asyncio.Task[Any]) -> bool:
    """Tasks of the local server's connection handlers (aiohttp.web), not the client's."""
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", "")
    return name.startswith(("RequestHandler.", "BaseRequestHandler.", "LocalIcaServer."))


@pytest.mark.soak
@pytest.mark.timeout(int(2 * SOAK_SECONDS + 90))
async def test_fault_matrix_soak(servers: Any, caplog: pytest.LogCaptureFixture) -> None:
    """1,000 tasks through the middleware for SOAK_SECONDS: no request fails because of auth;
    token requests stay near the ideal; headers() waits only when a token is past its hard
    point; no task outlives aclose(); no secret in the DEBUG logs."""
    duration = SOAK_SECONDS
    assert duration >= 8, "AIOICA_SOAK_SECONDS must be at least 8"
    seed = int(os.environ.get("AIOICA_SOAK_SEED") or random.SystemRandom().randrange(2**31))
    rng = random.Random(seed)
    skew = rng.uniform(-MAX_SKEW, MAX_SKEW)
    print(f"\nsoak: seed={seed} (AIOICA_SOAK_SEED={seed} replays it), skew={skew:+.1f} s")
    # The server is not under test: its per-request DEBUG lines would dominate the captured
    # log (and the CPU) for nothing. The library's logger stays at DEBUG and is scanned.
    caplog.set_level(logging.INFO, logger="aioica_auth.testing")

    srv: LocalIcaServer = await servers(lifetime=LIFETIME, clock_offset=skew)
    srv.random_faults(
        endpoints=["ica.create", "resource"],
        rate_5xx=RATE_5XX,
        rate_429=RATE_429,
        rate_drop=RATE_DROP,
        retry_after=f"{RETRY_AFTER:g}",
        seed=seed,
    )
    tasks_before = set(asyncio.all_tasks())

    seen: list[Token] = []
    new_token = asyncio.Event()

    def on_token(token: Token) -> None:
        seen.append(token)
        new_token.set()

    manager = TokenManager.for_ica(
        ApiKey(srv.api_key),
        base_url=srv.ica_base_url,
        on_token=on_token,
        request_timeout=REQUEST_TIMEOUT,
    )
    outcomes: collections.Counter[str] = collections.Counter()
    auth_failures: list[str] = []
    latencies: list[float] = []
    outage_info: dict[str, Any] = {}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def next_token(lifetime: float) -> Token:
        while True:
            new_token.clear()
            await new_token.wait()
            token = seen[-1]
            if token.lifetime is not None and abs(token.lifetime - lifetime) < 0.01:
                return token

    async def run_outage() -> None:
        """Arm the one outage around the refresh of a freshly adopted token."""
        await asyncio.sleep(duration * 0.25)
        lifetime, start_after = _outage_plan(manager.policy)
        while True:
            srv.lifetime = lifetime
            token = await next_token(lifetime)
            srv.lifetime = LIFETIME
            assert token.issued_at is not None
            assert token.expires_at is not None
            # Time since the server issued it, in the server's own clock (skew included).
            age = srv.now() - token.issued_at.timestamp()
            if age <= start_after:
                break
            # The loop (a busy machine) saw this token too late to arm the outage in time:
            # an outage begun now would outlast the token, which is not the case under test.
        await asyncio.sleep(start_after - age)
        fault = srv.outage("ica.create", status=503)
        started = srv.now()
        await asyncio.sleep(OUTAGE)
        # A starved loop (a busy machine) can start the refresh after the planned end: hold
        # the outage until it has refused one, but never past the hard point of the token in
        # hand (where callers start waiting), so the token still outlives the outage.
        hard_at = token.issued_at.timestamp() + _windows(lifetime, manager.policy)[1]
        with contextlib.suppress(AssertionError):  # not hit by then: the assertion below says so
            await wait_until(lambda: fault.hits > 0, max(0.0, hard_at - srv.now()))
        srv.remove_fault(fault)
        ended = srv.now()
        outage_info.update(
            lifetime=lifetime,
            length=ended - started,
            hits=fault.hits,
            token_left_at_end=token.expires_at.timestamp() - ended,
        )

    async def worker(index: int, http: aiohttp.ClientSession, end: float) -> None:
        wrng = random.Random(seed * 1_000_003 + index)
        await asyncio.sleep(wrng.uniform(0, 1.0))  # stagger the start
        while time.monotonic() < end:
            async with gate:
                await one_request(http)
            await asyncio.sleep(wrng.uniform(*PAUSE))

    async def one_request(http: aiohttp.ClientSession) -> None:
        started = time.perf_counter()
        try:
            await manager.headers()
        except TokenUnavailableError as exc:
            auth_failures.append(f"headers(): {exc}")
        latencies.append(time.perf_counter() - started)
        outcomes["attempted"] += 1
        try:
            async with http.get(srv.resource_url) as response:
                await response.read()
                status = response.status
        except TokenUnavailableError as exc:
            outcomes["auth: TokenUnavailableError"] += 1
            auth_failures.append(f"GET: {exc}")
        except TimeoutError:
            outcomes["other: timeout"] += 1  # no fault here hangs: this is not expected
        except aiohttp.ClientConnectionError:
            outcomes["resource: dropped"] += 1
        except Exception as exc:
            outcomes[f"other: {type(exc).__name__}"] += 1
        else:
            if status == 200:
                outcomes["ok"] += 1
            elif status == 401:
                outcomes["auth: 401"] += 1
                auth_failures.append("GET: 401")
            elif status == 429:
                outcomes["resource: 429"] += 1
            elif status in _RESOURCE_FAULT_STATUSES:
                outcomes["resource: 5xx"] += 1
            else:
                outcomes[f"other: HTTP {status}"] += 1

    timeout = aiohttp.ClientTimeout(total=30)
    try:
        await manager.headers()  # the first token (may wait out injected faults: not timed)
        async with aiohttp.ClientSession(
            middlewares=(manager.middleware,), timeout=timeout
        ) as http:
            t0 = time.monotonic()
            end = t0 + duration
            outage = asyncio.create_task(run_outage())
            await asyncio.gather(*(worker(i, http, end) for i in range(TASKS)))
            await asyncio.wait_for(outage, timeout=30)
            elapsed = time.monotonic() - t0
    finally:
        stats = manager.stats
        await manager.aclose()
    srv.clear_faults()
    for _ in range(3):
        await asyncio.sleep(0)
    new_tasks = [t for t in asyncio.all_tasks() - tasks_before if not t.done()]
    leaked = [t for t in new_tasks if not _is_server_task(t)]
    server_tasks = len(new_tasks) - len(leaked)

    # -- the numbers -------------------------------------------------------------------------
    attempted = outcomes["attempted"]
    resource_faults = sum(n for k, n in outcomes.items() if k.startswith("resource:"))
    auth = len(auth_failures)
    other = {k: n for k, n in outcomes.items() if k.startswith("other:")}
    server_fault_answers = sum(srv.statuses["resource", s] for s in _RESOURCE_FAULT_STATUSES)
    server_drops = srv.counts["resource"] - sum(
        n for (endpoint, _), n in srv.statuses.items() if endpoint == "resource"
    )
    token_requests = srv.counts["ica.create"]
    refresh_interval = 0.5 * LIFETIME
    ideal = elapsed / refresh_interval
    bound = 3 * ideal + 10
    latencies.sort()
    worst = latencies[-1]
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    slow = sum(1 for x in latencies if x >= SLOW_CALL)
    secrets = {srv.api_key} | {t.value for t in seen} | {t.value.rsplit(".", 1)[-1] for t in seen}
    log_text = caplog.text
    leaks = sum(1 for s in secrets if s and s in log_text)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]

    print(
        f"soak: resource 401s recovered by the middleware: {srv.statuses['resource', 401]}; "
        f"token endpoint: { {s: n for (e, s), n in srv.statuses.items() if e == 'ica.create'} }"
        f"; resource connections dropped (server side) {server_drops}; manager: {stats}; "
        f"outage: {outage_info}; server handler tasks ignored in the leak check {server_tasks}"
    )
    if auth_failures:
        print("soak: auth failures (first 5):", *auth_failures[:5], sep="\n  ")
    summary = (
        f"SOAK {elapsed:.0f} s, {TASKS} tasks, seed {seed}, skew {skew:+.0f} s | "
        f"requests {attempted}: ok {outcomes['ok']}, failed not-auth {resource_faults} "
        f"(5xx {outcomes['resource: 5xx']}, 429 {outcomes['resource: 429']}, "
        f"dropped {outcomes['resource: dropped']}), failed because of auth {auth}, "
        f"other {sum(other.values())} | token requests {token_requests} "
        f"(ideal {ideal:.1f}, bound {bound:.0f}; outage {outage_info.get('length', 0):.1f} s "
        f"refused {outage_info.get('hits', 0)}) | headers() max {worst * 1e3:.0f} ms, "
        f"p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e3:.1f} ms, waits {stats.waits} | "
        f"leaked tasks {len(leaked)} | secrets in logs {leaks}"
    )
    print(summary)

    # -- the verdict ---------------------------------------------------------------------------
    assert attempted >= TASKS  # every task made requests
    assert auth == 0, auth_failures[:5]
    assert not other, other
    assert outcomes["ok"] + resource_faults == attempted
    # Every non-auth failure was one of the resource's injected faults (the server counted
    # them: a 5xx/429 it sent, or a connection it dropped), nothing else.
    assert outcomes["resource: 5xx"] + outcomes["resource: 429"] <= server_fault_answers
    assert outcomes["resource: dropped"] <= server_drops
    # The outage happened, was shorter than what the token in hand still had, and refused at
    # least one refresh of it.
    assert outage_info["length"] >= OUTAGE
    assert outage_info["token_left_at_end"] > 0
    assert outage_info["hits"] >= 1
    # Token requests: about one per refresh interval; injected faults add retries, bounded.
    assert stats.mints >= elapsed / (2 * LIFETIME)
    assert token_requests <= bound, (token_requests, bound)
    # headers() latency. It is served from the cache with no await until the hard point (the
    # last tenth of a token's life), whatever the faults: so a slow call must be one of the
    # manager's counted waits, and waits are rare: only while a renewal is late (a failed
    # token request, a slow one on a loaded box, the very first token), and each such
    # episode stalls at most the IN_FLIGHT calls under way, never the 1,000 tasks. A wait
    # lasts until the renewal succeeds.
    # With 3 s tokens a 429 on a refresh (Retry-After 1 s honoured) followed by further
    # injected failures (each a capped backoff, L/6 = 0.5 s) can run past the hard point:
    # callers then wait by design.
    # So 1 s is not a bound; Retry-After + two capped backoffs + request time is.
    assert slow <= stats.waits, (slow, stats.waits)
    assert stats.waits <= (stats.mints + stats.failures + 1) * IN_FLIGHT, stats.waits
    assert p50 < 0.001  # the hot path: no I/O, no lock
    assert worst < RETRY_AFTER + 2 * (LIFETIME / 6) + 0.5, worst
    # Hygiene.
    assert not leaked, leaked
    assert leaks == 0
    assert not errors, [r.getMessage() for r in errors[:5]]
