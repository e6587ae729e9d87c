"""The one request helper under both token APIs: URL join, headers, timeouts, status → error.

Everything aiohttp, json or cattrs can raise is translated here, at one boundary, into the
`IcaError` tree.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import attrs
import yarl

from ._errors import (
    ApiError,
    InvalidResponseError,
    TransportError,
    TransportTimeoutError,
    error_class,
    redact,
    scrub,
)
from ._models import ErrorResponse, Problem, converter

__all__ = [
    "DEFAULT_TIMEOUT",
    "HttpCore",
    "Reply",
    "TokenEndpoints",
    "check_base_url",
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
_T = TypeVar("_T")


def is_loopback(host: str | None) -> bool:
    """Whether `host` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str | yarl.URL, *, name: str = "base_url") -> yarl.URL:
    """Validate a base URL and return it without a trailing slash.

    Raises:
        ValueError: not an absolute http(s) URL, has a query or fragment, or is plain http on
            a host that is not loopback (a bearer token must not cross a network in clear).
    """
    url = yarl.URL(str(base_url))
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
        sent_at: `time.monotonic()` just before the request was sent.
        sent_wall: `time.time()` at the same moment.
        received_at: `time.monotonic()` when the answer was read.
        server_offset: The server's `Date` minus our wall clock at receipt, in seconds, or None.
        url: The request URL, without its query.
    """

    status: int
    body: Any
    sent_at: float
    sent_wall: float
    received_at: float
    server_offset: float | None
    url: str = ""


@attrs.define
class HttpCore:
    """Sends token-endpoint requests over the caller's session; knows nothing of tokens."""

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
        """Validate the arguments once and build the core."""
        if not isinstance(session, aiohttp.ClientSession):
            msg = f"session must be an aiohttp.ClientSession, not {type(session).__name__}"
            raise TypeError(msg)
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
            TransportError: no answer (connection failure, disconnect, timeout).
        """
        url = self.base_url.with_path(self.base_url.raw_path.rstrip("/") + path, encoded=True)
        shown = str(url)  # never has a query: parameters go separately
        if json_body is None:
            # No body at all: aiohttp sends `Content-Length: 0` and no Content-Type.
            data: bytes | None = None
            all_headers = dict(headers)
        else:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            all_headers = {"Content-Type": "application/json", **headers}
        sent_at = time.monotonic()
        sent_wall = time.time()
        try:
            async with self.session.request(
                method,
                url,
                params=list(params) or None,
                headers=all_headers,
                data=data,
                skip_auto_headers=_NO_CONTENT_TYPE if data is None else None,
                timeout=self.timeout,
                allow_redirects=False,
                middlewares=(),  # never through a token middleware: no recursion, no deadlock
            ) as resp:
                raw = await _read_bounded(resp)
                status = resp.status
                date = resp.headers.get("Date")
                retry_after = resp.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            msg = f"{method} {shown}: timed out after {self.timeout.total} s"
            raise TransportTimeoutError(msg) from exc
        except aiohttp.ClientError as exc:
            msg = f"{method} {shown}: {type(exc).__name__}: no answer from the server"
            raise TransportError(msg) from exc
        received_at = time.monotonic()
        wall = time.time()
        server_time = parse_http_date(date)
        logger.debug("%s %s -> %d in %.1f ms", method, path, status, (received_at - sent_at) * 1e3)
        if status not in ok:
            raise self._error(status, raw, method, shown, secrets, retry_after, server_time)
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                msg = "the answer is not JSON"
                raise InvalidResponseError(
                    status,
                    method=method,
                    url=shown,
                    excerpt=scrub(raw.decode("utf-8", "replace"), _with_escapes(secrets)),
                    reason=msg,
                ) from None
        if model is not None:
            body = structure(body, model, status=status, method=method, url=shown)
        offset = None if server_time is None else server_time - wall
        return Reply(status, body, sent_at, sent_wall, received_at, offset, shown)

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
        secrets = _with_escapes(secrets)
        # Redact before parsing, so no field of the decoded problem can hold a secret.
        text = redact(raw.decode("utf-8", "replace"), secrets)
        problem: Problem | ErrorResponse | None = None
        try:
            body = json.loads(text) if text.strip() else None
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, dict):
            # Again after decoding: a server may escape a secret in ways json.dumps does not.
            problem = _problem_of(_deep_redact(body, secrets))
        # The server's `Date` is the right "now" for an HTTP-date Retry-After.
        wait = parse_retry_after(retry_after, now=server_time)
        return error_class(status)(
            status,
            method=method,
            url=url,
            problem=problem,
            excerpt="" if problem else scrub(text, secrets),
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
    """The secrets, plus their JSON-escaped forms (as an error body would echo them)."""
    out: list[str] = []
    for secret in secrets:
        out.append(secret)
        escaped = json.dumps(secret)[1:-1]
        if escaped != secret:
            out.append(escaped)
    return tuple(out)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    """The whole body, however it was chunked, up to `_MAX_BODY` bytes."""
    chunks: list[bytes] = []
    size = 0
    while size < _MAX_BODY:
        chunk = await resp.content.read(_MAX_BODY - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


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
        msg = f"the answer does not fit {kind.__name__}"
        raise InvalidResponseError(status, method=method, url=url, reason=msg) from _describe(exc)
    return result


def _describe(exc: BaseException) -> Exception:
    # cattrs' nested exception groups can quote values; keep only their type names.
    return ValueError(type(exc).__name__)


def normalise_timeout(timeout: float | aiohttp.ClientTimeout) -> aiohttp.ClientTimeout:
    """A timeout in seconds, or a full `aiohttp.ClientTimeout`, as a `ClientTimeout`.

    Raises:
        ValueError: not a positive finite number, or a ClientTimeout with no total bound.
    """
    if isinstance(timeout, aiohttp.ClientTimeout):
        if timeout.total is None or timeout.total <= 0:
            msg = "timeout must bound the whole request: set ClientTimeout(total=...)"
            raise ValueError(msg)
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < 1e6:
        msg = "timeout must be a positive number of seconds"
        raise ValueError(msg)
    return aiohttp.ClientTimeout(total=float(timeout))
