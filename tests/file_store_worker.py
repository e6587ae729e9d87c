"""One process of a `FileTokenStore` test: `python -m tests.file_store_worker MODE ...`.

Modes (each prints JSON lines on stdout, flushed):

* `hold DIR KEY TTL EXPIRES`: takes the lease of KEY for TTL s and prints `{"held": bool}`;
  then blocks its event loop in a synchronous read of stdin (the stuck holder: left so, or
  SIGSTOPped). On a line it gives the lease back, tries to take it again, publishes an
  entry expiring at EXPIRES, and prints `{"reacquired": bool, "published": bool}`.
* `wait DIR KEY ROUNDS`: the waiting side of SharedSource (read, wait, read) until it has
  seen ROUNDS new entries, each holding the publisher's wall time before its publish; prints
  `{"ready": true}` once waiting, then `{"wake": [...], "adopt": [...]}`: seconds from each
  publish's start to the wait's return, and to the new entry read.
* `stall DIR URL`: a manager whose store's reads block for good (a hung file system) gets its
  token alone and `asyncio.run` returns; prints `{"token": fingerprint}` then `{"exited": true}`.
  The API key is in `FLEET_API_KEY`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aioica_auth import ApiKey, FileTokenStore, TokenManager


def say(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def hold(directory: str, key: str, ttl: float, expires: float) -> None:
    store = FileTokenStore(directory)
    lease = await store.acquire(key, ttl)
    say(held=lease is not None)
    sys.stdin.readline()  # blocks the event loop: a long synchronous call
    await store.release(key, lease)
    again = await store.acquire(key, ttl)
    published = await store.publish(key, b"{}", expires_at=expires)
    say(reacquired=again is not None, published=published)
    if again is not None:
        await store.release(key, again)
    await store.aclose()


async def wait(directory: str, key: str, rounds: int) -> None:
    store = FileTokenStore(directory)
    wake: list[float] = []
    adopt: list[float] = []
    last = await store.read(key)
    say(ready=True)
    give_up = time.monotonic() + 60.0
    while len(adopt) < rounds and time.monotonic() < give_up:
        await store.wait(key, 2.0)
        woke = time.time()
        raw = await store.read(key)
        if raw is not None and raw != last:
            last = raw
            adopt.append(time.time() - float(raw))
            wake.append(woke - float(raw))
    say(wake=wake, adopt=adopt)


async def stall(directory: str, url: str) -> None:
    store = FileTokenStore(directory)
    stuck = threading.Event()  # never set

    def hung_read(path: Path) -> Any:
        stuck.wait()  # as a read of a hung network file system

    store._read = hung_read  # type: ignore[method-assign]
    manager = TokenManager.for_ica(
        ApiKey(os.environ["FLEET_API_KEY"]), base_url=url, store=store, request_timeout=1.0
    )
    async with manager:
        token = await manager.token()
    say(token=token.fingerprint)


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "hold":
        asyncio.run(hold(args[0], args[1], float(args[2]), float(args[3])))
    elif mode == "wait":
        asyncio.run(wait(args[0], args[1], int(args[2])))
    elif mode == "stall":
        asyncio.run(stall(args[0], args[1]))
        say(exited=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
