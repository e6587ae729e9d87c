"""`FileTokenStore`'s lease deadline, wake-ups, housekeeping and daemon threads, with real
processes where it matters: a stopped or blocked holder is taken over once its ttl passes;
a waiter wakes within milliseconds of a publish; expired keys are swept, live and held ones
kept; a read stuck in the kernel never holds up `asyncio.run`'s exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aioica_auth import FileTokenStore
from aioica_auth._fleet.file_io import lock_current
from aioica_auth._fleet.file_lease import Lease, sweep, take
from aioica_auth.testing import LocalIcaServer

from ..support import find_secret, key_of, wait_until
from .test_fleet_processes import collect, spawn

KEY = "cd" * 32
OTHER = "ef" * 32
ROOT = Path(__file__).resolve().parents[2]
HOUR = 3600.0


async def start_worker(*args: str, env: dict[str, str] | None = None) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.file_store_worker", *args, cwd=ROOT,
        env={**os.environ, **(env or {})}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def said(proc: Any, within: float = 30.0) -> dict[str, Any]:
    line = await asyncio.wait_for(proc.stdout.readline(), within)
    assert line, (await proc.stderr.read()).decode(errors="replace")[-2000:]
    result: dict[str, Any] = json.loads(line)
    return result


async def finish(proc: Any) -> None:
    if proc.returncode is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    await proc.communicate()


async def test_a_lease_past_its_ttl_is_taken_over_and_its_holder_disturbs_nobody(
    tmp_path: Path,
) -> None:
    old, taker, third = (FileTokenStore(tmp_path) for _ in range(3))
    stuck = await old.acquire(KEY, 0.3)
    assert stuck is not None
    assert await taker.acquire(KEY, 5.0) is None  # within its ttl: held
    await wait_until(lambda: time.time() > stuck_deadline(tmp_path), 5)
    new = await taker.acquire(KEY, 5.0)
    assert new is not None  # taken over
    assert await third.acquire(KEY, 5.0) is None  # the new holder's deadline is ahead
    await old.release(KEY, stuck)  # the old holder resumes: it closes its own, unlinked file
    assert await third.acquire(KEY, 5.0) is None
    await taker.release(KEY, new)
    again = await third.acquire(KEY, 5.0)
    assert again is not None
    await third.release(KEY, again)


def stuck_deadline(directory: Path) -> float:
    return float((directory / f"{KEY}.lock").read_bytes().split()[2])


async def test_a_holder_past_its_ttl_keeps_working_until_someone_takes_over(
    tmp_path: Path,
) -> None:
    store = FileTokenStore(tmp_path)
    lease = await store.acquire(KEY, 0.05)
    assert lease is not None
    await asyncio.sleep(0.1)  # the ttl passes; nobody else asks
    assert await store.publish(KEY, b"entry", expires_at=time.time() + HOUR)
    await store.release(KEY, lease)
    assert await store.read(KEY) == b"entry"


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf")])
async def test_a_ttl_that_is_not_a_positive_time_is_refused(tmp_path: Path, ttl: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        await FileTokenStore(tmp_path).acquire(KEY, ttl)


def test_of_many_takers_of_a_lapsed_lease_exactly_one_wins(tmp_path: Path) -> None:
    for _ in range(20):
        lapsed, _ = take(tmp_path, KEY, 0.001)
        assert lapsed is not None
        time.sleep(0.002)
        barrier = threading.Barrier(8)
        won: list[Lease] = []
        threads = [
            threading.Thread(target=try_once, args=(tmp_path, barrier, won)) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(won) == 1
        for lease in (lapsed, *won):
            os.close(lease.fd)


def try_once(directory: Path, barrier: threading.Barrier, won: list[Lease]) -> None:
    barrier.wait()
    lease, _ = take(directory, KEY, 60.0)
    if lease is not None:
        won.append(lease)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["stopped", "blocked"])
async def test_a_stuck_holder_process_is_taken_over_and_resumes_harmlessly(
    tmp_path: Path, how: str
) -> None:
    store = FileTokenStore(tmp_path)
    assert await store.publish(KEY, b"live", expires_at=time.time() + HOUR)
    holder = await start_worker("hold", str(tmp_path), KEY, "0.5", "1.0")
    try:
        assert (await said(holder))["held"]
        if how == "stopped":
            os.kill(holder.pid, signal.SIGSTOP)
        started = time.monotonic()
        lease = None
        while lease is None:  # as a waiter does: acquire, wait
            assert time.monotonic() - started < 10, "never taken over"
            lease = await store.acquire(KEY, 30.0)
            if lease is None:
                await store.wait(KEY, 0.5)
        if how == "stopped":
            os.kill(holder.pid, signal.SIGCONT)
        holder.stdin.write(b"go\n")
        resumed = await said(holder)
        # Its release freed nothing of ours, and its publish is fenced by the later expiry.
        assert resumed == {"reacquired": False, "published": False}
        await asyncio.wait_for(holder.wait(), 30)
        assert await FileTokenStore(tmp_path).acquire(KEY, 5.0) is None
        assert await store.read(KEY) == b"live"
        await store.release(KEY, lease)
    finally:
        await finish(holder)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["stopped", "blocked"])
async def test_a_fleet_takes_over_from_a_stuck_holder_and_shares_again(
    tmp_path: Path, how: str
) -> None:
    """A holder takes the fleet's lease (ttl 5 s) and is stopped (or blocks its loop); four
    workers start 3 s later. Once the ttl passes one of them takes over, and every renewal
    costs one token request for the fleet (not one per process, after each one's patience
    of 7 s); the holder, resumed, neither frees the lease of another nor replaces the entry."""
    lifetime, processes, run = 4.0, 4, 12.0
    interval = lifetime - lifetime / 20 - 1.0  # refresh_margin 1 s, leeway L/20
    async with LocalIcaServer(lifetime=lifetime) as srv:
        holder = await start_worker("hold", str(tmp_path), key_of(srv), "5.0", "1.0")
        try:
            assert (await said(holder))["held"]
            if how == "stopped":
                os.kill(holder.pid, signal.SIGSTOP)
            start = time.time() + 3.0
            spec = f"file:{tmp_path}"
            procs = [
                await spawn(
                    srv,
                    spec,
                    start=start,
                    until=start + run,
                    refresh_margin=1.0,
                    request_timeout=1.0,
                    tasks=2,
                    pause=0.1,
                )
                for _ in range(processes)
            ]
            await wait_until(lambda: srv.counts["ica.create"] >= 2, 30)  # taken over, renewed
            if how == "stopped":
                os.kill(holder.pid, signal.SIGCONT)
            holder.stdin.write(b"go\n")
            assert (await said(holder))["published"] is False  # fenced: a later one is stored
            results = [await collect(p) for p in procs]
        finally:
            await finish(holder)
        creates = srv.counts["ica.create"]
    print(
        f"{how}: {creates} mints;", [(r["first_token"], r["mints"], r["shared"]) for r in results]
    )
    assert creates <= (run - 2.0) / interval + 2, creates  # about one per refresh, not 4
    assert sum(r["mints"] for r in results) == creates
    took_over = [w for r in results for w in r["warnings"] if "took over" in w]
    assert len(took_over) == 1, took_over
    for r in results:
        assert set(r["statuses"]) == {"200"}, r["statuses"]
        assert r["expired"] == 0
        assert r["first_token"] < 2.0 + 2.0, r  # the ttl's end, not a patience of 7 s
        assert find_secret(r["stderr"] + json.dumps(r["warnings"]), [srv.api_key]) is None


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_waiters_wake_within_milliseconds_of_a_publish(tmp_path: Path) -> None:
    """Four waiting processes; a publisher holds the lease and publishes every 30 to 70 ms.
    Prints the publish -> wake and publish -> read latencies (from the publish call's start,
    so the fsync is included); the bound asserted is loose (parallel test load)."""
    rounds = 25
    waiters = [await start_worker("wait", str(tmp_path), KEY, str(rounds)) for _ in range(4)]
    try:
        for proc in waiters:
            assert (await said(proc))["ready"]
        store = FileTokenStore(tmp_path)
        done = [asyncio.ensure_future(proc.communicate()) for proc in waiters]
        published = 0
        while not all(d.done() for d in done) and published < 20 * rounds:
            lease = await store.acquire(KEY, 5.0)
            entry = repr(time.time()).encode()
            await store.publish(KEY, entry, expires_at=time.time() + HOUR + published)
            await store.release(KEY, lease)
            published += 1
            await asyncio.sleep(0.03 + 0.04 * (published % 5) / 4)
        outs = await asyncio.wait_for(asyncio.gather(*done), 30)
    finally:
        for proc in waiters:
            await finish(proc)
    wake: list[float] = []
    adopt: list[float] = []
    for out, _ in outs:
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert len(result["adopt"]) == rounds
        wake += result["wake"]
        adopt += result["adopt"]
    figures = {
        name: (statistics.median(xs) * 1e3, sorted(xs)[int(len(xs) * 0.99)] * 1e3)
        for name, xs in (("wake", wake), ("adopt", adopt))
    }
    print("publish -> (p50, p99) ms:", {k: f"{a:.1f}, {b:.1f}" for k, (a, b) in figures.items()})
    assert figures["adopt"][0] < 100
    assert figures["adopt"][1] < 500


async def test_housekeeping_removes_expired_keys_and_keeps_live_and_held_ones(
    tmp_path: Path,
) -> None:
    now = time.time()
    store = FileTokenStore(tmp_path)
    names = ("expired", "live", "leased", "publishing", "b", "c")
    keys = {name: digit * 64 for name, digit in zip(names, "12345c", strict=True)}
    for name in ("expired", "leased", "publishing", "live"):
        path = tmp_path / (keys[name] + ".token")
        path.write_bytes(
            b"aioica_auth-store 1 %r\n{}" % (now + (HOUR if name == "live" else -HOUR))
        )
        (tmp_path / (keys[name] + ".publish")).write_bytes(b"")
    for name in ("b", "c"):  # no entry: lock files only, b's an hour old
        (tmp_path / (keys[name] + ".lock")).write_bytes(b"")
    os.utime(tmp_path / (keys["b"] + ".lock"), (now - HOUR, now - HOUR))
    for name, age in ((".tmp-old.token", HOUR), (".tmp-new.token", 0.0)):
        (tmp_path / name).write_bytes(b"")
        os.utime(tmp_path / name, (now - age, now - age))
    (tmp_path / "README").write_bytes(b"not ours")
    for name in os.listdir(tmp_path):
        os.chmod(tmp_path / name, 0o600)
    lease = await FileTokenStore(tmp_path).acquire(keys["leased"], 60.0)
    assert lease is not None
    publishing = lock_current(tmp_path, tmp_path / (keys["publishing"] + ".publish"))
    assert publishing is not None
    try:
        store._next_sweep = 0.0
        assert await store.publish(OTHER, b"{}", expires_at=now + HOUR)  # starts a sweep
        await wait_until(lambda: not (tmp_path / (keys["expired"] + ".token")).exists(), 10)
        await store.aclose()
        left = set(os.listdir(tmp_path))
        gone = {keys["expired"] + s for s in (".token", ".publish", ".lock", ".takeover")}
        assert not left & gone
        assert keys["b"] + ".lock" not in left
        assert ".tmp-old.token" not in left
        kept = {".tmp-new.token", "README", keys["c"] + ".lock", keys["live"] + ".token"}
        kept |= {keys[n] + ".token" for n in ("leased", "publishing")}
        assert kept <= left
        assert await FileTokenStore(tmp_path).acquire(keys["leased"], 5.0) is None  # still held
        assert sweep(tmp_path) == 0  # nothing more to do while they are held
    finally:
        await store.release(keys["leased"], lease)
        os.close(publishing)
    assert sweep(tmp_path) >= 2  # released: the leased and the publishing keys go too
    assert await store.read(keys["leased"]) is None
    assert await store.read(keys["live"]) == b"{}"


async def test_a_publish_sweeps_at_most_once_per_interval(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path)
    old = tmp_path / ("a" * 64 + ".token")
    assert await store.publish(KEY, b"{}", expires_at=time.time() + HOUR)  # the first sweeps
    await store.aclose()
    old.write_bytes(b"aioica_auth-store 1 1.0\n{}")
    old.chmod(0o600)
    assert await store.publish(KEY, b"{}", expires_at=time.time() + 2 * HOUR)
    await store.aclose()
    assert old.exists()  # within the interval: no second sweep


@pytest.mark.timeout(60)
async def test_a_read_stuck_in_the_kernel_costs_the_call_not_the_process_exit(
    tmp_path: Path,
) -> None:
    """A worker whose store's reads block for good: its manager renews alone after the store
    call's timeout, and asyncio.run() returns (the read's thread is the store's, a daemon)."""
    async with LocalIcaServer() as srv:
        proc = await start_worker(
            "stall", str(tmp_path), srv.ica_base_url, env={"FLEET_API_KEY": srv.api_key}
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            await finish(proc)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert lines[-1] == {"exited": True}
    assert "token" in lines[0]
    assert srv.counts["ica.create"] == 1
