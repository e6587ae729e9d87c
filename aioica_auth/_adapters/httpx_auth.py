"""The httpx auth: `httpx.AsyncClient(auth=manager.httpx_auth)`, the rules of `recovery.py`.

httpx runs an auth flow once per `send()`, and follows redirects inside it: the bearer is
added only when the request is for the base URL's origin and carries no `Authorization` of its
own, and httpx itself drops it on a redirect to another origin. An answer that came from a
request without our bearer (the end of a cross-origin redirect) goes to the caller as is: it
says nothing of the token. A body that cannot be replayed (an iterator or a generator; bytes,
text, JSON and form data can) gets the 401 back.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx
import yarl

from .recovery import LeaseSource, Recovery, origin

__all__ = ["HttpxAuth"]

_AUTHORIZATION = "Authorization"


class HttpxAuth(httpx.Auth):
    """An `httpx.Auth` adding `Authorization: Bearer <jwt>` from a token manager.

    For `httpx.AsyncClient` only (the manager lives on an event loop). A 401 is recovered
    from in bounded time, as the aiohttp middleware does (`recovery`).
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(self, source: LeaseSource, base_url: yarl.URL) -> None:
        self._recovery = Recovery(source, origin(base_url.scheme, base_url.host, base_url.port))

    def __repr__(self) -> str:
        scheme, host, port = self._recovery.origin
        return f"HttpxAuth(origin='{scheme}://{host}:{port}')"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Refused: the token manager runs on an event loop.

        Raises:
            RuntimeError: always; use `httpx.AsyncClient`, or a synchronous manager.
        """
        msg = (
            "manager.httpx_auth works with httpx.AsyncClient only: the TokenManager runs on an "
            "event loop; for a synchronous httpx.Client use a synchronous token manager"
        )
        raise RuntimeError(msg)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send `request` with the bearer, recovering from a 401 (see the module docstring)."""
        url = request.url
        target = origin(url.scheme, url.host, url.port)
        if not self._recovery.applies(target, request.headers.get(_AUTHORIZATION)):
            yield request
            return
        response: httpx.Response | None = None

        async def discard() -> None:
            if response is not None:
                await response.aread()  # httpx reads it again from memory, and releases it

        exchange = self._recovery.exchange(lambda: _replayable(request), discard)
        try:
            lease = await exchange.first()
            while True:
                request.headers[_AUTHORIZATION] = lease.authorization
                response = yield request
                if response.request.headers.get(_AUTHORIZATION) != lease.authorization:
                    return  # answered by a redirect target that got no bearer
                next_lease = await exchange.answer(response.status_code)
                if next_lease is None:
                    return
                lease = next_lease
        finally:
            exchange.close()  # a probe this request ran is settled for the others


def _replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, httpx.ByteStream)
