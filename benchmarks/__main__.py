"""`python -m benchmarks`: run the scenarios, print a table, write JSON.

python -m benchmarks                  # full sizes (about a minute)
python -m benchmarks --smoke          # tiny sizes: checks the benchmarks still run
python -m benchmarks --only H,S --json results.json
python -m benchmarks --only C,H       # the cold storm and the hot path only
python -m benchmarks --only Y         # the synchronous hot path (SyncTokenManager)
python -m benchmarks --only F         # the fleet: N processes, no store / file / Redis
python -m benchmarks --only W         # waiters: M managers on one renewal, store commands
python -m benchmarks --only H,C --otel  # with the OpenTelemetry SDK and a metric reader attached
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from typing import Any

from . import fleet, scenarios, waiters
from ._remote import RemoteServer

FULL: dict[str, dict[str, Any]] = {
    "H": {"tasks": 1000, "calls": 200, "rounds": 7},
    "Y": {"calls": 50_000, "threads": 4, "rounds": 21},
    "S": {"tasks": 10_000, "latency": 0.05},
    "C": {"tasks": 10_000, "latency": 0.05, "rounds": 7},
    "L": {"tasks": 200, "duration": 14.0, "lifetime": 4.0},
    "M": {"calls": 1_000_000, "cycles": 1000},
    "F": {"lifetime": 3.0, "tokens": 6, "sizes": (1, 4, 16)},
    "W": {"sizes": (16, 256), "latencies": (0.2, 2.0)},
}
SMOKE: dict[str, dict[str, Any]] = {
    "H": {"tasks": 50, "calls": 20, "rounds": 2},
    "Y": {"calls": 2000, "threads": 2, "rounds": 2},
    "S": {"tasks": 200, "latency": 0.05, "rounds": 1},
    "C": {"tasks": 200, "latency": 0.05, "rounds": 1},
    "L": {"tasks": 10, "duration": 2.0, "lifetime": 1.0},
    "M": {"calls": 10_000, "cycles": 10},
    "F": {"lifetime": 2.0, "tokens": 3, "sizes": (1, 2), "arms": ("file",), "rounds": 2},
    "W": {"sizes": (4,), "latencies": (0.2,), "arms": ("file",)},
}


async def run(only: set[str], sizes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        }
    }
    with RemoteServer(latency=0.05) as remote:
        if "H" in only:
            results["H"] = await scenarios.hot_path(remote, **sizes["H"])
        if "Y" in only:
            results["Y"] = await scenarios.sync_hot_path(remote, **sizes["Y"])
        if "S" in only:
            results["S"] = await scenarios.storm(remote, **sizes["S"])
        if "C" in only:
            results["C"] = await scenarios.cold_storm(remote, **sizes["C"])
        if "L" in only:
            results["L"] = await scenarios.lifecycle(remote, **sizes["L"])
        if "M" in only:
            results["M"] = await scenarios.memory(remote, **sizes["M"])
    if "I" in only:
        results["I"] = scenarios.import_time()
    if "F" in only:
        results["F"] = await fleet.fleet(**sizes["F"])
    if "W" in only:
        results["W"] = await waiters.waiters(**sizes["W"])
    return results


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    if h := results.get("H"):
        rows += [
            ("H", "floor (cached-dict coroutine)", f"{h['floor_ns']:.0f} ns/call"),
            (
                "H",
                "headers(), 1000 tasks",
                f"{h['headers_ns']:.0f} ns/call = {h['headers_ratio']}x floor (target <= 1.3x)",
            ),
            ("H", "headers(), single task", f"{h['single_task_ratio']}x floor"),
            ("H", "token()", f"{h['token_ratio']}x floor"),
            ("H", "hand-written lock manager", f"{h['lock_baseline_ratio']}x floor"),
        ]
    if y := results.get("Y"):
        rows += [
            ("Y", "floor (a plain dict lookup)", f"{y['dict_ns']:.0f} ns/call"),
            (
                "Y",
                "SyncTokenManager.headers(), one thread",
                f"{y['headers_ns']:.0f} ns/call = {y['headers_ratio']}x floor",
            ),
            ("Y", "SyncTokenManager.token(), one thread", f"{y['token_ratio']}x floor"),
            (
                "Y",
                f"headers(), {y['threads']} threads at once",
                f"{y['threaded_headers_ns']:.0f} ns/call = {y['threaded_headers_ratio']}x "
                f"floor ({y['threaded_dict_ns']:.0f} ns) in the same threads",
            ),
            (
                "Y",
                "calls that crossed to the loop thread",
                f"{y['hot_loop_crossings']} of {y['hot_calls']}",
            ),
            (
                "Y",
                "for scale: headers(min_validity=...), via the loop",
                f"{y['hop_ns'] / 1e3:.1f} us/call = {y['hop_ratio']}x floor "
                f"({y['hop_crossings_per_call']} crossings per call)",
            ),
        ]
    if s := results.get("S"):
        for case in ("expired", "refresh_point"):
            r = s[case]
            rows.append(
                (
                    "S",
                    f"{s['tasks']} tasks, {case.replace('_', ' ')}",
                    f"{r['token_calls']} token call(s), {r['wall_ms']} ms wall, "
                    f"{r['blocked']} blocked >= 25 ms, {r['raised']} raised",
                )
            )
        rows.append(("S", "floor (event woken after latency)", f"{s['floor']['wall_ms']} ms wall"))
        rows.append(("S", "expired storm / floor", f"{s['expired_ratio']}x"))
    if c := results.get("C"):
        g = c["gc_off"]
        rows += [
            ("C", f"floor ({c['tasks']} tasks, no-wait storm)", f"{c['floor_ms']} ms wall"),
            (
                "C",
                f"{c['tasks']} tasks, fresh manager, {c['latency_ms']:g} ms latency",
                f"{c['token_calls']} token call(s), {c['cold_ms']} ms wall, {c['raised']} raised",
            ),
            (
                "C",
                f"{c['tasks']} tasks, fresh hand-written lock manager",
                f"{c['lock_token_calls']} token call(s), {c['lock_ms']} ms wall",
            ),
            (
                "C",
                f"target: latency + {c['factor']:g}x floor",
                f"{c['target_ms']} ms; cold/target = {c['cold_over_target']} "
                f"-> {c['target_verdict']}",
            ),
            (
                "C",
                "target: no slower than the lock manager",
                f"cold/lock = {c['cold_over_lock']} -> {c['lock_verdict']}",
            ),
            (
                "C",
                "verdict (both, one token call each, none raised)",
                c["verdict"]
                + (
                    " (smoke sizes: fixed costs dominate)" if results.get("mode") == "smoke" else ""
                ),
            ),
            (
                "C",
                "same, garbage collector off (diagnostic)",
                f"floor {g['floor_ms']} ms, cold {g['cold_ms']} ms, lock {g['lock_ms']} ms, "
                f"target {g['target_ms']} ms, cold/target = {g['cold_over_target']}",
            ),
        ]
    if lc := results.get("L"):
        rows += [
            (
                "L",
                f"{lc['tasks']} tasks x {lc['duration_s']} s, lifetime {lc['lifetime_s']} s",
                f"{lc['requests']} requests, {lc['http_401']} 401s, "
                f"{lc['token_calls']} token calls (ideal {lc['ideal_token_calls']})",
            ),
            (
                "L",
                "headers() latency",
                f"p50 {lc['p50_ms']} ms, p99 {lc['p99_ms']} ms, max {lc['max_ms']} ms",
            ),
        ]
    if m := results.get("M"):
        rows += [
            ("M", f"{m['calls']} headers() calls", f"{m['growth_over_calls_bytes']} bytes growth"),
            ("M", f"{m['cycles']} refresh cycles", f"{m['growth_per_cycle_bytes']} bytes/cycle"),
        ]
    if i := results.get("I"):
        rows.append(("I", "import aioica_auth beyond aiohttp", f"{i['own_us'] / 1e3:.1f} ms"))
    if f := results.get("F"):
        rows += fleet.rows(f, smoke=results.get("mode") == "smoke")
    if w := results.get("W"):
        rows += waiters.rows(w)
    width = max((len(r[1]) for r in rows), default=0)
    return "\n".join(f"{s}  {what.ljust(width)}  {figure}" for s, what, figure in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument(
        "--only", default="H,Y,S,C,L,M,I,F,W", help="scenarios to run (default: all)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--quiet", action="store_true", help="print the table only")
    parser.add_argument(
        "--otel",
        action="store_true",
        help="configure the OpenTelemetry SDK first, with an in-memory metric reader and span "
        "exporter attached (needs opentelemetry-sdk)",
    )
    args = parser.parse_args(argv)
    if args.otel:
        _attach_otel()
    only = {s.strip().upper() for s in args.only.split(",")}
    results = asyncio.run(run(only, SMOKE if args.smoke else FULL))
    results["mode"] = "smoke" if args.smoke else "full"
    results["otel"] = args.otel
    print(table(results))
    if not args.quiet:
        print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


def _attach_otel() -> None:
    """The SDK's providers, as an application would set them, with in-memory readers."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(tracer_provider)


if __name__ == "__main__":
    sys.exit(main())
