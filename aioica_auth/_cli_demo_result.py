"""What a demo run measured (`DemoResult`, `TokenUse`, `DemoProgress`) and its statistics.

Shared by the run (`_cli_demo`) and its display (`_cli_demo_display`); imports neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["DemoProgress", "DemoResult", "TokenUse", "latency_stats", "percentile"]


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
