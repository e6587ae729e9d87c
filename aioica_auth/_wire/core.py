"""The one request helper under both token APIs: URL join, headers, timeouts, status → error.

Everything aiohttp, json or cattrs can raise is translated here, at one boundary, into the
`IcaError` tree (aiohttp's failures to answer by `_transport`). No translated error chains the
original, as `__cause__` or as `__context__`: aiohttp's exceptions hold the request headers,
a JSONDecodeError the whole body, cattrs' errors the values. So errors are built inside an
`except` and raised outside it.

The caller's session is used as it is, except for what would break a token request or leak a
credential, which each request overrides: `raise_for_status` (off), redirects (off), the
session's middlewares (none: only a guard that lets no credential header out but the
request's own, so a session's default `Authorization` never goes beside our `X-API-Key`).
A session built with `auth=` is refused: aiohttp rejects it beside our own `Authorization`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import html
import ipaddress
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import attrs
import yarl
from aiohttp.helpers import basicauth_from_netrc, netrc_from_env

from .._checks import MAX_TIMEOUT, is_loopback
from .._clock import Exchange
from .._errors import (
    ApiError,
    InvalidResponseError,
    TransportError,
    error_class,
    redact,
    scrub,
)
from .._models import ErrorResponse, Problem, converter
from .._token import Token, decode_jwt
from .transport import session_closed, transport_error

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "HttpCore",
    "Reply",
    "TokenEndpoints",
    "check_base_url",
    "check_session",
    "is_loopback",
    "parse_http_date",
    "parse_retry_after",
]

logger = logging.getLogger("aioica_auth")

DEFAULT_TIMEOUT = 30.0
"""Seconds for one token request, connect to last byte."""

_NO_CONTENT_TYPE = ("Content-Type",)
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)
_MAX_BODY = 1 << 20  # a token answer is a few KiB; anything past 1 MiB is not one
_TOO_LARGE = "the answer is larger than the 1 MiB cap (too large for a token endpoint's answer)"
# The headers that carry a credential: only the values our request sets may go out.
_CREDENTIAL_HEADERS = ("Authorization", "X-API-Key")
_CREDENTIAL_NAMES = frozenset(name.lower() for name in _CREDENTIAL_HEADERS)
_URL_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)
_NOT_JSON = object()
_T = TypeVar("_T")


def check_base_url(base_url: str | yarl.URL, *, name: str = "base_url") -> yarl.URL:
    """Validate a base URL and return it without a trailing slash.

    Messages name the argument (`name`) and never echo the URL: it may carry credentials.

    Raises:
        TypeError: not a `str` or `yarl.URL`.
        ValueError: not an absolute http(s) URL, whitespace or a control character anywhere,
            a malformed host or port, a query, fragment or userinfo, or plain http on a host
            that is not loopback (a bearer token must not cross a network in clear).
    """
    url = _parse_url(base_url, name)
    if url.scheme not in {"http", "https"} or not url.host:
        msg = f"{name} must be an absolute http(s) URL such as https://ica.illumina.com/ica/rest"
        raise ValueError(msg)
    if url.scheme == "http" and not is_loopback(url.host):
        msg = (
            f"{name} uses plain http on a non-loopback host; use https (http is only for 127.0.0.1)"
        )
        raise ValueError(msg)
    if url.query_string or url.fragment:
        msg = f"{name} must not have a query string or fragment"
        raise ValueError(msg)
    if url.user or url.password:
        msg = f"{name} must not carry credentials"
        raise ValueError(msg)
    return url.with_path(url.path.rstrip("/"))


def _parse_url(base_url: object, name: str) -> yarl.URL:
    """`base_url` parsed, with yarl's own errors (which may quote it) turned into ours."""
    if not isinstance(base_url, str | yarl.URL):
        msg = f"{name} must be a str or yarl.URL, not {type(base_url).__name__}"
        raise TypeError(msg)
    text = str(base_url)
    if _URL_SPACE_OR_CONTROL.search(text):
        msg = f"{name} has whitespace or a control character in it (a copy-paste slip?)"
        raise ValueError(msg)
    url = _yarl_url(text)
    if url is None:
        msg = f"{name} is not a valid URL (check the host and the port)"
        raise ValueError(msg)
    host = url.raw_host or ""
    if host and not (_HOST_NAME.fullmatch(host) or _is_ip(host)):
        msg = f"{name} has an invalid host name"
        raise ValueError(msg)
    if url.explicit_port == 0:
        msg = f"{name} has port 0; a port is 1 to 65535"
        raise ValueError(msg)
    return url


