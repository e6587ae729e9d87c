"""The one request helper under both token APIs: URL join, headers, timeouts, the answer.

Everything aiohttp can raise is translated here, at one boundary, into the `IcaError` tree
(its failures to answer by `transport`, the answers by `answers`). No translated error chains
the original: aiohttp's exceptions hold the request headers.

The caller's session is used as it is, except for what would break a token request or leak a
credential, which each request overrides: `raise_for_status` (off), redirects (off), the
session's middlewares (none: only a guard that lets no credential header out but the
request's own, so a session's default `Authorization` never goes beside our `X-API-Key`).
A session built with `auth=` is refused: aiohttp rejects it beside our own `Authorization`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
import attrs
import yarl

from .._checks import MAX_TIMEOUT
from .._clock import Exchange
from .._errors import InvalidResponseError, TransportError
from .._events import Event, fields
from .._observe import Answered, observed
from .._token import Token, decode_jwt
from .answers import Answer, api_error, parse_http_date, structure, success_body, with_escapes
from .transport import session_closed, transport_error
from .urls import check_base_url, check_session, netrc_authorization

__all__ = [
    "DEFAULT_TIMEOUT",
    "HttpCore",
    "Reply",
    "TokenEndpoints",
    "decode_answer",
    "normalise_timeout",
]

logger = logging.getLogger("aioica_auth")

DEFAULT_TIMEOUT = 30.0
"""Seconds for one token request, connect to last byte."""

_NO_CONTENT_TYPE = ("Content-Type",)
_MAX_BODY = 1 << 20  # a token answer is a few KiB; anything past 1 MiB is not one
# The headers that carry a credential: only the values our request sets may go out.
_CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")
_CREDENTIAL_NAMES = frozenset(name.lower() for name in _CREDENTIAL_HEADERS)


@attrs.frozen
class Reply:
    """A successful answer, with the timing the manager needs to judge expiry.

    Attributes:
        status: The HTTP status.
        body: The decoded JSON body (None for an empty one).
        url: The request URL, without its query.
        exchange: When the request went out and the answer came back, and the server's `Date`.
    """

    status: int
    body: Any
    url: str
    exchange: Exchange


def decode_answer(value: str, reply: Reply) -> Token:
    """Decode a JWT a token endpoint answered with; a bad one names the endpoint and status."""
    try:
        return decode_jwt(value)
    except InvalidResponseError as exc:
        reason = exc.reason
    raise InvalidResponseError(reply.status, method="POST", url=reply.url, reason=reason)


@attrs.define
class HttpCore:
    """Sends token-endpoint requests over the caller's session; knows nothing of tokens.

    The caller's session settings that would break a token request or leak a credential are
    overridden per request: no `raise_for_status` (the status becomes our typed error), no
    redirects, none of the session's middlewares (no recursion through a token middleware),
    and no credential header (`Authorization`, `X-API-Key`) but the ones the request sets.
    """

    session: aiohttp.ClientSession
    base_url: yarl.URL
    timeout: aiohttp.ClientTimeout

    @classmethod
    def create(
        cls,
        session: aiohttp.ClientSession,
        base_url: str | yarl.URL,
        timeout: float | aiohttp.ClientTimeout,
    ) -> HttpCore:
        """Validate the arguments once and build the core.

        Raises:
            TypeError: `session` is not an `aiohttp.ClientSession`.
            ValueError: `session` was built with `auth=` (aiohttp refuses that beside the
                `Authorization` a token request sets), or a bad `base_url` or `timeout`.
        """
        check_session(session)
        return cls(session, check_base_url(base_url), normalise_timeout(timeout))

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        ok: Iterable[int],
        params: Sequence[tuple[str, str]] = (),
        json_body: Any = None,
        secrets: Iterable[str] = (),
        model: type[Any] | None = None,
    ) -> Reply:
        """Send one request and return its decoded answer.

        Raises:
            ApiError: an error status, or a success status with an unreadable body.
            TransportError: no answer (connection failure, disconnect, timeout, closed session).
        """
        url = self.base_url.with_path(self.base_url.raw_path.rstrip("/") + path, encoded=True)
        shown = str(url)  # never has a query: parameters go separately
        sent_at = time.monotonic()
        sent_wall = time.time()
        answer = await self._send(method, url, headers, params, json_body)
        if isinstance(answer, TransportError):
            # Raised here, outside any `except`: nothing of aiohttp's is its `__context__`.
            raise answer
        received_at = time.monotonic()
        wall = time.time()
        server_time = parse_http_date(answer.date)
        status = answer.status
        took = received_at - sent_at
        logger.debug(
            "%s %s -> %d in %.1f ms",
            method,
            path,
            status,
            took * 1e3,
            extra=fields(
                Event.HTTP_REQUEST, method=method, path=path, status=status, duration=took
            ),
        )
        if status not in ok:
            raise api_error(answer, method, shown, with_escapes(secrets), server_time)
        body = success_body(answer, method, shown, secrets)
        if model is not None:
            body = structure(body, model, status=status, method=method, url=shown)
        offset = None if server_time is None else server_time - wall
        return Reply(status, body, shown, Exchange(sent_at, sent_wall, received_at, offset))

    async def _send(
        self,
        method: str,
        url: yarl.URL,
        headers: Mapping[str, str],
        params: Sequence[tuple[str, str]],
        json_body: Any,
    ) -> Answer | TransportError:
        """The answer, or the `TransportError` to raise (returned, so that no aiohttp
        exception becomes its `__context__`)."""
        if json_body is None:
            # No body at all: aiohttp sends `Content-Length: 0` and no Content-Type.
            data: bytes | None = None
            all_headers = dict(headers)
        else:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            all_headers = {"Content-Type": "application/json", **headers}
        try:
            async with self.session.request(
                method,
                url,
                params=list(params) or None,
                headers=await self._headers(url, all_headers),
                data=data,
                skip_auto_headers=_NO_CONTENT_TYPE if data is None else None,
                timeout=self.timeout,
                allow_redirects=False,
                raise_for_status=False,  # a session's True would turn a 401 into aiohttp's error
                # Only our guard, never a token middleware: no recursion, no deadlock.
                middlewares=(_only_our_credentials(all_headers),),
            ) as resp:
                raw, too_large = await _read_bounded(resp)
                return Answer(
                    raw,
                    too_large,
                    resp.status,
                    resp.headers.get("Date"),
                    resp.headers.get("Retry-After"),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return transport_error(exc, f"{method} {url}", self.timeout)
        except RuntimeError:
            if not self.session.closed:
                raise
            return session_closed(f"{method} {url}")

    async def _headers(self, url: yarl.URL, headers: dict[str, str]) -> dict[str, str]:
        """`headers` for `session.request`: without the credential where the session takes
        one from `.netrc` (trust_env=True and an entry for the host), since aiohttp refuses
        an `Authorization` beside it; our middleware then puts ours in its place."""
        if not self.session.trust_env or not any(k.lower() in _CREDENTIAL_NAMES for k in headers):
            return headers
        if await asyncio.to_thread(netrc_authorization, url.host) is None:
            return headers
        return {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_NAMES}


def _only_our_credentials(headers: Mapping[str, str]) -> aiohttp.ClientMiddlewareType:
    """A per-request middleware that sends no credential header but the request's own.

    A session's default `Authorization` (or `X-API-Key`), or one from `.netrc`, must never
    reach the token endpoint beside the credential we present.
    """
    ours = [(k, v) for k, v in headers.items() if k.lower() in _CREDENTIAL_NAMES]

    async def only_ours(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        for name in _CREDENTIAL_HEADERS:
            req.headers.popall(name, None)
        req.headers.extend(ours)
        return await handler(req)

    return only_ours


class TokenEndpoints:
    """What both endpoint classes share: a validated base URL and one `HttpCore`.

    Args:
        session: The session to send with; not closed by this object.
        base_url: The API root, the class's `default_base_url` when None. A trailing slash
            is fine.
        timeout: Seconds (or an `aiohttp.ClientTimeout` with a total) for each request.

    Raises:
        ValueError: `base_url` is not https (plain http is allowed on loopback only).
    """

    default_base_url: ClassVar[str]

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str | None = None,
        *,
        timeout: float | aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        url = type(self).default_base_url if base_url is None else base_url
        self._http = HttpCore.create(session, url, timeout)

    @property
    def base_url(self) -> yarl.URL:
        """The validated base URL, without a trailing slash."""
        return self._http.base_url

    def _observed(
        self, endpoint: str, method: str, path: str
    ) -> contextlib.AbstractContextManager[Answered]:
        """The current observer's record of one request to `path` (see `_observe`)."""
        return observed(endpoint, method, self._http.base_url.raw_path.rstrip("/") + path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r})"


