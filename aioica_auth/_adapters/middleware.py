"""The aiohttp client middleware: the bearer on the way out, a bounded recovery on 401.

It depends only on the small `LeaseSource` protocol (`recovery.py`), not on the manager, and
the rules (who gets the bearer, what a 401 leads to, every bound) are `recovery.py`'s, shared
with the httpx auth; this module only does aiohttp's I/O.

aiohttp runs client middlewares again on every redirect hop, so the origin check happens here,
per hop: the bearer goes only to the scheme, host and port of the manager's base URL, never to
a presigned storage URL or a cross-origin redirect target. A body that cannot be replayed (a
consumed stream) gets the 401 back. Token endpoints are called with their own middlewares, so
this never recurses.

A session with `trust_env=True` (for proxies) also takes a `.netrc` entry for the host as a
Basic `Authorization`, before any middleware runs. That one is not the caller's: for the
manager's origin the bearer replaces it (a request with an `Authorization` the caller set
itself is still left alone).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
import yarl

from .._wire.urls import netrc_authorization
from .recovery import LeaseSource, Recovery, origin

if TYPE_CHECKING:
    from aiohttp.client_middlewares import ClientHandlerType

__all__ = ["BearerMiddleware"]

_AUTHORIZATION = "Authorization"


def _origin(url: yarl.URL) -> tuple[str, str | None, int | None]:
    return origin(url.scheme, url.host, url.port)


class BearerMiddleware:
    """Adds `Authorization: Bearer <jwt>` from a token manager to requests for its origin.

    A request that already carries its own `Authorization` is left alone. A 401 is
    recovered from as `recovery` says, in bounded time.
    """

    def __init__(self, source: LeaseSource, base_url: yarl.URL) -> None:
        self._recovery = Recovery(source, _origin(base_url))

    def __repr__(self) -> str:
        scheme, host, port = self._recovery.origin
        return f"BearerMiddleware(origin='{scheme}://{host}:{port}')"

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Run one request (one redirect hop) through the middleware."""
        authorization = request.headers.get(_AUTHORIZATION)
        target = _origin(request.url)
        if (
            authorization is not None
            and authorization.startswith("Basic ")
            and target == self._recovery.origin
            and await asyncio.to_thread(netrc_authorization, request.url.host) == authorization
        ):
            authorization = None  # the environment's, not the caller's: the bearer wins
        if not self._recovery.applies(target, authorization):
            return await handler(request)
        response: aiohttp.ClientResponse | None = None

        async def discard() -> None:
            if response is not None:
                await _discard(response)

        exchange = self._recovery.exchange(lambda: _replayable(request), discard)
        try:
            lease = await exchange.first()
            while True:
                request.headers[_AUTHORIZATION] = lease.authorization
                response = await handler(request)
                next_lease = await exchange.answer(response.status)
                if next_lease is None:
                    return response
                lease = next_lease
        finally:
            exchange.close()  # a probe this request ran is settled for the others


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
