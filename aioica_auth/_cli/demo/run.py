"""`aioica-auth demo`, the run: many tasks through one manager's middleware, in-process.

`run_demo` starts the local ICA-compatible server with short-lived tokens, runs many tasks
through `aiohttp.ClientSession(middlewares=(manager.middleware,))` against its protected
resource, and returns a `DemoResult` (`result`); `display` shows it, and `command` is the CLI's
entry. A plain function, so tests can call it with small numbers. The local server (and so
`aiohttp.web`) is imported only when a run starts.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp

from ..._credentials import ApiKey
from ..._errors import IcaError
from ..._manager import TokenManager
from ..._token import Token
from .result import DemoProgress, DemoResult, Run, demo_result

if TYPE_CHECKING:
    from ...testing import LocalIcaServer

__all__ = ["FAULT_RATE_5XX", "FAULT_RATE_429", "run_demo"]


# `--faults`: bursts of 5xx and 429 (Retry-After: 1) on the mint endpoint, at random.
FAULT_RATE_5XX = 0.3
FAULT_RATE_429 = 0.1
_REQUEST_TIMEOUT = 30.0


def _check(name: str, value: float, *, minimum: float, strict: bool) -> None:
    if (
        isinstance(value, bool)
        or not math.isfinite(value)
        or not (value > minimum if strict else value >= minimum)
    ):
        relation = "greater than" if strict else "at least"
        msg = f"{name} must be a number {relation} {minimum:g}"
        raise ValueError(msg)


def _check_settings(
    *, tasks: int, connections: int, duration: float, lifetime: float, latency: float
) -> None:
    """Refuse a setting of `run_demo` out of range (ValueError)."""
    for name, count in (("tasks", tasks), ("connections", connections)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            msg = f"{name} must be a positive integer"
            raise ValueError(msg)
    _check("duration", duration, minimum=0, strict=True)
    _check("lifetime", lifetime, minimum=0, strict=True)
    _check("latency", latency, minimum=0, strict=False)


def _demo_manager(srv: LocalIcaServer, run: Run) -> TokenManager:
    """A manager for the API key of `srv` that reports each token it gets to `run`."""
    manager: TokenManager

    def on_token(token: Token) -> None:
        run.note_token(token, manager.stats.mints)

    manager = TokenManager.for_ica(
        ApiKey(srv.api_key), base_url=srv.ica_base_url, on_token=on_token
    )
    return manager


def _demo_session(manager: TokenManager, connections: int) -> aiohttp.ClientSession:
    """A session through `manager`'s middleware, with up to `connections` connections."""
    return aiohttp.ClientSession(
        middlewares=(manager.middleware,),
        timeout=aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT),
        connector=aiohttp.TCPConnector(limit=connections),
    )


async def _timed_headers(run: Run, manager: TokenManager, *, first: bool) -> bool:
    """Time one `manager.headers()` (a task's `first` call apart: it waits for the first
    mint); on an error, count it, pause briefly, return False."""
    t0 = time.perf_counter()
    try:
        await manager.headers()
    except IcaError as exc:
        run.errors[type(exc).__name__] += 1
        await asyncio.sleep(0.05)
        return False
    (run.first_latencies if first else run.latencies).append(time.perf_counter() - t0)
    return True


async def _get_resource(
    run: Run, session: aiohttp.ClientSession, url: str, turns: asyncio.Semaphore
) -> tuple[int, str] | None:
    """GET `url` in turn: its status and the Authorization sent; None (counted) on an error."""
    try:
        async with turns, session.get(url) as resp:
            await resp.read()
            # What the middleware sent last (the live headers of the request).
            return resp.status, resp.request_info.headers.get("Authorization", "")
    except (aiohttp.ClientError, TimeoutError, IcaError) as exc:
        run.errors[type(exc).__name__] += 1
        return None


async def _worker(
    run: Run,
    manager: TokenManager,
    session: aiohttp.ClientSession,
    url: str,
    turns: asyncio.Semaphore,
) -> None:
    """One task of the demo: time `headers()`, then GET the resource, until the run stops."""
    first = True
    while not run.stopping:
        if not await _timed_headers(run, manager, first=first):
            continue
        first = False
        answer = await _get_resource(run, session, url, turns)
        if answer is not None:
            run.note_answer(*answer)


async def _report(
    run: Run,
    manager: TokenManager,
    progress: Callable[[DemoProgress], object],
    interval: float,
    duration: float,
) -> None:
    """Call `progress` with a snapshot every `interval` seconds until the run stops."""
    while not run.stopping:
        await asyncio.sleep(interval)
        stats = manager.stats
        progress(
            DemoProgress(
                elapsed=run.since_start(),
                duration=duration,
                requests=run.requests,
                mints=stats.mints,
                refreshes=stats.refreshes,
                auth_failures=run.auth_failures,
                waits=stats.waits,
            )
        )


