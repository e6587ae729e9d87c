"""Keep a platform console psToken session alive and mint JWTs from it.

    ICA_PS_TOKEN=... python examples/console_session.py

The manager extends the psToken session through `/v1/tokens:refresh` whenever a new JWT is
due and every `keepalive_interval` seconds, adopts a new psToken if the server rotates it,
and mints JWTs with `Bearer <psToken>`. Set ICA_CONSOLE_URL for another region or server.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp

from aioica_auth import CONSOLE_BASE_URL, ConsoleTokenApi, Jwt, PsToken, TokenManager


async def main() -> None:
    base = os.environ.get("ICA_CONSOLE_URL", CONSOLE_BASE_URL)
    ps_token = PsToken(os.environ["ICA_PS_TOKEN"])
    manager = TokenManager.for_console(ps_token, base_url=base, keepalive_interval=300)
    async with manager, aiohttp.ClientSession() as session:
        token = await manager.token()
        print(f"JWT {token.fingerprint} valid until {token.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        details = await ConsoleTokenApi(session, base).get_token_details(Jwt(token.value))
        print(f"signed in as {details.username} (tenant {details.tid})")
        print(f"manager: {manager.stats}")


if __name__ == "__main__":
    asyncio.run(main())