def _yarl_url(text: str) -> yarl.URL | None:
    """The parsed URL, or None when yarl refuses it (its messages can quote the input)."""
    try:
        url = yarl.URL(text)
        # yarl decodes the host and port lazily: make it fail here, not later.
        _ = (url.raw_host, url.host, url.port, url.path)
    except (ValueError, TypeError):  # UnicodeError (IDNA) is a ValueError
        return None
    return url


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_session(session: object) -> None:
    """Refuse what cannot carry token requests.

    Raises:
        TypeError: `session` is not an `aiohttp.ClientSession`.
        ValueError: `session` was built with `auth=` (aiohttp refuses that beside the
            `Authorization` a token request sets).
    """
    if not isinstance(session, aiohttp.ClientSession):
        msg = f"session must be an aiohttp.ClientSession, not {type(session).__name__}"
        raise TypeError(msg)
    if session.auth is not None:
        msg = (
            "session was built with auth=: aiohttp then refuses every request that sets "
            "its own Authorization, as token requests do. Pass a session without auth= "
            "(credentials for the token endpoint go in the credential argument)"
        )
        raise ValueError(msg)


def parse_http_date(value: str | None) -> float | None:
    """An HTTP date (`Date`, `Retry-After`) as a POSIX timestamp, or None if unreadable."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # asctime() dates carry no zone; HTTP dates are always GMT (RFC 9110 5.6.7).
        parsed = parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` (delta seconds or an HTTP date) as seconds from `now`, never negative."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        digits = value.lstrip("0") or "0"
        return 1e9 if len(digits) > 9 else float(int(digits))
    when = parse_http_date(value)
    if when is None:
        return None
    return max(0.0, when - (time.time() if now is None else now))


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


@attrs.frozen
class _Answer:
    """What the wire gave back, read whole (up to the cap) before the response is released."""

    raw: bytes
    too_large: bool
    status: int
    date: str | None
    retry_after: str | None


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
        logger.debug("%s %s -> %d in %.1f ms", method, path, status, (received_at - sent_at) * 1e3)
        if status not in ok:
            raise _error(answer, method, shown, _with_escapes(secrets), server_time)
        body = _success_body(answer, method, shown, secrets)
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
    ) -> _Answer | TransportError:
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
                return _Answer(
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

    @staticmethod
    def _error(
        status: int,
        raw: bytes,
        method: str,
        url: str,
        secrets: Iterable[str],
        retry_after: str | None,
        server_time: float | None,
    ) -> ApiError:
        """The `ApiError` for an error answer, from its parts (what `request` raises)."""
        answer = _Answer(raw, False, status, None, retry_after)
        return _error(answer, method, url, _with_escapes(secrets), server_time)


def netrc_authorization(host: str | None) -> str | None:
    """The Basic `Authorization` aiohttp takes from `.netrc` (`$NETRC`, `~/.netrc`) for
    `host` on a session with trust_env=True, or None (blocking: call it in a thread)."""
    if host is None:
        return None
    try:
        return basicauth_from_netrc(netrc_from_env(), host).encode()
    except LookupError:
        return None


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


def _success_body(answer: _Answer, method: str, url: str, secrets: Iterable[str]) -> Any:
    """The decoded JSON of a success answer (None when empty), or `InvalidResponseError`."""
    if answer.too_large:
        raise InvalidResponseError(answer.status, method=method, url=url, reason=_TOO_LARGE)
    if not answer.raw.strip():
        return None
    body = _loads(answer.raw)
    if body is _NOT_JSON:
        text = answer.raw.decode("utf-8", "replace")
        raise InvalidResponseError(
            answer.status,
            method=method,
            url=url,
            excerpt=scrub(text, _with_escapes(secrets)),
            reason="the answer is not JSON",
        )
    return body


def _loads(raw: bytes | str) -> Any:
    """Decoded JSON, or `_NOT_JSON` (returned, not raised: a JSONDecodeError holds the
    whole text, which may echo a secret, and must not become any error's `__context__`)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _error(
    answer: _Answer,
    method: str,
    url: str,
    secrets: tuple[str, ...],
    server_time: float | None,
) -> ApiError:
    """The `ApiError` for an error status, its problem decoded and scrubbed of `secrets`."""
    # Redact before parsing, so no field of the decoded problem can hold a secret.
    text = redact(answer.raw.decode("utf-8", "replace"), secrets)
    problem: Problem | ErrorResponse | None = None
    body = _loads(text) if text.strip() and not answer.too_large else None
    if isinstance(body, dict):
        # Again after decoding: a server may escape a secret in ways json.dumps does not.
        problem = _problem_of(_deep_redact(body, secrets))
    # The server's `Date` is the right "now" for an HTTP-date Retry-After.
    wait = parse_retry_after(answer.retry_after, now=server_time)
    return error_class(answer.status)(
        answer.status,
        method=method,
        url=url,
        problem=problem,
        excerpt="" if problem else scrub(text, secrets),
        reason=_TOO_LARGE if answer.too_large else "",
        retry_after=wait,
    )


