"""Every request's way through the local server: the aiohttp plumbing around the endpoints.

`Dispatch` is the one aiohttp handler of `LocalIcaServer`: it records and counts a request,
makes a token endpoint wait its `latency`, answers with an injected fault or the endpoint's
handler, gzips an ICA v2 answer as ICA does, stamps every answer's ``Date`` from the server
clock, and drops what is still waiting when the server closes. The server keeps its lifecycle
and public state; what this reads and writes of it is `Ledger`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Protocol

from aiohttp import web

from ._endpoints import MALFORMED, Endpoints, family, refusal_response, route
from ._faults import TOKEN_ENDPOINTS, Fault, FaultBook, RecordedRequest
from ._state import Refusal
from ._wire import HTML_502, JSON, http_date, raw_response

__all__ = ["Dispatch", "Ledger"]

_log = logging.getLogger("aioica_auth.testing")


class Ledger(Protocol):
    """What the dispatch reads (the clock, the latency) and writes (the counters) of the server."""

    latency: float
    counts: collections.Counter[str]
    statuses: collections.Counter[tuple[str, int]]
    requests: collections.deque[RecordedRequest]

    def now(self) -> float: ...


class Dispatch:
    """The server's aiohttp handler: one path for every request, whatever its endpoint.

    Args:
        ledger: The server: its clock and latency, read on every request, and its counters.
        endpoints: The handlers of the endpoints.
        faults: The injected and random faults, taken before an endpoint is asked.
        closing: Set when the server starts closing: waits end, and hanging requests drop.
    """

    def __init__(
        self, ledger: Ledger, endpoints: Endpoints, faults: FaultBook, closing: asyncio.Event
    ) -> None:
        self._ledger = ledger
        self._endpoints = endpoints
        self._faults = faults
        self._closing = closing
        self._inflight: set[asyncio.Task[Any]] = set()

    def app(self) -> web.Application:
        """An application that sends every path and method here."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_response_prepare.append(self._stamp_date)
        return app

    async def drain(self, within: float) -> None:
        """Wait up to `within` seconds for the requests still being handled (after closing)."""
        pending = {task for task in self._inflight if not task.done()}
        if pending:
            await asyncio.wait(pending, timeout=within)

    async def _stamp_date(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = http_date(self._ledger.now())

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            return await self._serve(request)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        ledger = self._ledger
        endpoint = route(request.method, request.path)
        body = await request.read()
        ledger.counts[endpoint] += 1
        ledger.requests.append(
            RecordedRequest(
                endpoint=endpoint,
                method=request.method,
                path=request.raw_path.partition("?")[0],
                query=tuple(request.query.items()),
                headers=request.headers,
                body=body,
                at=ledger.now(),
            )
        )
        delay = ledger.latency if endpoint in TOKEN_ENDPOINTS else 0.0
        if delay > 0 and await self._until_closing(delay):
            return self._drop(request, endpoint)
        fault = self._faults.take(endpoint)
        if fault is not None:
            _log.debug("%s: injected fault %s", endpoint, fault.kind)
            response = await self._fault_response(fault, endpoint, request)
        else:
            try:
                response = await self._endpoints.handle(endpoint, request, body)
            except Refusal as refusal:
                response = refusal_response(endpoint, request, refusal, now=ledger.now())
        if response is None:
            return self._drop(request, endpoint)
        accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "").lower()
        ica = family(endpoint, request.path) == "ica"
        if accepts_gzip and ica and response.body and response.content_type != "text/html":
            response.enable_compression(web.ContentCoding.gzip)  # as ICA v2 does
        ledger.statuses[endpoint, response.status] += 1
        _log.debug("%s %s -> %d", endpoint, request.method, response.status)
        return response

    async def _until_closing(self, seconds: float | None) -> bool:
        """Wait `seconds` (None: forever); True when the server started closing meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            return False
        return True

    def _drop(self, request: web.Request, endpoint: str) -> web.Response:
        # The response returned here is never sent: aiohttp finds the transport closing and
        # takes it as a client disconnect, quietly.
        if request.transport is not None:
            request.transport.close()
        _log.debug("%s: connection dropped", endpoint)
        return web.Response(status=503)

    async def _fault_response(
        self, fault: Fault, endpoint: str, request: web.Request
    ) -> web.Response | None:
        if fault.kind == "status":
            refusal = Refusal(fault.status, f"Injected fault: HTTP {fault.status}.")
            return refusal_response(
                endpoint, request, refusal, now=self._ledger.now(), retry_after=fault.retry_after
            )
        if fault.kind == "malformed":
            status, ctype, body = MALFORMED.get(endpoint, (200, JSON, b'{"ok":tr'))
            return raw_response(status, body, ctype)
        if fault.kind == "html":
            return raw_response(502, HTML_502.encode(), "text/html")
        if fault.kind == "empty":
            # No Content-Type: a zero-length body is no JSON, so claiming one would be a lie.
            return raw_response(fault.status, b"", None)
        if fault.kind == "hang":
            await self._until_closing(None)
        return None  # "drop", and "hang" once the server closes
