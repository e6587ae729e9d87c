"""F  fleet: N processes (1, 4, 16) renew one token, each on its own or through a store.

The benchmark process runs a `LocalIcaServer` (short-lived tokens, 50 ms per token request)
and spawns the largest N worker processes once (`python -m benchmarks.fleet --worker`); each
run uses the first N of them. In a run every worker builds a fresh manager (no store, a
`FileTokenStore` in a fresh directory, or a `RedisTokenStore` under a fresh prefix on our own
`redis-server`); once all are built they start at one wall-clock instant, and their tasks
loop `headers()` plus a GET of `server.resource_url` through the middleware (paced: this
measures token requests, not throughput). The server counts the token requests
(`ica.create`) and the 401s it answers.

A refresh interval is the time from one token to the next on one manager. Each worker stops
(and closes its manager) shortly after its manager has taken its K-th token (the first, then
one per refresh: minted or adopted from the store), so a run spans K refresh intervals of
every manager, with no window edge to cut a renewal in two, and no manager ever asks for a
(K+1)-th. Token requests per refresh interval are the server's count over K: about N with
no store, 1 with a store whatever N. A run takes about K * 0.37 lifetimes here (short
lifetimes refresh early: the `iat` truncation margin and the leeway come off first).

The renewal latency is timed in one worker, rounds interleaved: a fresh manager (already
entered, so its session exists) and its first `headers()`, which is exactly one renewal:
no store (a mint); an empty store (read, lease, read, mint, publish with fsync, release: the
store's extra cost on the path of the one manager that mints); a warm store (read and adopt:
what every other manager of the fleet pays instead of a mint). Each round's store is new (an
empty directory, a fresh Redis prefix) and connected before the timing. The key derivation
(PBKDF2, once per manager at construction) is timed apart. Medians over the rounds. In the
fleet runs themselves renewals happen in the background, before expiry: `headers()` waits
only for the first token (the cold start, shown apart), so a store's extra latency reaches no
caller there.

Redis runs only when `aioica_auth.RedisTokenStore` exists, redis-py is installed and
`redis-server` is on PATH (started on a free port of 127.0.0.1 without persistence, killed at
the end); otherwise the arm says why it was skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from aioica_auth import ApiKey, FileTokenStore, ManagerStats, TokenManager, TokenStore

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("none", "file", "redis")
_LABELS = {"none": "no store", "file": "file store", "redis": "Redis store"}
TOKEN_LATENCY = 0.05  # seconds the local server takes to answer a token request
_AFTER_LAST = 0.1  # seconds a worker goes on after its last token (a refresh is ~1 s away)
_START_DELAY = 0.1  # seconds from "go" (every worker prepared) to the run's start
_READY_TIMEOUT = 90.0  # seconds for the workers to start (16 interpreters on 2 cores)


# -- the benchmark process -------------------------------------------------------------------


async def fleet(
    *,
    lifetime: float,
    tokens: int,
    sizes: tuple[int, ...],
    arms: tuple[str, ...] = ARMS,
    tasks: int = 25,
    gap: float = 1.0,
    rounds: int = 10,
) -> dict[str, Any]:
    """F: token requests per refresh interval per arm and N, 401s, and renewal latency."""
    from aioica_auth.testing import LocalIcaServer

    out: dict[str, Any] = {
        "lifetime_s": lifetime,
        "tokens_per_manager": tokens,
        "token_latency_ms": TOKEN_LATENCY * 1e3,
        "tasks_per_process": tasks,
        "request_gap_s": gap,
        "runs": {},
        "skipped": {},
    }
    with tempfile.TemporaryDirectory(prefix="aioica-fleet-") as scratch:
        async with (
            LocalIcaServer(lifetime=lifetime, latency=TOKEN_LATENCY) as server,
            _redis(arms) as redis,
        ):
            url, why = redis
            if "redis" in arms and url is None:
                out["skipped"]["redis"] = why
            active = [a for a in arms if a != "redis" or url is not None]
            async with _workers(server, max(sizes), tasks=tasks, gap=gap) as workers:
                run_no = 0
                for n in sizes:
                    for arm in active:
                        run_no += 1
                        spec: dict[str, Any] = {
                            "arm": arm,
                            "tokens": tokens,
                            "give_up": 2 * tokens * lifetime + 10,
                        }
                        if arm == "file":
                            spec["directory"] = str(Path(scratch) / f"run{run_no}")
                        elif arm == "redis":
                            spec |= {"url": url, "prefix": f"aioica_fleet_{run_no}"}
                        result = await _run(server, workers[:n], spec)
                        out["runs"].setdefault(arm, {})[str(n)] = result
                latency = {"rounds": rounds, "directory": str(Path(scratch) / "latency")}
                out["renewal"] = await workers[0].ask({"latency": latency | {"url": url}})
    out["verdict"] = _verdict(out)
    return out


def _verdict(out: dict[str, Any]) -> str:
    """PASS when every store arm makes at most 1.5 token requests per refresh interval
    (goal: 1) and no run saw a 401."""
    runs = out["runs"]
    shared = [r for arm, by_n in runs.items() if arm != "none" for r in by_n.values()]
    every = [r for by_n in runs.values() for r in by_n.values()]
    ok = all(r["per_interval"] <= 1.5 for r in shared) and all(r["http_401"] == 0 for r in every)
    return "PASS" if ok else "MISS"


async def _run(server: Any, workers: list[_Worker], spec: dict[str, Any]) -> dict[str, Any]:
    """One run of `spec` on `workers`, started together; the server's counts for it.

    Each worker first builds its store and manager (imports, key derivation, connections)
    and says so; then all are told one wall-clock instant to start at."""
    await asyncio.gather(*(w.ask(spec) for w in workers))
    start_at = time.time() + _START_DELAY + 0.005 * len(workers)
    server.reset_counters()
    results = await asyncio.gather(*(w.ask({"start_at": start_at}) for w in workers))
    requests = server.counts.get("ica.create", 0)
    intervals = spec["tokens"]
    statuses: dict[int, int] = {}
    for (endpoint, status), count in server.statuses.items():
        if endpoint == "resource":
            statuses[status] = statuses.get(status, 0) + count
    return {
        "processes": len(workers),
        "token_requests": requests,
        "refresh_intervals": intervals,
        "per_interval": round(requests / intervals, 2),
        "duration_s": max(r["duration_s"] for r in results),
        "short_runs": sum(1 for r in results if r["tokens"] < intervals),
        "resource_requests": sum(statuses.values()),
        "http_401": statuses.get(401, 0),
        "other_errors": sum(n for s, n in statuses.items() if s not in (200, 401)),
        "mints": sum(r["mints"] for r in results),
        "shared": sum(r["shared"] for r in results),
        "failures": sum(r["failures"] for r in results),
        "late_starts": sum(1 for r in results if r["late_s"] > 0.05),
        "first_headers_max_ms": max(r["first_headers_ms"] for r in results),
        "headers_max_ms": max(r["headers_max_ms"] for r in results),
        "headers_p99_ms": max(r["headers_p99_ms"] for r in results),
    }


class _Worker:
    """A worker process, spoken to in JSON lines (stdin: commands; stdout: answers)."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr

    async def ask(self, command: dict[str, Any], within: float = 120.0) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.answer(within)

    async def answer(self, within: float) -> Any:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            tail = self.stderr.read_text(errors="replace")[-2000:]
            msg = f"a fleet worker exited (status {self.proc.returncode}): {tail}"
            raise RuntimeError(msg)
        return json.loads(line)