class TokenEndpoints:
    """What both endpoint classes share: a validated base URL and one `HttpCore`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout: float | aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._http = HttpCore.create(session, base_url, timeout)

    @property
    def base_url(self) -> yarl.URL:
        """The validated base URL, without a trailing slash."""
        return self._http.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r})"


def _problem_of(body: Mapping[str, Any]) -> Problem | ErrorResponse | None:
    """Decode an (already redacted) error body as a v2 Problem or a v1 ErrorResponse."""
    if any(k in body for k in ("title", "type", "detail", "instance", "timestamp")):
        kind: type[Problem] | type[ErrorResponse] = Problem
    elif any(k in body for k in ("code", "message")):
        kind = ErrorResponse
    else:
        return None
    try:
        return structure(body, kind)
    except InvalidResponseError:
        return None


def _deep_redact(value: Any, secrets: tuple[str, ...]) -> Any:
    """Decoded JSON with every string redacted."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(str(k), secrets): _deep_redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_redact(v, secrets) for v in value]
    return value


def _with_escapes(secrets: Iterable[str]) -> tuple[str, ...]:
    """The secrets, plus the forms an error body would echo them in: JSON-escaped,
    URL-encoded (either hex case), form-encoded and HTML-escaped."""
    out: dict[str, None] = {}
    for secret in secrets:
        if secret:
            out.update(dict.fromkeys(_encodings(secret)))
    return tuple(out)


def _encodings(secret: str) -> list[str]:
    quoted = urllib.parse.quote(secret, safe="", errors="surrogatepass")
    plus = urllib.parse.quote_plus(secret, safe="", errors="surrogatepass")
    escaped = html.escape(secret)
    return [
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quoted,
        _lower_hex(quoted),
        plus,
        _lower_hex(plus),
        escaped,
        escaped.replace("&#x27;", "&#39;"),
        html.escape(secret, quote=False),
    ]


def _lower_hex(quoted: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), quoted)


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


def structure(
    body: Any, kind: type[_T], *, status: int = 200, method: str = "", url: str = ""
) -> _T:
    """Structure server data into a wire model; anything unexpected is `InvalidResponseError`."""
    if not isinstance(body, dict):
        msg = f"expected a JSON object for {kind.__name__}"
        raise InvalidResponseError(status, method=method, url=url, reason=msg)
    # JSON null is as good as absent: drop it so the field's default applies.
    body = {k: v for k, v in body.items() if v is not None}
    try:
        result: _T = converter.structure(body, kind)
    except Exception as exc:  # noqa: BLE001  # cattrs raises groups of anything a hook raised
        cause = _describe(exc)
    else:
        return result
    # Raised outside the `except`: cattrs' errors can quote values, so none is the context.
    msg = f"the answer does not fit {kind.__name__}"
    raise InvalidResponseError(status, method=method, url=url, reason=msg) from cause


def _describe(exc: BaseException) -> Exception:
    # cattrs' nested exception groups can quote values; keep only their type names.
    return ValueError(type(exc).__name__)


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