async def _stopped_early(stop: asyncio.Event, duration: float) -> bool:
    """Wait until `stop` is set (True) or `duration` seconds have passed (False)."""
    try:
        async with asyncio.timeout(duration):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def _wind_down(
    workers: list[asyncio.Task[None]], reporter: asyncio.Task[None] | None, grace: float
) -> set[asyncio.Task[None]]:
    """Give `workers` `grace` seconds to finish, then cancel the rest and the reporter.

    Returns:
        The workers that finished by themselves.
    """
    done, pending = await asyncio.wait(workers, timeout=grace)
    for task in pending:
        task.cancel()
    if reporter is not None:
        reporter.cancel()
        pending.add(reporter)
    await asyncio.gather(*pending, return_exceptions=True)
    return done


def _crashed(done: set[asyncio.Task[None]]) -> int:
    """How many of the finished tasks died of an exception."""
    return sum(1 for t in done if not t.cancelled() and t.exception() is not None)


def _token_calls(srv: LocalIcaServer) -> dict[str, int]:
    """Requests per token endpoint (the ones that had any), as the server counted them."""
    from ...testing._faults import TOKEN_ENDPOINTS

    return {e: srv.counts[e] for e in TOKEN_ENDPOINTS if srv.counts[e]}


def _token_answers(srv: LocalIcaServer) -> dict[int, int]:
    """Statuses the token endpoints answered, as the server counted them."""
    from ...testing._faults import TOKEN_ENDPOINTS

    answers: Counter[int] = Counter()
    for (endpoint, status), n in srv.statuses.items():
        if endpoint in TOKEN_ENDPOINTS:
            answers[status] += n
    return dict(answers)


async def run_demo(
    *,
    tasks: int = 1000,
    duration: float = 15.0,
    lifetime: float = 4.0,
    latency: float = 0.05,
    faults: bool = False,
    connections: int = 100,
    seed: int | None = None,
    stop: asyncio.Event | None = None,
    progress: Callable[[DemoProgress], object] | None = None,
    progress_interval: float = 0.25,
    grace: float = 5.0,
) -> DemoResult:
    """Run `tasks` tasks through one manager's middleware against a local server.

    Each task loops until `duration` seconds have passed (or `stop` is set): it times
    `await manager.headers()`, then GETs the protected resource through a session that uses
    the manager's middleware, counting statuses; a 401 that reaches the task is an auth
    failure.

    Args:
        tasks: Concurrent tasks.
        duration: Seconds to run.
        lifetime: Token lifetime the local server issues, in seconds.
        latency: Seconds the token endpoint takes to answer.
        faults: Inject random 5xx and 429 (Retry-After: 1) answers on the token endpoint.
        connections: HTTP connections the tasks share (aiohttp's default limit, 100). The
            tasks take turns through a fair semaphore: aiohttp's pool lets a task that just
            released a connection take it again before woken waiters, which starves most
            of them for seconds, and a request that waits that long carries a stale token.
        seed: Seed of the random faults, for a reproducible run.
        stop: Set it to end the run early (the result is then marked `interrupted`).
        progress: Called about every `progress_interval` seconds with a snapshot.
        progress_interval: Seconds between progress calls.
        grace: Seconds tasks get to finish their last request before they are cancelled.

    Returns:
        The measurements.

    Raises:
        ValueError: a setting out of range.
    """
    _check_settings(
        tasks=tasks, connections=connections, duration=duration, lifetime=lifetime, latency=latency
    )
    settings = {
        "tasks": tasks, "duration": duration, "lifetime": lifetime, "latency": latency,
        "faults": faults, "connections": connections,
    }  # fmt: skip
    from ...testing import LocalIcaServer  # the CLI's other commands don't need it

    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    run = Run(start=time.perf_counter())

    async with LocalIcaServer(lifetime=lifetime, latency=latency) as srv:
        if faults:
            srv.random_faults(
                endpoints=["ica.create"],
                rate_5xx=FAULT_RATE_5XX,
                rate_429=FAULT_RATE_429,
                retry_after="1",
                seed=seed,
            )
        manager = _demo_manager(srv, run)
        url = srv.resource_url
        turns = asyncio.Semaphore(connections)
        async with manager, _demo_session(manager, connections) as session:
            workers = [
                loop.create_task(_worker(run, manager, session, url, turns), name=f"demo-task-{i}")
                for i in range(tasks)
            ]
            reporter = (
                loop.create_task(_report(run, manager, progress, progress_interval, duration))
                if progress is not None
                else None
            )
            try:
                interrupted = await _stopped_early(stop, duration)
            finally:
                elapsed = run.finish()
                done = await _wind_down(workers, reporter, grace)
            crashed = _crashed(done)
        # Read once the manager is closed: a renewal that landed during the wind-down or the
        # close is counted here as it is in the timeline (its on_token runs soon after).
        stats = manager.stats
        srv.clear_faults()
        token_calls = _token_calls(srv)
        token_answers = _token_answers(srv)
        server_401s = srv.statuses["resource", 401]

    return demo_result(
        settings, run, elapsed=elapsed, interrupted=interrupted, crashed=crashed, stats=stats,
        server=(token_calls, token_answers, server_401s),
    )  # fmt: skip
