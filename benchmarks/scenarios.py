"""Benchmark scenarios. Every speed figure is a ratio to a floor measured in the same run.

H  hot path: awaited `headers()` on a valid token vs a coroutine that returns a cached dict
Y  sync hot path: `SyncTokenManager.headers()` on a fresh token vs a plain dict lookup, in one
   thread and in several, counting the calls that cross to the manager's loop thread (none)
S  storm: 10,000 tasks call `headers()` at once, on an expired token and at the refresh point
C  cold storm: 10,000 tasks call `headers()` at once on a fresh manager, vs a no-wait storm
   and vs the same storm on a fresh hand-written asyncio.Lock manager
L  lifecycle: tasks loop `headers()` + GET through the middleware across several lifetimes
M  memory: tracemalloc over many `headers()` calls and many refresh cycles
I  import: `import aioica_auth` minus aiohttp's own import
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import math
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import jwt

from aioica_auth import ApiKey, SyncTokenManager, TokenManager

from ._remote import RemoteServer


class Floor:
    """The floor: a coroutine that returns a cached dict."""

    def __init__(self) -> None:
        self._headers = {"Authorization": "Bearer x"}

    async def headers(self) -> dict[str, str]:
        return self._headers


class LockManager:
    """What users hand-write today: an asyncio.Lock around a clock check, a new dict per call.

    Given no session, it opens its own on its first token request (under the lock, as a
    hand-written one would) and closes it on leaving `async with`: so its cold start in C
    costs what the manager's does, a session and a token request.
    """

    def __init__(self, session: aiohttp.ClientSession | None, base_url: str, key: str) -> None:
        self._session, self._url, self._key = session, base_url + "/api/tokens", key
        self._owned: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._exp = 0.0

    async def __aenter__(self) -> LockManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._owned is not None:
            await self._owned.close()

    async def headers(self) -> dict[str, str]:
        async with self._lock:
            if self._token is None or time.time() > self._exp - 30:
                if self._session is None:
                    self._session = self._owned = aiohttp.ClientSession()
                async with self._session.post(self._url, headers={"X-API-Key": self._key}) as r:
                    self._token = (await r.json(content_type=None))["token"]
                claims = jwt.decode(self._token, options={"verify_signature": False})
                self._exp = float(claims["exp"])
            return {"Authorization": f"Bearer {self._token}"}


def _no_background(m: TokenManager) -> None:
    """Stop a manager's scheduler from renewing (it then sleeps for good), for a storm at a
    chosen point of a token's life."""
    renewal = m._renewal
    assert renewal is not None

    async def idle(lease: object) -> None:
        return None

    renewal.tick = idle  # type: ignore[method-assign]
    renewal.next_wake = lambda lease: math.inf  # type: ignore[method-assign]


def manager(remote: RemoteServer, **policy: Any) -> TokenManager:
    return TokenManager.for_ica(ApiKey(remote.api_key), base_url=remote.ica_base_url, **policy)


async def _hammer(call: Callable[[], Awaitable[Any]], tasks: int, calls: int) -> float:
    """Seconds for `tasks` tasks each awaiting `call()` `calls` times."""

    async def one() -> None:
        for _ in range(calls):
            await call()

    gc.collect()
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(tasks)))
    return time.perf_counter() - started


