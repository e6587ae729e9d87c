"""The aiohttp client middleware: the bearer on the way out, a bounded recovery on 401.

It depends only on the small `LeaseSource` protocol (`_lease.py`), not on the manager.

aiohttp runs client middlewares again on every redirect hop, so the origin check happens here,
per hop: the bearer goes only to the scheme, host and port of the manager's base URL, never to
a presigned storage URL or a cross-origin redirect target.

On a 401 for a token the manager handed out, in this order, each step bounded:

1. Stale: the token sent is no longer the one in use, or expired while the request waited
   (in aiohttp's connection pool, say): resent with the current one, at most 3 times.
2. Young: a token no resource has accepted yet, issued less than a few seconds ago (in the
   server's time), may only be early for a resource whose clock lags the token service
   (ICA's `nbf` skew). The token it replaced, if a resource accepted it and it is still
   valid, is tried first; then the young token again after short, growing waits: at most
   `_YOUNG_SENDS` sends within `_YOUNG_WINDOW` seconds (and `nbf_wait_max`).
3. Refused: exactly that token is invalidated (not a newer one another task already got), a
   new one is awaited, and the request is replayed once; its answer goes to the caller.

So a resource that refuses every token answers the caller within a few seconds, and one
whose clock lags costs no re-mint. A body that cannot be replayed (a consumed stream) gets
the 401 back. Token endpoints are called with their own middlewares, so this never recurses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
import yarl

from ._lease import Lease, LeaseSource, TokenState

if TYPE_CHECKING:
    from aiohttp.client_middlewares import ClientHandlerType

__all__ = ["BearerMiddleware"]

logger = logging.getLogger("aioica_auth")

_AUTHORIZATION = "Authorization"
_STALE_REPLAYS = 3  # resends of a request that went out with a superseded or expired token
_YOUNG_WINDOW = 3.0  # seconds after issue in which a refused token may only be early
_YOUNG_SENDS = 4  # sends of a young token after its first refusal, at most
_FIRST_YOUNG_RETRY = 0.1  # seconds; doubled on each further refusal of a young token


def _origin(url: yarl.URL) -> tuple[str, str | None, int | None]:
    return (url.scheme, url.host.lower() if url.host else None, url.port)


class BearerMiddleware:
    """Adds `Authorization: Bearer <jwt>` from a token manager to requests for its origin.

    A request that already carries its own `Authorization` is left alone. A 401 is
    recovered from as the module docstring says, in bounded time.
    """

    def __init__(self, source: LeaseSource, base_url: yarl.URL) -> None:
        self._source = source
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
        source = self._source
        sent = request.headers.get(_AUTHORIZATION)
        if sent is not None and not source.is_ours(sent):
            return await handler(request)
        lease = await source.lease()
        response = await _send(request, handler, lease)
        if response.status != 401:
            return response
        return await self._recover(request, handler, response, lease)

    async def _recover(
        self,
        request: aiohttp.ClientRequest,
        handler: ClientHandlerType,
        response: aiohttp.ClientResponse,
        lease: Lease,
    ) -> aiohttp.ClientResponse:
        source = self._source
        for _ in range(_STALE_REPLAYS):
            if not self._stale(lease) or not _replayable(request):
                break
            await _discard(response)
            lease = await source.lease()
            response = await _send(request, handler, lease)
            if response.status != 401:
                return response
        if not _replayable(request):
            return response
        if self._young(lease):
            response = await self._young_retries(request, handler, response, lease)
            if response.status != 401 or not _replayable(request):
                return response
        await _discard(response)
        source.invalidate(lease.token)
        return await _send(request, handler, await source.lease())

    def _stale(self, lease: Lease) -> bool:
        """Sent with a token that is no longer the one in use, or that has expired since."""
        if self._source.current() is not lease:
            return True
        return lease.state(lease.now(self._source.clock)) is TokenState.EXPIRED

    def _young(self, lease: Lease) -> bool:
        """Not yet accepted by any resource, and issued only seconds ago (server time)."""
        window = min(_YOUNG_WINDOW, self._source.policy.nbf_wait_max)
        return not lease.accepted and lease.age(lease.now(self._source.clock)) < window

    async def _young_retries(
        self,
        request: aiohttp.ClientRequest,
        handler: ClientHandlerType,
        response: aiohttp.ClientResponse,
        lease: Lease,
    ) -> aiohttp.ClientResponse:
        """The token it replaced first, then the young token after short, growing waits."""
        source = self._source
        prior = source.prior()
        if prior is not None and prior.state(prior.now(source.clock)).live:
            await _discard(response)
            response = await _send(request, handler, prior)
            if response.status != 401 or not _replayable(request):
                return response
        delay = _FIRST_YOUNG_RETRY
        for _ in range(_YOUNG_SENDS):
            if not self._young(lease) or source.current() is not lease:
                break
            await _discard(response)
            await asyncio.sleep(delay)
            delay *= 2
            response = await _send(request, handler, lease)
            if response.status != 401:
                logger.info(
                    "token %s accepted %.2f s after issue (resource clock lag)",
                    lease.token.fingerprint,
                    lease.age(lease.now(source.clock)),
                )
                return response
            if not _replayable(request):
                break
        return response


async def _send(
    request: aiohttp.ClientRequest, handler: ClientHandlerType, lease: Lease
) -> aiohttp.ClientResponse:
    request.headers[_AUTHORIZATION] = lease.authorization
    response = await handler(request)
    if response.status != 401:
        lease.accepted = True
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
