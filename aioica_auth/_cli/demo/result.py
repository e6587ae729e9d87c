"""What a demo run measures: the counters its tasks share (`Run`), and what is reported
(`DemoResult`, `TokenUse`, `DemoProgress`) with its statistics.

Shared by the run (`run`) and its display (`display`); imports neither.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..._credentials import fingerprint
from ..._manager import ManagerStats
from ..._token import Token

__all__ = [
    "DemoProgress",
    "DemoResult",
    "Run",
    "TokenUse",
    "demo_result",
    "latency_stats",
    "percentile",
    "timeline",
]


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
        first_calls: Each task's first `manager.headers()` call, timed apart: it waits for
            the first mint (the token endpoint's latency), which no later call does.
        first_call_p50, first_call_max: Their latency, in seconds.
        headers_calls: The later `manager.headers()` calls timed (the steady state).
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
    first_calls: int
    first_call_p50: float | None
    first_call_max: float | None
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


def latency_stats(latencies: list[float], prefix: str = "latency") -> dict[str, float | None]:
    """p50, p99 and max of `latencies` (sorted in place), keyed `<prefix>_p50` and so on."""
    latencies.sort()
    return {
        f"{prefix}_p50": percentile(latencies, 0.50),
        f"{prefix}_p99": percentile(latencies, 0.99),
        f"{prefix}_max": latencies[-1] if latencies else None,
    }


@attrs.define
class Run:
    """Mutable counters shared by the tasks of one run (one event loop, no locks needed)."""

    start: float
    stopping: bool = False
    requests: int = 0
    auth_failures: int = 0
    statuses: Counter[int] = attrs.Factory(Counter)
    errors: Counter[str] = attrs.Factory(Counter)
    latencies: list[float] = attrs.Factory(list)  # headers() after each task's first call
    first_latencies: list[float] = attrs.Factory(list)  # each task's first headers() call
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


def demo_result(
    settings: Mapping[str, Any],
    run: Run,
    *,
    elapsed: float,
    interrupted: bool,
    crashed: int,
    stats: ManagerStats,
    server: tuple[dict[str, int], dict[int, int], int],
) -> DemoResult:
    """The measurements of a finished run."""
    token_calls, token_answers, server_401s = server
    first = latency_stats(run.first_latencies, "first_call")
    steady = latency_stats(run.latencies)
    return DemoResult(
        **settings,
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
        first_calls=len(run.first_latencies),
        first_call_p50=first["first_call_p50"],
        first_call_max=first["first_call_max"],
        headers_calls=len(run.latencies),
        latency_p50=steady["latency_p50"],
        latency_p99=steady["latency_p99"],
        latency_max=steady["latency_max"],
        timeline=timeline(run),
    )


def timeline(run: Run) -> tuple[TokenUse, ...]:
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
