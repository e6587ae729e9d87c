"""A fleet of real processes sharing a store, against the local server in this process.

Each worker (tests/fleet_worker.py) is a manager with several tasks calling the protected
resource through the middleware, and checking that no token it holds has expired. The
server counts the mints of the whole fleet.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aioica_auth.testing import LocalIcaServer

from ..support import find_secret, wait_until

pytestmark = pytest.mark.slow  # real processes and seconds of real time
ROOT = Path(__file__).resolve().parents[2]


# A worker on a host whose clock is off: `time.time` shifted before anything is imported.
_SHIFTED = (
    "import runpy, sys, time; shift = float(sys.argv.pop(1)); wall = time.time; "
    "time.time = lambda: wall() + shift; "
    "runpy.run_module('tests.fleet_worker', run_name='__main__', alter_sys=True)"
)


async def spawn(  # type: ignore[no-untyped-def]
    srv: LocalIcaServer,
    store: str,
    *,
    start: float,
    until: float,
    clock_shift: float = 0.0,
    **options: Any,
):
    """Start one worker; it makes its first request at wall time `start` (by our clock; its
    own clock is `clock_shift` seconds off)."""
    head = ["-c", _SHIFTED, repr(clock_shift)] if clock_shift else ["-m", "tests.fleet_worker"]
    args = [
        sys.executable,
        *head,
        "--base-url",
        srv.ica_base_url,
        "--store",
        store,
        "--start",
        repr(start + clock_shift),
        "--until",
        repr(until + clock_shift),
    ]
    for name, value in options.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    env = {**os.environ, "FLEET_API_KEY": srv.api_key}
    return await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def collect(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["stderr"] = err.decode(errors="replace")
    return result


def store_spec(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "file":
        return f"file:{tmp_path}"
    server = request.getfixturevalue("redis_server")
    return f"redis:{server.url}"


STORES = ["file", "redis"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", STORES)
async def test_eight_processes_share_one_token_over_three_lifetimes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    lifetime, processes = 5.0, 8
    # A refresh 0.7 s before expiry (the refresh window, less the leeway of L/20 = 0.25 s), so
    # each token serves about 4 s: three lifetimes make the first mint and three renewals.
    async with LocalIcaServer(lifetime=lifetime) as srv:
        spec = store_spec(kind, tmp_path, request)
        start = time.time() + 4.0  # every worker started and waiting by then
        until = start + 3 * lifetime
        procs = [
            await spawn(srv, spec, start=start, until=until, refresh_margin=0.7, tasks=5, pause=0.1)
            for _ in range(processes)
        ]
        results = [await collect(p) for p in procs]
        creates = srv.counts["ica.create"]
    print(f"{kind}: {creates} mints; per worker", [(r["mints"], r["shared"]) for r in results])
    # Four tokens when the workers start on time; three when a busy machine starts them late
    # (the last renewal then falls after `until`). Never one per worker.
    assert 3 <= creates <= 3 + 1, (creates, [r["mints"] for r in results])
    assert sum(r["mints"] for r in results) == creates
    for r in results:
        assert set(r["statuses"]) == {"200"}, r["statuses"]  # no 401, no error
        assert r["statuses"]["200"] > 50
        assert r["expired"] == 0
        assert r["shared"] + r["mints"] >= creates - 1  # every token, but one near the end
        assert find_secret(r["stderr"] + json.dumps(r["warnings"]), [srv.api_key]) is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", STORES)
async def test_a_holder_killed_mid_mint_delays_the_others_by_the_lease_time_at_most(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    latency, request_timeout = 1.0, 1.5
    lease_time = 2 * request_timeout + 2
    async with LocalIcaServer(latency=latency) as srv:
        spec = store_spec(kind, tmp_path, request)
        now = time.time()
        holder = await spawn(srv, spec, start=now, until=now + 60, request_timeout=request_timeout)
        try:
            await wait_until(lambda: srv.counts["ica.create"] >= 1, 30)  # holds the lease, minting
            now = time.time()
            others = [
                await spawn(
                    srv,
                    spec,
                    start=now,
                    until=now + lease_time + latency + 4,
                    request_timeout=request_timeout,
                    acquire_timeout=lease_time + 10,
                    tasks=2,
                )
                for _ in range(2)
            ]
            os.kill(holder.pid, signal.SIGKILL)
            results = [await collect(p) for p in others]
        finally:
            if holder.returncode is None:
                holder.kill()
            await holder.communicate()
        creates = srv.counts["ica.create"]
    print(f"{kind}: first token after", [r["first_token"] for r in results], f"{creates} mints")
    for r in results:
        assert r["first_token"] is not None
        # The lease runs out (or the OS frees it), then one mint of `latency`; 3 s of margin.
        assert r["first_token"] <= lease_time + latency + 3, r
        assert set(r["statuses"]) == {"200"}, r["statuses"]
    assert creates == 2  # the killed holder's, then one for the others


@pytest.mark.timeout(150)
async def test_redis_stopped_mid_run_costs_nothing_and_sharing_resumes_after_restart(
    request: pytest.FixtureRequest,
) -> None:
    redis = request.getfixturevalue("redis_server")
    lifetime, processes = 4.0, 4
    interval = lifetime - lifetime / 20 - 1.0  # refresh_margin 1 s, leeway L/20
    async with LocalIcaServer(lifetime=lifetime) as srv:
        start = time.time() + 4.0
        until = start + 19.0
        procs = [
            await spawn(
                srv,
                f"redis:{redis.url}",
                start=start,
                until=until,
                refresh_margin=1.0,
                request_timeout=1.0,
                tasks=4,
                pause=0.1,
            )
            for _ in range(processes)
        ]
        await asyncio.sleep(max(0.0, start + 4.0 - time.time()))
        await asyncio.to_thread(redis.stop)  # down for 6 s: about two renewals each
        before_outage = srv.counts["ica.create"]
        await asyncio.sleep(max(0.0, start + 10.0 - time.time()))
        await asyncio.to_thread(redis.start)
        during_outage = srv.counts["ica.create"] - before_outage
        # Each worker's next renewal goes through the store again: within one interval.
        await asyncio.sleep(max(0.0, start + 10.0 + interval + 0.5 - time.time()))
        rejoined = srv.counts["ica.create"]
        results = [await collect(p) for p in procs]
        after = srv.counts["ica.create"] - rejoined
    window = until - (start + 10.0 + interval + 0.5)
    print(f"mints: {before_outage} before, {during_outage} during, {after} after ({window:.1f} s)")
    assert before_outage <= 3
    assert during_outage >= processes  # each renewed on its own meanwhile
    assert after <= window / interval + 2  # shared again: about one per refresh
    for r in results:
        assert set(r["statuses"]) == {"200"}, r["statuses"]  # nothing lost, no 401
        assert r["expired"] == 0
        failed = [w for w in r["warnings"] if "failed" in w]
        assert len(failed) == 1, r["warnings"]
        assert any("answers again" in w for w in r["warnings"]), r["warnings"]
        assert find_secret(r["stderr"] + json.dumps(r["warnings"]), [srv.api_key]) is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", STORES)
async def test_a_holder_killed_mid_mint_never_fails_a_newcomer_with_the_defaults(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The default policy (request_timeout 10 s, acquire_timeout 15 s): holder A takes the
    lease and sends its mint (3 s of latency), is killed with -9; the endpoint is healthy
    again; a newcomer B's first token() is served within its acquire_timeout, by one mint of
    its own, where it used to fail after 15 s waiting out A's 22 s Redis lease."""
    async with LocalIcaServer(latency=3.0) as srv:
        spec = store_spec(kind, tmp_path, request)
        now = time.time()
        holder = await spawn(srv, spec, start=now, until=now + 60, request_timeout=10.0)
        try:
            await wait_until(lambda: srv.counts["ica.create"] >= 1, 30)  # holds the lease
            os.kill(holder.pid, signal.SIGKILL)
            await holder.communicate()
            srv.latency = 0.0
            now = time.time()
            newcomer = await spawn(
                srv, spec, start=now, until=now + 12.0, request_timeout=10.0, tasks=1, pause=0.5
            )
            result = await collect(newcomer)
        finally:
            if holder.returncode is None:
                holder.kill()
                await holder.communicate()
        creates = srv.counts["ica.create"]
    print(f"{kind}: newcomer's first token after {result['first_token']:.1f} s, {creates} mints")
    assert result["first_token"] is not None
    assert result["first_token"] < 15.0 - 3.0  # within acquire_timeout, with room to spare
    assert set(result["statuses"]) == {"200"}, result["statuses"]
    assert result["failures"] == 0
    assert creates == 2  # the killed holder's, then the newcomer's one


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", STORES)
async def test_a_retry_after_is_honoured_by_the_whole_fleet(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """6 processes start while the token endpoint answers `429 Retry-After: 2` for 6 s: the
    fleet asks about once per 2 s in all (without a shared hold each process asked 3 times:
    18), no two requests closer than the server asked, and every process gets the token once
    the endpoint recovers."""
    processes, window, retry_after = 6, 6.0, 2.0
    async with LocalIcaServer() as srv:
        spec = store_spec(kind, tmp_path, request)
        start = time.time() + 3.0  # every worker started and waiting by then
        procs = [
            await spawn(
                srv, spec, start=start, until=start + window + 8, acquire_timeout=30, tasks=2
            )
            for _ in range(processes)
        ]
        await asyncio.sleep(max(0.0, start - time.time()))
        fault = srv.inject("ica.create", status=429, times=None, retry_after=f"{retry_after:g}")
        try:
            await asyncio.sleep(window)
        finally:
            srv.remove_fault(fault)
        results = [await collect(p) for p in procs]
        creates = [r.at for r in srv.requests if r.endpoint == "ica.create"]
        limited = srv.statuses["ica.create", 429]
    gaps = [b - a for a, b in itertools.pairwise(creates)]
    print(f"{kind}: {limited} answered 429, {len(creates)} in all; gaps", gaps)
    assert limited <= window / retry_after + 1  # 4 at most: once per Retry-After
    assert len(creates) == limited + 1  # then one mint for all
    assert min(gaps) >= retry_after - 0.25  # the server's time, honoured fleet-wide
    for r in results:
        assert r["first_token"] is not None
        assert set(r["statuses"]) == {"200"}, r["statuses"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["redis"])  # hosts with clocks of their own share Redis
async def test_a_host_whose_clock_is_behind_never_serves_an_adopted_token_past_its_expiry(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Host Q's clock is 7 s behind, tokens live 8 s, over real processes: Q adopts what P
    published and never sends one the resource refuses. (The exact judgement, which used to
    serve an old adopted token past its expiry, is checked with an injected clock in
    test_fleet_faults.py: here the timing of adoptions is up to the processes.)"""
    lifetime = 8.0
    async with LocalIcaServer(lifetime=lifetime) as srv:
        spec = store_spec(kind, tmp_path, request)
        start = time.time() + 3.0
        until = start + 2 * lifetime
        publisher = await spawn(srv, spec, start=start, until=until, tasks=2, pause=0.05)
        late = await spawn(
            srv, spec, start=start + 1.0, until=until, clock_shift=-7.0, tasks=4, pause=0.05
        )
        results = [await collect(publisher), await collect(late)]
        refused = srv.statuses["resource", 401]
        served = srv.statuses["resource", 200]
    print(f"{kind}: {served} served, {refused} refused; late host", results[1]["mints"], "mints")
    assert refused == 0
    assert results[1]["shared"] >= 1  # Q did adopt
    for r in results:
        assert set(r["statuses"]) == {"200"}, r["statuses"]