@contextlib.asynccontextmanager
async def _workers(
    server: Any, count: int, *, tasks: int, gap: float
) -> AsyncIterator[list[_Worker]]:
    """`count` worker processes, each ready for commands; stopped (or killed) at the end."""
    env = os.environ | {"ICAV2_X_API_KEY": server.api_key}  # not on argv, where ps shows it
    argv = [
        "--worker",
        "--base-url", server.ica_base_url,
        "--resource-url", server.resource_url,
        "--tasks", str(tasks),
        "--gap", str(gap),
    ]  # fmt: skip
    workers: list[_Worker] = []
    with tempfile.TemporaryDirectory(prefix="aioica-fleet-logs-") as logs:
        try:
            for i in range(count):
                stderr = Path(logs) / f"worker{i}.log"
                with stderr.open("wb") as err:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "benchmarks.fleet", *argv,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                        cwd=ROOT, env=env,
                    )  # fmt: skip
                workers.append(_Worker(proc, stderr))
            await asyncio.gather(*(w.answer(_READY_TIMEOUT) for w in workers))
            yield workers
        finally:
            await _stop(workers)


async def _stop(workers: list[_Worker]) -> None:
    for w in workers:
        if w.proc.returncode is None and w.proc.stdin is not None:
            with contextlib.suppress(OSError):
                w.proc.stdin.write(b'{"stop": true}\n')
                w.proc.stdin.close()
    for w in workers:
        try:
            await asyncio.wait_for(w.proc.wait(), 10)
        except TimeoutError:
            w.proc.kill()
            await w.proc.wait()


