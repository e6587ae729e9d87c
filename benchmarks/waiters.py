"""W  waiters: M managers of one fleet wait on one renewal; what each costs the store.

M managers (16, 256) in this process, each with a store instance of its own (its own Redis
connection and subscription, as M processes would have), share one token through a
`FileTokenStore` or a `RedisTokenStore` (our own `redis-server`). After a cold start, each
round drops every manager's token at once (`invalidate`: as if all reached their refresh
point together, the worst case) and all call `headers()`: one manager mints (the local
server answers a token request after 0.2 s or 2 s), the others wait and adopt. Measured:

- Redis commands per manager per renewal, from `INFO commandstats` (reset before the round;
  `CONFIG` and `INFO` themselves left out), for both mint latencies: a waiter's cost must not
  grow with the mint's duration (goal <= 3);
- publish -> adopt: from the moment the server answers the mint (its request's arrival plus
  the latency it was told to take) to each waiter's `headers()` returning, p50 and p99: the
  answer's way back, the publication (an fsync for the file store), the wake-up and the
  adoption (goal p99 <= 50 ms file, <= 25 ms Redis; with 256 managers on one event loop
  this includes the loop's queue of their wake-ups and reads);
- commands in the steady state: every manager calling `headers()` for a second between
  refresh points (goal 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aioica_auth import ApiKey, FileTokenStore, TokenManager, TokenStore

from .fleet import _redis

_STEADY = 1.0  # seconds of headers() calls between refresh points


async def waiters(
    *,
    sizes: tuple[int, ...],
    latencies: tuple[float, ...],
    arms: tuple[str, ...] = ("file", "redis"),
) -> dict[str, Any]:
    """W: per arm and M, per mint latency: commands per manager, publish->adopt p50/p99."""
    from aioica_auth.testing import LocalIcaServer

    out: dict[str, Any] = {"runs": {}, "skipped": {}}
    async with LocalIcaServer(lifetime=3600) as server, _redis(arms) as (url, why):
        if "redis" in arms and url is None:
            out["skipped"]["redis"] = why
        for arm in arms:
            if arm == "redis" and url is None:
                continue
            for m in sizes:
                with tempfile.TemporaryDirectory(prefix="aioica-waiters-") as scratch:
                    stores = [_store(arm, scratch, url, m) for _ in range(m)]
                    result = await _rounds(
                        server, stores, latencies, url if arm == "redis" else None
                    )
                out["runs"].setdefault(arm, {})[str(m)] = result
    return out


def _store(arm: str, scratch: str, url: str | None, m: int) -> TokenStore:
    if arm == "file":
        return FileTokenStore(Path(scratch))
    from aioica_auth import RedisTokenStore

    assert url is not None
    store: TokenStore = RedisTokenStore(url, prefix=f"aioica_waiters_{m}")
    return store


async def _rounds(
    server: Any, stores: list[TokenStore], latencies: tuple[float, ...], url: str | None
) -> dict[str, Any]:
    key = ApiKey(server.api_key)
    managers = [TokenManager.for_ica(key, base_url=server.ica_base_url, store=s) for s in stores]
    counter = _Commands(url)
    out: dict[str, Any] = {}
    try:
        server.latency = 0.0
        await asyncio.gather(*(m.headers() for m in managers))  # the cold start
        for latency in latencies:
            server.latency = latency
            for m in managers:
                lease = m._lease  # the newest lease (`current()` is no longer public)
                if lease is not None:
                    m.invalidate(lease.token)
            mints = sum(m.stats.mints for m in managers)
            await counter.reset()
            done = await asyncio.gather(*(_adopted(m) for m in managers))
            commands = await counter.total()
            mint = [r.at for r in server.requests if r.endpoint == "ica.create"][-1]
            answered = mint + latency  # the server's clock is this host's wall clock
            delays = sorted(t - answered for t, minted in done if not minted)
            out[f"{latency:g}"] = {
                "mints": sum(m.stats.mints for m in managers) - mints,
                "commands_per_manager": None
                if commands is None
                else round(commands / len(managers), 2),
                "adopt_p50_ms": _ms(delays, 0.5),
                "adopt_p99_ms": _ms(delays, 0.99),
            }
        await counter.reset()
        end = time.monotonic() + _STEADY
        while time.monotonic() < end:
            await asyncio.gather(*(m.headers() for m in managers))
            await asyncio.sleep(0.05)
        out["steady_commands"] = await counter.total()
    finally:
        for m in managers:
            await m.aclose()
        for s in stores:
            await s.aclose()
        await counter.aclose()
    return out


async def _adopted(m: TokenManager) -> tuple[float, bool]:
    """When `m.headers()` returned (wall time), and whether `m` minted for it."""
    before = m.stats.mints
    await m.headers()
    return time.time(), m.stats.mints > before


def _ms(delays: list[float], q: float) -> float | None:
    if not delays:
        return None
    if q == 0.5:
        return round(statistics.median(delays) * 1e3, 1)
    return round(delays[min(len(delays) - 1, int(len(delays) * q))] * 1e3, 1)


class _Commands:
    """Commands Redis ran since `reset`, from `INFO commandstats` (None without Redis)."""

    def __init__(self, url: str | None) -> None:
        self._client: Any = None
        if url is not None:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(url)

    async def reset(self) -> None:
        if self._client is not None:
            await self._client.config_resetstat()

    async def total(self) -> int | None:
        if self._client is None:
            return None
        stats = await self._client.info("commandstats")
        return sum(
            int(v["calls"])
            for k, v in stats.items()
            if not k.startswith(("cmdstat_config", "cmdstat_info"))
        )

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()


def rows(w: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table rows of W (see `benchmarks.__main__.table`)."""
    labels = {"file": "file store", "redis": "Redis store"}
    out: list[tuple[str, str, str]] = []
    for arm, by_m in w["runs"].items():
        for m, r in by_m.items():
            for latency, x in r.items():
                if latency == "steady_commands":
                    continue
                cost = (
                    ""
                    if x["commands_per_manager"] is None
                    else (f"{x['commands_per_manager']:g} commands per manager, ")
                )
                out.append(
                    (
                        "W",
                        f"{labels[arm]}, {m} managers, {latency} s mint",
                        f"{x['mints']} mint; {cost}publish->adopt p50 {x['adopt_p50_ms']} ms, "
                        f"p99 {x['adopt_p99_ms']} ms",
                    )
                )
            if r.get("steady_commands") is not None:
                out.append(
                    (
                        "W",
                        f"{labels[arm]}, {m} managers, steady",
                        f"{r['steady_commands']} commands in {_STEADY:g} s",
                    )
                )
    for arm, why in w["skipped"].items():
        out.append(("W", labels[arm], why))
    return out
