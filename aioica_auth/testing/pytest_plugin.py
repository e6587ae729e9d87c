"""pytest fixtures for testing your own code against a local ICA-compatible server.

Opt in from your top-level `conftest.py` (needs pytest-asyncio)::

    pytest_plugins = ["aioica_auth.testing.pytest_plugin"]

Then::

    async def test_my_uploader(ica_server):
        manager = TokenManager.for_ica(ApiKey(ica_server.api_key), base_url=ica_server.ica_base_url)
        ...
        assert ica_server.counts["ica.create"] == 1

Fixtures:
    ica_server: a started `LocalIcaServer` with hour-long tokens, closed after the test.
    ica_server_factory: `await ica_server_factory(lifetime=2.0, latency=0.05, ...)` starts
        servers with any `LocalIcaServer` keyword; all are closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from ._server import LocalIcaServer

__all__ = ["ica_server", "ica_server_factory"]

ServerFactory = Callable[..., Awaitable[LocalIcaServer]]


@pytest_asyncio.fixture
async def ica_server_factory() -> AsyncIterator[ServerFactory]:
    """Start `LocalIcaServer`s with any keyword; every one is closed after the test."""
    started: list[LocalIcaServer] = []

    async def start(**kwargs: Any) -> LocalIcaServer:
        server = LocalIcaServer(**kwargs)
        await server.start()
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.close()


@pytest_asyncio.fixture
async def ica_server(ica_server_factory: ServerFactory) -> LocalIcaServer:
    """A started `LocalIcaServer` with hour-long tokens, closed after the test."""
    return await ica_server_factory()