async def _interleaved(
    subjects: dict[str, Callable[[], Awaitable[Any]]], tasks: int, calls: int, rounds: int
) -> dict[str, float]:
    """Median ns per call of each subject, rounds interleaved so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, call in subjects.items():
            samples[name].append(await _hammer(call, tasks, calls) / (tasks * calls) * 1e9)
    return {name: statistics.median(values) for name, values in samples.items()}


async def hot_path(remote: RemoteServer, *, tasks: int, calls: int, rounds: int) -> dict[str, Any]:
    """H: ns per awaited call on a valid token, and the ratio to the floor."""
    floor = Floor()
    async with manager(remote) as m, aiohttp.ClientSession() as session:
        lock = LockManager(session, remote.ica_base_url, remote.api_key)
        await m.headers()
        await lock.headers()
        many = await _interleaved(
            {"floor": floor.headers, "headers": m.headers, "token": m.token, "lock": lock.headers},
            tasks,
            calls,
            rounds,
        )
        single = await _interleaved(
            {"floor": floor.headers, "headers": m.headers}, 1, tasks * calls // 10, rounds
        )
    return {
        "tasks": tasks,
        "calls_per_task": calls,
        "floor_ns": round(many["floor"], 1),
        "headers_ns": round(many["headers"], 1),
        "token_ns": round(many["token"], 1),
        "lock_baseline_ns": round(many["lock"], 1),
        "headers_ratio": round(many["headers"] / many["floor"], 2),
        "token_ratio": round(many["token"] / many["floor"], 2),
        "lock_baseline_ratio": round(many["lock"] / many["floor"], 2),
        "single_task_ratio": round(single["headers"] / single["floor"], 2),
    }


def _sync_rate(call: Callable[[], object], threads: int, calls: int) -> float:
    """ns per call: `threads` threads, released together, each calling `call()` `calls` times
    (the wall over all their calls: with the GIL, threads share one core's worth of Python)."""
    if threads == 1:  # in this thread: no wake-up of another one inside the measurement
        gc.collect()
        started = time.perf_counter()
        for _ in range(calls):
            call()
        return (time.perf_counter() - started) / calls * 1e9
    gate = threading.Barrier(threads + 1)

    def one() -> None:
        gate.wait()
        for _ in range(calls):
            call()

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for worker in workers:
        worker.start()
    gc.collect()
    gate.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - started) / (threads * calls) * 1e9


