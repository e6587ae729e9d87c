"""The aiohttp client middleware: the bearer on the way out, one bounded recovery on 401.

aiohttp runs client middlewares again on every redirect hop, so the origin check happens here,
per hop: the bearer goes only to the scheme, host and port of the manager's base URL, never to
a presigned storage URL or a cross-origin redirect target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
import yarl

if TYPE_CHECKING:
    from aiohttp.client_middlewares import ClientHandlerType

    from ._manager import TokenManager, _Entry

__all__ = ["BearerMiddleware"]

logger = logging.getLogger("aioica_auth")

_AUTHORIZATION = "Authorization"
_FIRST_NBF_RETRY = 0.1  # seconds; doubled on each further refusal of a young token
_STALE_REPLAYS = 3  # resends of a request that went out with a superseded or expired token


def _origin(url: yarl.URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.host.lower() if url.host else None, url.port)


class BearerMiddleware:
    """Adds `Authorization: Bearer <jwt>` from a `TokenManager` to requests for its origin.

    - A request that already carries its own `Authorization` is left alone.
    - On a 401 for a token that is no longer the one in use, or that expired while the
      request waited for a connection: resent with the current token (at most 3 times).
    - On a 401 for the current token: a token no resource has accepted yet may only be
      early for a resource whose clock lags the token service (ICA's `nbf` skew), so the
      request is retried with it after short, growing waits (within `nbf_wait_max`, scaled
      to the lifetime); otherwise, or after that, exactly that token is invalidated (not a
      newer one another task already got), a new one is awaited, and the request is replayed
      once. A body that cannot be replayed (a consumed stream) gets the 401 back.
    - Token endpoints are called with `middlewares=()`, so this never recurses.
    """

    def __init__(self, manager: TokenManager, base_url: yarl.URL) -> None:
        self._manager = manager
        self._origin = _origin(base_url)

    def __repr__(self) -> str:
        scheme, host, port = self._origin
        return f"BearerMiddleware(origin='{scheme}://{host}:{port}')"

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Run one request (one redirect hop) through the middleware."""
        if _origin(request.url) != self._origin:
            return await handler(request)
        manager = self._manager
        sent = request.headers.get(_AUTHORIZATION)
        if sent is not None and not manager._is_ours(sent):
            return await handler(request)
        entry = await manager._current()
        response = await self._send(request, handler, entry)
        if response.status != 401:
            return response
        return await self._recover(request, handler, response, entry)

    async def _recover(
        self,
        request: aiohttp.ClientRequest,
        handler: ClientHandlerType,
        response: aiohttp.ClientResponse,
        entry: _Entry,
    ) -> aiohttp.ClientResponse:
        manager = self._manager
        for _ in range(_STALE_REPLAYS):
            # Sent with a token that is no longer the one in use, or that has expired since:
            # the request waited (in aiohttp's connection pool, say) longer than the token
            # lived. That is no refusal of the current token: resend with it.
            if manager._entry is entry and time.monotonic() < entry.timing.expires:
                break
            if not _replayable(request):
                return response
            await _discard(response)
            entry = await manager._current()
            response = await self._send(request, handler, entry)
            if response.status != 401:
                return response
        if not _replayable(request):
            return response
        timing = entry.timing
        if not entry.accepted and timing.lifetime is not None:
            # A token no resource has accepted yet may only be early for a resource whose
            # clock lags the token service: retry it after short, growing waits.
            window = min(manager.policy.nbf_wait_max, timing.lifetime / 4)
            deadline = entry.received_at + window
            delay = _FIRST_NBF_RETRY
            while (now := time.monotonic()) < deadline and manager._entry is entry:
                await _discard(response)
                await asyncio.sleep(min(delay, deadline - now))
                delay *= 2
                response = await self._send(request, handler, entry)
                if response.status != 401:
                    logger.info(
                        "token %s accepted %.2f s after receipt (resource clock lag)",
                        entry.token.fingerprint,
                        time.monotonic() - entry.received_at,
                    )
                    return response
                if not _replayable(request):
                    return response
        await _discard(response)
        manager.invalidate(entry.token)
        return await self._send(request, handler, await manager._current())

    @staticmethod
    async def _send(
        request: aiohttp.ClientRequest, handler: ClientHandlerType, entry: _Entry
    ) -> aiohttp.ClientResponse:
        request.headers[_AUTHORIZATION] = entry.authorization
        response = await handler(request)
        if response.status != 401:
            entry.accepted = True
        return response


def _replayable(request: aiohttp.ClientRequest) -> bool:
    return not getattr(request.body, "consumed", False)


async def _discard(response: aiohttp.ClientResponse) -> None:
    """Read and release a refused answer so its connection can be reused."""
    try:
        await response.read()
    except aiohttp.ClientError:
        pass
    finally:
        response.release()
