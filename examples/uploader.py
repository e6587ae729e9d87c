"""Upload many parts concurrently to ICA, with one shared TokenManager.

    ICAV2_X_API_KEY=... python examples/uploader.py [PARTS]

Every request gets its bearer from the middleware at send time, so an upload that outlives
a token picks up the fresh one; the 1,000 tasks cause one token request per refresh.
Set ICAV2_BASE_URL to point at another server (such as `aioica-auth serve`).
"""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp

from aioica_auth import TokenManager, discover_credentials


async def upload_part(http: aiohttp.ClientSession, base: str, part: int) -> int:
    async with http.put(f"{base}/api/projects/demo/parts/{part}", data=os.urandom(4096)) as r:
        return r.status


async def upload_all(manager: TokenManager, base: str, parts: int) -> list[int]:
    """Upload `parts` parts concurrently; the statuses, in order."""
    limit = asyncio.Semaphore(100)  # bound the requests in flight to the connection pool

    async def one(http: aiohttp.ClientSession, part: int) -> int:
        async with limit:
            return await upload_part(http, base, part)

    async with aiohttp.ClientSession(middlewares=(manager.middleware,)) as http:
        return await asyncio.gather(*(one(http, n) for n in range(parts)))


async def main(parts: int) -> int:
    found = discover_credentials()  # ICAV2_X_API_KEY, ~/.icav2/config.yaml, ...
    base = found.base_url
    async with TokenManager.for_ica(found.credential, base_url=base) as manager:
        statuses = await upload_all(manager, base, parts)
    ok = statuses.count(200)
    print(f"{ok}/{parts} parts uploaded with {manager.stats.mints} token request(s)")
    return 0 if ok == parts else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)))
