"""Embed one TokenManager in a long-running async service and share it.

    ICAV2_X_API_KEY=... python examples/service.py

The manager is created once at start-up, handed to every handler, and closed at shutdown.
Handlers that do not use aiohttp ask for the header directly (`await manager.headers()`);
`on_token` feeds a metric or a log line each time a new token arrives.
The credential and API root come from where ICA users keep them (`ICAV2_X_API_KEY`,
`~/.icav2/config.yaml`, ...: see `discover_credentials`). Set ICAV2_BASE_URL to point at
another server (such as `aioica-auth serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp

from aioica_auth import Token, TokenManager, discover_credentials


class Service:
    """A stand-in for your service: a few workers sharing one manager and one session."""

    def __init__(self, manager: TokenManager, http: aiohttp.ClientSession, base: str) -> None:
        self.manager, self.http, self.base = manager, http, base
        self.handled = 0

    async def handle(self, job: int) -> None:
        async with self.http.get(f"{self.base}/api/projects", params={"job": job}) as r:
            r.raise_for_status()
        self.handled += 1

    async def long_transfer(self) -> None:
        # About to start something long: ask for a token that outlasts it.
        headers = await self.manager.headers(min_validity=60)
        async with self.http.get(f"{self.base}/api/projects", headers=headers) as r:
            r.raise_for_status()
        self.handled += 1


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[Service]:
    found = discover_credentials()

    def on_token(token: Token) -> None:
        print(f"new token {token.fingerprint}, expires {token.expires_at:%H:%M:%S}")

    manager = TokenManager.for_ica(found.credential, base_url=found.base_url, on_token=on_token)
    async with manager, aiohttp.ClientSession(middlewares=(manager.middleware,)) as http:
        yield Service(manager, http, found.base_url)


async def main() -> None:
    async with lifespan() as service:
        await asyncio.gather(*(service.handle(n) for n in range(50)), service.long_transfer())
        print(f"handled {service.handled} jobs; manager stats: {service.manager.stats}")


if __name__ == "__main__":
    asyncio.run(main())