def _sync_interleaved(
    subjects: dict[str, Callable[[], object]], threads: int, calls: int, rounds: int
) -> dict[str, float]:
    """Median ns per call of each subject, rounds interleaved so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, call in subjects.items():
            samples[name].append(_sync_rate(call, threads, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


class _Crossings:
    """Counts what is handed to a loop from other threads (`call_soon_threadsafe`, which
    `run_coroutine_threadsafe` uses): the only way into the manager's loop thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.count = 0
        self._loop = loop
        self._original = loop.call_soon_threadsafe

    def _counting(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self._original(*args, **kwargs)

    def __enter__(self) -> _Crossings:
        self._loop.call_soon_threadsafe = self._counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self._loop.call_soon_threadsafe  # the class's method again


def _sync_hot_path(
    remote: RemoteServer, *, calls: int, threads: int, rounds: int
) -> dict[str, Any]:
    cache = {"headers": {"Authorization": "Bearer x"}}

    def lookup() -> object:
        return cache["headers"]

    with SyncTokenManager.for_ica(ApiKey(remote.api_key), base_url=remote.ica_base_url) as m:
        m.headers()  # the first token: this one crosses to the loop thread and mints
        with _Crossings(m._loop) as hot:
            one = _sync_interleaved(
                {"dict": lookup, "headers": m.headers, "token": m.token}, 1, calls, rounds
            )
            many = _sync_interleaved(
                {"dict": lookup, "headers": m.headers}, threads, calls // threads, rounds
            )
        hot_calls = rounds * (2 * calls + threads * (calls // threads))  # manager calls
        # For scale: a call that must go to the loop thread (min_validity always does).
        crossing_calls = max(calls // 200, 10)
        with _Crossings(m._loop) as hop:
            crossed = _sync_interleaved(
                {"hop": lambda: m.headers(min_validity=1.0)}, 1, crossing_calls, rounds
            )
    return {
        "calls": calls,
        "threads": threads,
        "rounds": rounds,
        "dict_ns": round(one["dict"], 1),
        "headers_ns": round(one["headers"], 1),
        "token_ns": round(one["token"], 1),
        "headers_ratio": round(one["headers"] / one["dict"], 2),
        "token_ratio": round(one["token"] / one["dict"], 2),
        "threaded_dict_ns": round(many["dict"], 1),
        "threaded_headers_ns": round(many["headers"], 1),
        "threaded_headers_ratio": round(many["headers"] / many["dict"], 2),
        "hot_calls": hot_calls,
        "hot_loop_crossings": hot.count,
        "hop_ns": round(crossed["hop"], 1),
        "hop_ratio": round(crossed["hop"] / one["dict"], 1),
        "hop_crossings_per_call": round(hop.count / (rounds * crossing_calls), 2),
    }


async def sync_hot_path(
    remote: RemoteServer, *, calls: int, threads: int, rounds: int
) -> dict[str, Any]:
    """Y: ns per `SyncTokenManager.headers()` / `token()` call on a fresh token, and the
    ratio to a plain dict lookup (a function returning `cache["headers"]`), in one thread
    and in `threads` threads at once; how many of those calls crossed to the manager's loop
    thread (the figure is 0); and, for scale, a call that does cross (`min_validity`).

    Run from a worker thread: a `SyncTokenManager` refuses to block inside a running loop.
    """
    remote.set(lifetime=3600.0)  # no refresh point inside the run
    return await asyncio.to_thread(
        _sync_hot_path, remote, calls=calls, threads=threads, rounds=rounds
    )


async def _storm(
    call: Callable[[], Awaitable[Any]],
    tasks: int,
    *,
    setup: Callable[[], Awaitable[object]] | None = None,
) -> dict[str, Any]:
    """All tasks parked on a barrier, released at once; wall until every one has its header.

    `setup`, when given, is awaited inside the measured wall, just before the release.
    """
    barrier = asyncio.Event()
    blocked = raised = 0

    async def one() -> None:
        nonlocal blocked, raised
        await barrier.wait()
        started = time.perf_counter()
        try:
            await call()
        except Exception:
            raised += 1
        if time.perf_counter() - started >= 0.025:
            blocked += 1

    pending = [asyncio.ensure_future(one()) for _ in range(tasks)]
    await asyncio.sleep(0.05)  # every task is parked on the barrier
    started = time.perf_counter()
    if setup is not None:
        await setup()
    barrier.set()
    await asyncio.gather(*pending)
    return {
        "wall_ms": round((time.perf_counter() - started) * 1e3, 1),
        "blocked": blocked,
        "raised": raised,
    }


async def storm(
    remote: RemoteServer, *, tasks: int, latency: float, rounds: int = 3
) -> dict[str, Any]:
    """S: (a) an expired token and (b) a valid token at the refresh point, each round
    interleaved with the floor; medians of the walls, worst of the counts."""
    ready: asyncio.Event
    timer: list[asyncio.TimerHandle]

    async def floor_call() -> None:
        # The floor: the same tasks, woken by an event set after the server's latency.
        if not ready.is_set() and not timer:
            timer.append(asyncio.get_running_loop().call_later(latency, ready.set))
        await ready.wait()

    remote.set(lifetime=4.0, latency=latency)
    samples: dict[str, list[dict[str, Any]]] = {"floor": [], "expired": [], "refresh_point": []}
    for _ in range(rounds):
        ready, timer = asyncio.Event(), []
        samples["floor"].append(await _storm(floor_call, tasks))
        for case in ("expired", "refresh_point"):
            async with manager(remote) as m:
                await m.headers()
                _no_background(m)  # nothing refreshes behind our back
                lease = m._lease
                assert lease is not None
                target = lease.timing.expires if case == "expired" else lease.timing.refresh_at
                await asyncio.sleep(max(0.0, target - time.monotonic()) + 0.01)
                remote.reset()
                result = await _storm(m.headers, tasks)
                await asyncio.sleep(latency * 2)  # let the background refresh of (b) land
                result["token_calls"] = remote.counts().get("ica.create", 0)
                samples[case].append(result)
    remote.set(lifetime=3600.0)
    out: dict[str, Any] = {"tasks": tasks, "latency_ms": latency * 1e3, "rounds": rounds}
    for case, results in samples.items():
        out[case] = {
            "wall_ms": statistics.median(r["wall_ms"] for r in results),
            "blocked": max(r["blocked"] for r in results),
            "raised": max(r["raised"] for r in results),
        }
        if case != "floor":
            out[case]["token_calls"] = max(r["token_calls"] for r in results)
    out["expired_ratio"] = round(out["expired"]["wall_ms"] / out["floor"]["wall_ms"], 2)
    return out


@contextlib.contextmanager
def _collector(enabled: bool) -> Iterator[None]:
    """The garbage collector off unless `enabled`, then as it was."""
    was = gc.isenabled()
    if not enabled:
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def _cold(
    remote: RemoteServer, subject: Any, tasks: int, *, collector: bool
) -> dict[str, Any]:
    """One cold storm on `subject`, just built (no token, no session, not bound to the loop):
    its `async with` is inside the measured wall, right before the release; each task awaits
    `subject.headers()`. The `_storm` result, the token calls it cost, and the subject's
    `stats` if it has any (read before it closes)."""
    remote.reset()
    gc.collect()
    async with contextlib.AsyncExitStack() as stack:
        with _collector(collector):
            result = await _storm(
                subject.headers, tasks, setup=functools.partial(stack.enter_async_context, subject)
            )
        result["stats"] = getattr(subject, "stats", None)
    result["token_calls"] = remote.counts().get("ica.create", 0)
    return result


async def cold_storm(
    remote: RemoteServer, *, tasks: int, latency: float, rounds: int = 7, factor: float = 2.2
) -> dict[str, Any]:
    """C: `tasks` tasks call `headers()` at once on a brand-new manager; the gate is both
    `latency + factor * floor`, the floor being a no-wait storm of the same tasks, and the
    same cold storm on a hand-written `asyncio.Lock` manager (`LockManager`) in the same run.

    The three storms start the same way (`_storm`): every task is created and parked on an
    `asyncio.Event`, then the event is set and the wall runs until every task has finished.
    Floor: each task awaits a coroutine that returns a cached dict. Cold: a manager just
    built by `for_ica` (no token, no session, not bound to the loop) whose start, `async with`
    (binding, session creation), is inside the measured wall, right before the release; each
    task awaits `m.headers()`, and the server answers the token request after `latency`. Lock:
    a `LockManager` just built without a session, in the same way (its session is opened by
    the first task, under its lock, inside the wall). The child server's own start is outside
    (it runs all along). Rounds are interleaved (floor, cold, lock, floor, ...); walls are
    medians, counts the worst round. Public API only.

    The figures and the verdict are with the garbage collector on, as in an application. The
    same storms are also run with it off (`gc_off`, a diagnostic): on a 2-core machine the
    collections triggered by 10,000 parked tasks are about half of any of the walls.
    """
    floor = Floor()
    remote.set(lifetime=3600.0, latency=latency)
    names = ("floor", "cold", "lock")
    walls: dict[bool, dict[str, list[float]]] = {on: {n: [] for n in names} for on in (True, False)}
    calls: dict[str, list[int]] = {"cold": [], "lock": []}
    raised = mints = 0
    waits = tasks
    for _ in range(rounds):
        for collector in (True, False):
            gc.collect()
            with _collector(collector):
                result = await _storm(floor.headers, tasks)
            walls[collector]["floor"].append(result["wall_ms"])
            raised = max(raised, result["raised"])

            cold = await _cold(remote, manager(remote), tasks, collector=collector)
            lock = LockManager(None, remote.ica_base_url, remote.api_key)
            locked = await _cold(remote, lock, tasks, collector=collector)
            for name, result in (("cold", cold), ("lock", locked)):
                walls[collector][name].append(result["wall_ms"])
                raised = max(raised, result["raised"])
                calls[name].append(result["token_calls"])
            mints, waits = max(mints, cold["stats"].mints), min(waits, cold["stats"].waits)

    latency_ms = latency * 1e3

    def figures(collector: bool) -> dict[str, Any]:
        floor_ms, cold_ms, lock_ms = (statistics.median(walls[collector][n]) for n in names)
        target_ms = latency_ms + factor * floor_ms
        return {
            "floor_ms": floor_ms,
            "cold_ms": cold_ms,
            "lock_ms": lock_ms,
            "target_ms": round(target_ms, 1),
            "cold_over_target": round(cold_ms / target_ms, 2),
            "cold_over_lock": round(cold_ms / lock_ms, 2),
            "beyond_latency_over_floor": round((cold_ms - latency_ms) / floor_ms, 2),
            **{f"{n}_ms_per_round": walls[collector][n] for n in names},
        }

    on = figures(True)
    sound = all(n == 1 for n in calls["cold"] + calls["lock"]) and raised == 0
    within_target = on["cold_over_target"] <= 1.0
    beats_lock = on["cold_ms"] <= on["lock_ms"]
    return {
        "tasks": tasks,
        "rounds": rounds,
        "start": "all tasks created and parked on an asyncio.Event, then released at once",
        "latency_ms": latency_ms,
        "factor": factor,
        **on,
        "token_calls": max(calls["cold"]),
        "token_calls_per_round": calls["cold"],
        "lock_token_calls": max(calls["lock"]),
        "raised": raised,
        "mints": mints,
        "waits": waits,
        "target_verdict": "PASS" if within_target else "MISS",
        "lock_verdict": "PASS" if beats_lock else "MISS",
        "verdict": "PASS" if within_target and beats_lock and sound else "MISS",
        "gc_off": figures(False),
    }


async def lifecycle(
    remote: RemoteServer, *, tasks: int, duration: float, lifetime: float
) -> dict[str, Any]:
    """L: tasks loop headers() + GET through the middleware across several token lifetimes."""
    remote.set(lifetime=lifetime)
    remote.reset()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with manager(remote) as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as http:
        await m.headers()
        end = time.monotonic() + duration

        async def one() -> None:
            while time.monotonic() < end:
                started = time.perf_counter()
                await m.headers()
                latencies.append(time.perf_counter() - started)
                async with http.get(remote.resource_url) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(one() for _ in range(tasks)))
        stats = m.stats
    counts = remote.counts()
    latencies.sort()
    interval = lifetime * 0.5  # refresh at min(1200 s, L/2) before expiry
    return {
        "tasks": tasks,
        "duration_s": duration,
        "lifetime_s": lifetime,
        "requests": sum(statuses.values()),
        "http_401": statuses.get(401, 0),
        "other_errors": sum(n for s, n in statuses.items() if s not in (200, 401)),
        "token_calls": counts.get("ica.create", 0),
        "ideal_token_calls": round(1 + duration / interval, 1),
        "mints": stats.mints,
        "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 4),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 4),
        "max_ms": round(latencies[-1] * 1e3, 3),
    }


async def memory(remote: RemoteServer, *, calls: int, cycles: int) -> dict[str, Any]:
    """M: allocation growth over many headers() calls and many refresh cycles."""
    async with manager(remote) as m:
        await m.headers()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(calls):
            await m.headers()
        gc.collect()
        after_calls = tracemalloc.take_snapshot()
        for _ in range(cycles):
            lease = m._lease
            assert lease is not None
            m.invalidate(lease.token)
            await m.headers()
        gc.collect()
        after_cycles = tracemalloc.take_snapshot()
        tracemalloc.stop()

    def grown(a: Any, b: Any) -> int:
        return sum(stat.size_diff for stat in b.compare_to(a, "filename"))

    return {
        "calls": calls,
        "cycles": cycles,
        "growth_over_calls_bytes": grown(before, after_calls),
        "growth_over_cycles_bytes": grown(after_calls, after_cycles),
        "growth_per_cycle_bytes": round(grown(after_calls, after_cycles) / max(cycles, 1), 1),
    }


def import_time() -> dict[str, Any]:
    """I: microseconds to import aioica_auth beyond aiohttp's own import (median of 5)."""

    def cumulative(module: str, code: str) -> int:
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        for line in out.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == module:
                return int(parts[1])
        raise RuntimeError(f"{module} not in import log")

    ours = statistics.median(cumulative("aioica_auth", "import aioica_auth") for _ in range(5))
    base = statistics.median(cumulative("aiohttp", "import aiohttp") for _ in range(5))
    return {"aioica_auth_us": ours, "aiohttp_us": base, "own_us": ours - base}
