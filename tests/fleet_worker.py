"""One worker process of a fleet test: a manager with many tasks calling the local resource.

Run as `python -m tests.fleet_worker --base-url URL --store SPEC --until WALL ...`, with the
API key in `FLEET_API_KEY` (not on the command line). `SPEC` is `none`, `file:DIR` or
`redis:URL`. Prints one JSON line when done: requests, statuses, expired tokens seen, the
time to the first token, the manager's stats and its warnings.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import sys
import time
from typing import Any

import aiohttp

from aioica_auth import ApiKey, FileTokenStore, TokenManager, TokenStore


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _store(spec: str) -> TokenStore | None:
    kind, _, where = spec.partition(":")
    if kind == "none":
        return None
    if kind == "file":
        return FileTokenStore(where)
    if kind == "redis":
        from aioica_auth import RedisTokenStore

        store: TokenStore = RedisTokenStore(where)
        return store
    msg = f"unknown store {spec!r}"
    raise SystemExit(msg)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    store = _store(args.store)
    manager = TokenManager.for_ica(
        ApiKey(os.environ["FLEET_API_KEY"]),
        base_url=args.base_url,
        store=store,
        request_timeout=args.request_timeout,
        refresh_margin=args.refresh_margin,
        acquire_timeout=args.acquire_timeout,
    )
    statuses: collections.Counter[str] = collections.Counter()
    expired = 0
    await asyncio.sleep(max(0.0, args.start - time.time()))
    started = time.time()
    first: float | None = None
    resource = args.base_url + "/api/projects"

    async def task(session: aiohttp.ClientSession) -> None:
        nonlocal expired, first
        while time.time() < args.until:
            token = await manager.token()
            if first is None:
                first = time.time() - started
            assert token.expires_at is not None
            if token.expires_at.timestamp() <= time.time():
                expired += 1
            try:
                async with session.get(resource) as response:
                    statuses[str(response.status)] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1
            await asyncio.sleep(args.pause)

    try:
        async with aiohttp.ClientSession(middlewares=(manager.middleware,)) as session:
            await asyncio.gather(*(task(session) for _ in range(args.tasks)))
    finally:
        await manager.aclose()
        if store is not None:
            await store.aclose()
    stats = manager.stats
    return {
        "statuses": dict(statuses),
        "expired": expired,
        "first_token": first,
        "mints": stats.mints,
        "shared": stats.shared,
        "failures": stats.failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--store", default="none")
    parser.add_argument("--start", type=float, default=0.0, help="wall time to begin at")
    parser.add_argument("--until", type=float, required=True, help="wall time to stop at")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.02)
    parser.add_argument("--request-timeout", type=float, default=3.0)
    parser.add_argument("--refresh-margin", type=float, default=1200.0)
    parser.add_argument("--acquire-timeout", type=float, default=15.0)
    args = parser.parse_args()
    handler = _Warnings()
    logging.getLogger("aioica_auth").addHandler(handler)
    result = asyncio.run(_run(args))
    result["warnings"] = handler.messages
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