async def _read_bounded(resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The whole body, however it was chunked, up to `_MAX_BODY` bytes; and whether more
    was there (the answer is too large to be a token answer)."""
    chunks: list[bytes] = []
    size = 0
    while size <= _MAX_BODY:
        chunk = await resp.content.read(_MAX_BODY + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    raw = b"".join(chunks)
    return raw[:_MAX_BODY], size > _MAX_BODY


def normalise_timeout(timeout: float | aiohttp.ClientTimeout) -> aiohttp.ClientTimeout:
    """A timeout in seconds, or a full `aiohttp.ClientTimeout`, as a `ClientTimeout`.

    Raises:
        ValueError: not a positive finite number of at most `MAX_TIMEOUT` seconds, or a
            ClientTimeout whose total is not one.
    """
    if isinstance(timeout, aiohttp.ClientTimeout):
        if not _seconds(timeout.total):
            msg = (
                "timeout must bound the whole request: set ClientTimeout(total=...) to a "
                f"positive number of seconds, at most {MAX_TIMEOUT:g}"
            )
            raise ValueError(msg)
        return timeout
    if not _seconds(timeout):
        msg = f"timeout must be a positive number of seconds, at most {MAX_TIMEOUT:g} (a day)"
        raise ValueError(msg)
    return aiohttp.ClientTimeout(total=float(timeout))


def _seconds(value: object) -> bool:
    """Whether `value` is a number of seconds in (0, MAX_TIMEOUT] (NaN is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 < value <= MAX_TIMEOUT
