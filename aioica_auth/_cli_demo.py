"""The commands that run the local server: `aioica-auth serve` and `aioica-auth demo`.

`run_demo` starts the local ICA-compatible server in-process with short-lived tokens, runs many
tasks through `aiohttp.ClientSession(middlewares=(manager.middleware,))` against its protected
resource, and returns a `DemoResult`; `format_summary` renders that as the closing table. Both
are plain functions so tests can call them with small numbers. `serve_command` and
`demo_command` are what the CLI runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp
import attrs

from ._cli_serve import _on_signals
from ._credentials import ApiKey, fingerprint
from ._errors import IcaError
from ._manager import TokenManager
from ._token import Token
from .testing._faults import TOKEN_ENDPOINTS

if TYPE_CHECKING:
    from .testing import LocalIcaServer

__all__ = [
    "DemoProgress",
    "DemoResult",
    "TokenUse",
    "demo_command",
    "format_latency",
    "format_progress",
    "format_summary",
    "percentile",
    "run_demo",
]


# `--faults`: bursts of 5xx and 429 (Retry-After: 1) on the mint endpoint, at random.
FAULT_RATE_5XX = 0.3
FAULT_RATE_429 = 0.1
_TIMELINE_LINES = 20  # the text timeline shows the first and last tokens beyond this
_REQUEST_TIMEOUT = 30.0


@attrs.frozen
class TokenUse:
    """One token of the run: when the manager got it and how many requests it served.

    Times are seconds since the start of the run.
    """

    fingerprint: str
    how: str  # "minted", "refreshed", or "unseen" (used, but on_token had not reported it)
    received: float | None
    lifetime: float | None
    requests: int
    first_used: float | None
    last_used: float | None


@attrs.frozen
class DemoProgress:
    """A snapshot for the live progress line."""

    elapsed: float
    duration: float
    requests: int
    mints: int
    refreshes: int
    auth_failures: int
    waits: int


@attrs.frozen(kw_only=True)
class DemoResult:
    """What a demo run measured.

    Attributes:
        tasks, duration, lifetime, latency, faults, connections: The settings.
        elapsed: Seconds the tasks ran.
        interrupted: Whether the run was stopped early (Ctrl-C).
        requests: Resource GETs the tasks completed (any status).
        statuses: Their statuses, as the tasks saw them.
        auth_failures: 401s that reached a task (the middleware could not recover).
        other_errors: Everything else that went wrong for a task, by kind.
        crashed: Tasks that died of an unexpected exception.
        token_calls: Requests per token endpoint, as the server counted them.
        token_answers: Statuses the token endpoints answered, as the server counted them.
        server_401s: 401s the resource answered (recovered by the middleware unless they
            also show in `auth_failures`).
        mints, refreshes, failures, waits, invalidations: The manager's counters.
        headers_calls: `manager.headers()` calls timed.
        latency_p50, latency_p99, latency_max: Their latency, in seconds.
        timeline: Every token of the run, in order.
    """

    tasks: int
    duration: float
    lifetime: float
    latency: float
    faults: bool
    connections: int
    elapsed: float
    interrupted: bool
    requests: int
    statuses: Mapping[int, int]
    auth_failures: int
    other_errors: Mapping[str, int]
    crashed: int
    token_calls: Mapping[str, int]
    token_answers: Mapping[int, int]
    server_401s: int
    mints: int
    refreshes: int
    failures: int
    waits: int
    invalidations: int
    headers_calls: int
    latency_p50: float | None
    latency_p99: float | None
    latency_max: float | None
    timeline: tuple[TokenUse, ...]

    @property
    def ok(self) -> bool:
        """No 401 reached a task, no task crashed, and requests went through."""
        return self.auth_failures == 0 and self.crashed == 0 and self.requests > 0

    @property
    def token_endpoint_calls(self) -> int:
        """Requests to any token endpoint, as the server counted them."""
        return sum(self.token_calls.values())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (`--json`)."""
        data = attrs.asdict(self, recurse=True)
        data["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        data["token_answers"] = {str(k): v for k, v in sorted(self.token_answers.items())}
        data["ok"] = self.ok
        data["token_endpoint_calls"] = self.token_endpoint_calls
        return data


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`-quantile (0 < q <= 1) of an ascending sequence; None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def format_latency(seconds: float | None) -> str:
    """A short latency: `0.4 µs`, `12.3 µs`, `1.25 ms`, `2.10 s`; `n/a` for None."""
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _seconds(value: float) -> str:
    return f"{value:g} s"


def format_progress(p: DemoProgress) -> str:
    """The live progress line (without the carriage return)."""
    return (
        f"{p.elapsed:5.1f}/{p.duration:g} s  requests {p.requests:,}  "
        f"tokens minted {p.mints}  refreshes {p.refreshes}  waits {p.waits}  "
        f"401s {p.auth_failures}"
    )


def _counts(counter: Mapping[Any, int]) -> str:
    return ", ".join(f"{key}: {n:,}" for key, n in sorted(counter.items(), key=str))


def _timeline_line(use: TokenUse) -> str:
    at = "t+?" if use.received is None else f"t+{use.received:.2f}s"
    life = "" if use.lifetime is None else f"  lifetime {use.lifetime:g} s"
    span = ""
    if use.first_used is not None and use.last_used is not None:
        span = f"  (answered t+{use.first_used:.2f}s..t+{use.last_used:.2f}s)"
    return (
        f"  {at:>9}  token {use.fingerprint}  {use.how:<9}{life}  "
        f"served {use.requests:,} requests{span}"
    )


def format_summary(r: DemoResult) -> str:
    """The closing summary table and token timeline, as text."""
    rate = r.requests / r.elapsed if r.elapsed > 0 else 0.0
    other = sum(r.other_errors.values())
    rows: list[tuple[str, str, str]] = [
        ("requests (resource GETs by the tasks)", f"{r.requests:,}", f"{rate:,.0f}/s"),
        ("401s reaching the tasks", f"{r.auth_failures:,}", ""),
        (
            "401s answered by the resource",
            f"{r.server_401s:,}",
            "all recovered by the middleware" if r.server_401s and not r.auth_failures else "",
        ),
        ("other errors", f"{other:,}", _counts(r.other_errors)),
        ("tasks crashed", f"{r.crashed:,}", ""),
        (
            "token-endpoint calls (server-counted)",
            f"{r.token_endpoint_calls:,}",
            "answers " + _counts(r.token_answers) if r.token_answers else "",
        ),
        ("tokens minted / refreshed (manager)", f"{r.mints} / {r.refreshes}", ""),
        (
            "renewal failures / waits (manager)",
            f"{r.failures} / {r.waits}",
            "failures retried with backoff" if r.failures else "",
        ),
        ("headers() latency p50", format_latency(r.latency_p50), f"{r.headers_calls:,} calls"),
        (
            "headers() latency p99",
            format_latency(r.latency_p99),
            "includes each task's first call, which waits for the first mint",
        ),
        (
            "headers() latency max",
            format_latency(r.latency_max),
            "a call that waited for a token" if r.waits else "",
        ),
    ]
    label_w = max(len(label) for label, _, _ in rows)
    value_w = max(len(value) for _, value, _ in rows)
    faults = (
        f"5xx {FAULT_RATE_5XX:.0%} + 429 {FAULT_RATE_429:.0%} on the token endpoint"
        if r.faults
        else "off"
    )
    lines = [
        f"aioica_auth demo: {r.tasks:,} tasks (up to {r.connections} connections) "
        f"for {r.elapsed:.1f} s"
        + (" (interrupted)" if r.interrupted else "")
        + f"; token lifetime {_seconds(r.lifetime)}, token endpoint latency "
        + f"{format_latency(r.latency) if r.latency else '0'}, faults: {faults}",
        "",
    ]
    for label, value, note in rows:
        line = f"  {label:<{label_w}}  {value:>{value_w}}"
        lines.append(f"{line}   {note}" if note else line)
    lines += ["", "Token timeline (t = seconds since start):"]
    uses = r.timeline
    if not uses:
        lines.append("  (no token)")
    elif len(uses) <= _TIMELINE_LINES:
        lines.extend(_timeline_line(u) for u in uses)
    else:
        half = _TIMELINE_LINES // 2
        lines.extend(_timeline_line(u) for u in uses[:half])
        lines.append(f"  ... {len(uses) - 2 * half} more tokens ...")
        lines.extend(_timeline_line(u) for u in uses[-half:])
    lines.append("")
    result = "Result (so far)" if r.interrupted else "Result"
    if r.ok:
        lines.append(f"{result}: PASS: zero 401s reached the tasks and no task crashed.")
    elif r.requests == 0 and not r.auth_failures and not r.crashed:
        lines.append(f"{result}: FAIL: no request completed (no token could be had).")
    else:
        lines.append(
            f"{result}: FAIL: {r.auth_failures} 401s reached the tasks, {r.crashed} tasks crashed."
        )
    return "\n".join(lines)


@attrs.define
class _Run:
    """Mutable counters shared by the tasks of one run (one event loop, no locks needed)."""

    start: float
    stopping: bool = False
    requests: int = 0
    auth_failures: int = 0
    statuses: Counter[int] = attrs.Factory(Counter)
    errors: Counter[str] = attrs.Factory(Counter)
    latencies: list[float] = attrs.Factory(list)
    # authorization sent -> [requests answered, first answer, last answer]
    uses: dict[str, list[float]] = attrs.Factory(dict)
    # (received, authorization, fingerprint, lifetime, how)
    events: list[tuple[float, str, str, float | None, str]] = attrs.Factory(list)
    seen_mints: int = 0

    def since_start(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.start

    def note_token(self, token: Token, mints: int) -> None:
        """`on_token`: the manager got `token`, having minted `mints` tokens so far."""
        how = "minted" if mints > self.seen_mints else "refreshed"
        self.seen_mints = mints
        self.events.append(
            (self.since_start(), token.authorization, token.fingerprint, token.lifetime, how)
        )

    def note_answer(self, status: int, auth: str) -> None:
        """The resource answered `status` to a request sent with the `auth` header."""
        now = self.since_start()
        use = self.uses.get(auth)
        if use is None:
            self.uses[auth] = [1, now, now]
        else:
            use[0] += 1
            use[2] = now
        self.requests += 1
        self.statuses[status] += 1
        if status == 401:
            self.auth_failures += 1
        elif status != 200:
            self.errors[f"HTTP {status}"] += 1

    def finish(self) -> float:
        """Tell the tasks to stop; return the seconds they ran."""
        self.stopping = True
        return self.since_start()


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


def _demo_manager(srv: LocalIcaServer, run: _Run) -> TokenManager:
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


async def _timed_headers(run: _Run, manager: TokenManager) -> bool:
    """Time one `manager.headers()`; on an error, count it, pause briefly, return False."""
    t0 = time.perf_counter()
    try:
        await manager.headers()
    except IcaError as exc:
        run.errors[type(exc).__name__] += 1
        await asyncio.sleep(0.05)
        return False
    run.latencies.append(time.perf_counter() - t0)
    return True


async def _get_resource(
    run: _Run, session: aiohttp.ClientSession, url: str, turns: asyncio.Semaphore
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
    run: _Run,
    manager: TokenManager,
    session: aiohttp.ClientSession,
    url: str,
    turns: asyncio.Semaphore,
) -> None:
    """One task of the demo: time `headers()`, then GET the resource, until the run stops."""
    while not run.stopping:
        if not await _timed_headers(run, manager):
            continue
        answer = await _get_resource(run, session, url, turns)
        if answer is not None:
            run.note_answer(*answer)


async def _report(
    run: _Run,
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
    return {e: srv.counts[e] for e in TOKEN_ENDPOINTS if srv.counts[e]}


def _token_answers(srv: LocalIcaServer) -> dict[int, int]:
    """Statuses the token endpoints answered, as the server counted them."""
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
    from .testing import LocalIcaServer  # the CLI's other commands don't need it

    stop = stop if stop is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    run = _Run(start=time.perf_counter())

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
            stats = manager.stats
        srv.clear_faults()
        token_calls = _token_calls(srv)
        token_answers = _token_answers(srv)
        server_401s = srv.statuses["resource", 401]

    return DemoResult(
        tasks=tasks,
        duration=duration,
        lifetime=lifetime,
        latency=latency,
        faults=faults,
        connections=connections,
        elapsed=elapsed,
        interrupted=interrupted,
        requests=run.requests,
        statuses=dict(run.statuses),
        auth_failures=run.auth_failures,
        other_errors=dict(run.errors),
        crashed=crashed,
        token_calls=token_calls,
        token_answers=token_answers,
        server_401s=server_401s,
        mints=stats.mints,
        refreshes=stats.refreshes,
        failures=stats.failures,
        waits=stats.waits,
        invalidations=stats.invalidations,
        headers_calls=len(run.latencies),
        **_latency_stats(run.latencies),
        timeline=_timeline(run),
    )


def _latency_stats(latencies: list[float]) -> dict[str, float | None]:
    latencies.sort()
    return {
        "latency_p50": percentile(latencies, 0.50),
        "latency_p99": percentile(latencies, 0.99),
        "latency_max": latencies[-1] if latencies else None,
    }


def _timeline(run: _Run) -> tuple[TokenUse, ...]:
    uses = dict(run.uses)
    out: list[TokenUse] = []
    for received, auth, fp, life, how in run.events:
        use = uses.pop(auth, None)
        if use is None:
            out.append(TokenUse(fp, how, received, life, 0, None, None))
        else:
            out.append(TokenUse(fp, how, received, life, int(use[0]), use[1], use[2]))
    for auth, (count, first, last) in uses.items():  # used before on_token reported it
        fp = fingerprint(auth.removeprefix("Bearer "))
        out.append(TokenUse(fp, "unseen", None, None, int(count), first, last))
    out.sort(key=lambda u: u.received if u.received is not None else u.first_used or 0.0)
    return tuple(out)


# -- serve -----------------------------------------------------------------------------------


class _ProgressLine:
    """One line rewritten in place with a carriage return."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._width = 0

    def __call__(self, progress: DemoProgress) -> None:
        text = format_progress(progress)
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()


def demo_command(
    *,
    tasks: int,
    duration: float,
    lifetime: float,
    latency: float,
    faults: bool,
    seed: int | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """`aioica-auth demo`: run it with live progress on a TTY, print the summary.

    Returns:
        0 when no 401 reached a task and no task crashed, else 1; 128 + the signal number
        when SIGINT or SIGTERM stopped it early (after printing the summary so far).
    """
    line = _ProgressLine(out) if out.isatty() and not as_json else None
    received: list[int] = []

    async def demo() -> DemoResult:
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            received.append(signum)
            stop.set()

        with _on_signals(on_signal):
            if not as_json:  # after the handlers are in place: Ctrl-C from now on is handled
                print(
                    f"demo: {tasks:,} tasks for {duration:g} s through one TokenManager "
                    f"against a local server (token lifetime {lifetime:g} s)...",
                    file=out,
                    flush=True,
                )
            return await run_demo(
                tasks=tasks,
                duration=duration,
                lifetime=lifetime,
                latency=latency,
                faults=faults,
                seed=seed,
                stop=stop,
                progress=line,
            )

    result = asyncio.run(demo())
    if line is not None:
        line.finish()
    print(json.dumps(result.to_json(), indent=2) if as_json else format_summary(result), file=out)
    if result.interrupted:
        return 128 + (received[0] if received else signal.SIGINT)
    return 0 if result.ok else 1