@contextlib.asynccontextmanager
async def _redis(arms: tuple[str, ...]) -> AsyncIterator[tuple[str | None, str]]:
    """Our own redis-server on a free loopback port: (its URL, ""), or (None, why not)."""
    why = _redis_missing() if "redis" in arms else "not asked for"
    if why:
        yield None, why
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if await _listening(port, within=10.0):
            yield f"redis://127.0.0.1:{port}/0", ""
        else:
            yield None, f"skipped: redis-server did not listen on port {port} within 10 s"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _redis_missing() -> str:
    """Why the Redis arm cannot run here, or ""."""
    try:
        from aioica_auth import RedisTokenStore  # noqa: F401
    except ImportError:
        return "skipped: aioica_auth.RedisTokenStore is not in this build"
    if importlib.util.find_spec("redis") is None:
        return "skipped: redis-py is not installed (pip install 'aioica_auth[redis]')"
    if shutil.which("redis-server") is None:
        return "skipped: redis-server is not on PATH"
    return ""


async def _listening(port: int, *, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return True
    return False


def rows(f: dict[str, Any], *, smoke: bool = False) -> list[tuple[str, str, str]]:
    """The table rows of F (see `benchmarks.__main__.table`)."""
    out = [
        (
            "F",
            f"fleet, lifetime {f['lifetime_s']:g} s",
            f"{f['tokens_per_manager']} tokens a manager, token requests take "
            f"{f['token_latency_ms']:g} ms, {f['tasks_per_process']} tasks a process",
        )
    ]
    for arm, by_n in f["runs"].items():
        for n, r in by_n.items():
            out.append(
                (
                    "F",
                    f"{_LABELS[arm]}, {n} process{'es' if n != '1' else ''}",
                    f"{r['per_interval']:g} token requests per refresh interval "
                    f"({r['token_requests']} in {r['refresh_intervals']}), {r['http_401']} 401s of "
                    f"{r['resource_requests']} requests; headers() max {r['headers_max_ms']} ms "
                    f"(first call {r['first_headers_max_ms']} ms)",
                )
            )
    for arm, why in f["skipped"].items():
        out.append(("F", _LABELS[arm], why))
    lat = f.get("renewal", {})
    if "none_ms" in lat:
        out.append(("F", "renewal, no store (a mint)", f"{lat['none_ms']} ms"))
    for arm in ("file", "redis"):
        if f"{arm}_empty_ms" in lat:
            out.append(
                (
                    "F",
                    f"renewal, {_LABELS[arm]}: empty / warm",
                    f"{lat[f'{arm}_empty_ms']} ms (mint + store: +{lat[f'{arm}_extra_ms']} ms over "
                    f"a mint) / {lat[f'{arm}_warm_ms']} ms (adopted, no mint)",
                )
            )
    if "key_derivation_ms" in lat:
        out.append(
            ("F", "store key derivation", f"{lat['key_derivation_ms']} ms, once per manager")
        )
    target = "each store arm <= 1.5 token requests per refresh interval (goal 1), no 401: "
    out.append(("F", "target", target + f["verdict"] + (" (smoke sizes)" if smoke else "")))
    return out


# -- a worker process ------------------------------------------------------------------------


def _store(spec: dict[str, Any]) -> TokenStore | None:
    arm = spec["arm"]
    if arm == "file":
        return FileTokenStore(spec["directory"])
    if arm == "redis":
        from aioica_auth import RedisTokenStore

        store: TokenStore = RedisTokenStore(spec["url"], prefix=spec["prefix"])
        return store
    return None


async def _window(
    args: argparse.Namespace, spec: dict[str, Any], commands: Callable[[], Awaitable[Any]]
) -> dict[str, Any]:
    """One run: a fresh manager, its tasks looping headers() + GET until shortly after its
    K-th token (prepared first, then started at the instant the next command names)."""
    store = _store(spec)
    key = ApiKey(os.environ["ICAV2_X_API_KEY"])
    latencies: list[float] = []
    firsts: list[float] = []
    taken = 0
    enough = asyncio.Event()

    def on_token(token: object) -> None:
        nonlocal taken
        taken += 1
        if taken >= spec["tokens"]:
            enough.set()

    manager = TokenManager.for_ica(key, base_url=args.base_url, store=store, on_token=on_token)
    try:
        async with manager, aiohttp.ClientSession(middlewares=(manager.middleware,)) as http:
            _answer({"prepared": True})
            start_at = (await commands())["start_at"]
            late = time.time() - start_at
            if late < 0:
                await asyncio.sleep(-late)
            started_at = time.monotonic()
            stop = False

            async def one() -> None:
                first = True
                while not stop:
                    started = time.perf_counter()
                    await manager.headers()
                    took = time.perf_counter() - started
                    if first:  # the cold start: every task waits for the first token
                        firsts.append(took)
                        first = False
                    else:  # after it: a wait here is a caller held up by a renewal
                        latencies.append(took)
                    async with http.get(args.resource_url) as response:
                        await response.read()
                    await asyncio.sleep(args.gap)

            async def stopper() -> ManagerStats:
                nonlocal stop
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(enough.wait(), spec["give_up"])
                await asyncio.sleep(_AFTER_LAST)  # the last token in use, far from a refresh
                stop = True
                return manager.stats

            *_, stats = await asyncio.gather(*(one() for _ in range(args.tasks)), stopper())
            assert isinstance(stats, ManagerStats)
            duration = time.monotonic() - started_at
    finally:
        if store is not None:
            await store.aclose()
    latencies.sort()
    latencies = latencies or [0.0]
    return {
        "late_s": round(max(0.0, late), 3),
        "duration_s": round(duration, 2),
        "first_headers_ms": round(max(firsts) * 1e3, 2),
        "tokens": stats.mints + stats.refreshes + stats.shared,
        "mints": stats.mints,
        "shared": stats.shared,
        "failures": stats.failures,
        "headers_max_ms": round(latencies[-1] * 1e3, 2),
        "headers_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2),
    }


async def _first_headers(
    args: argparse.Namespace, store: TokenStore | None
) -> tuple[float, float, int]:
    """(seconds to build the manager, seconds for its first headers(), tokens it adopted)."""
    key = ApiKey(os.environ["ICAV2_X_API_KEY"])
    built = time.perf_counter()
    manager = TokenManager.for_ica(key, base_url=args.base_url, store=store)
    built = time.perf_counter() - built
    async with manager:
        started = time.perf_counter()
        await manager.headers()
        took = time.perf_counter() - started
        return built, took, manager.stats.shared


async def _latency(args: argparse.Namespace, spec: dict[str, Any]) -> dict[str, Any]:
    """Renewal latency: no store, an empty store, a warm store (see the module docstring)."""
    samples: dict[str, list[float]] = {"none": [], "build_none": [], "build_store": []}
    arms = ["file"] + (["redis"] if spec.get("url") else [])
    adopted = {f"{arm}_{phase}": 0 for arm in arms for phase in ("empty", "warm")}
    for i in range(spec["rounds"]):
        build, took, _ = await _first_headers(args, None)
        samples["none"].append(took)
        samples["build_none"].append(build)
        for arm in arms:
            round_spec = {
                "arm": arm,
                "directory": str(Path(spec["directory"]) / f"round{i}"),
                "url": spec.get("url"),
                "prefix": f"aioica_latency_{i}",
            }
            store = _store(round_spec)
            assert store is not None
            try:
                # Connected before the clock runs: a fleet's store is connected long before
                # a renewal (a key no manager uses: nothing is found).
                await store.read("0" * 64)
                for phase in ("empty", "warm"):
                    build, took, shared = await _first_headers(args, store)
                    samples.setdefault(f"{arm}_{phase}", []).append(took)
                    samples["build_store"].append(build)
                    adopted[f"{arm}_{phase}"] += shared
            finally:
                await store.aclose()

    def ms(name: str) -> float:
        return round(statistics.median(samples[name]) * 1e3, 2)

    out: dict[str, Any] = {
        "rounds": spec["rounds"],
        "none_ms": ms("none"),
        "key_derivation_ms": round(ms("build_store") - ms("build_none"), 2),
        "adopted": adopted,
    }
    for arm in arms:
        out[f"{arm}_empty_ms"] = ms(f"{arm}_empty")
        out[f"{arm}_warm_ms"] = ms(f"{arm}_warm")
        out[f"{arm}_extra_ms"] = round(out[f"{arm}_empty_ms"] - out["none_ms"], 2)
    return out


async def _serve(args: argparse.Namespace) -> None:
    """The worker's loop: answer each command on stdin with one JSON line on stdout."""
    loop = asyncio.get_running_loop()

    async def commands() -> Any:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        return json.loads(line) if line else {"stop": True}

    _answer({"ready": True})
    while True:
        command = await commands()
        if command.get("stop"):
            return
        if "latency" in command:
            _answer(await _latency(args, command["latency"]))
        else:
            _answer(await _window(args, command, commands))


def _answer(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def worker(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.fleet --worker ...`: one process of the fleet."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--resource-url", required=True)
    parser.add_argument("--tasks", type=int, default=25)
    parser.add_argument("--gap", type=float, default=1.0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(worker())
