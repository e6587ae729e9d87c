"""What a token endpoint answered, read safely: status to typed error, body to model, dates.

Everything json or cattrs can raise is translated here into the `IcaError` tree. No translated
error chains the original, as `__cause__` or as `__context__`: a JSONDecodeError holds the
whole body, cattrs' errors the values. So errors are built inside an `except` and raised
outside it. Every excerpt and problem field is scrubbed of the request's own secrets, in the
encodings a server may echo them in (URL-, form-, HTML- and JSON-encoded), before parsing.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import html
import json
import re
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import attrs

from .._errors import ApiError, InvalidResponseError, error_class, redact, scrub
from .._models import ErrorResponse, Problem, converter

__all__ = [
    "Answer",
    "api_error",
    "error_for",
    "parse_http_date",
    "parse_retry_after",
    "structure",
    "success_body",
    "with_escapes",
]


_T = TypeVar("_T")
_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)
_TOO_LARGE = "the answer is larger than the 1 MiB cap (too large for a token endpoint's answer)"
_NOT_JSON = object()


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
class Answer:
    """What the wire gave back, read whole (up to the cap) before the response is released."""

    raw: bytes
    too_large: bool
    status: int
    date: str | None
    retry_after: str | None


def success_body(answer: Answer, method: str, url: str, secrets: Iterable[str]) -> Any:
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
            excerpt=scrub(text, with_escapes(secrets)),
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


def api_error(
    answer: Answer,
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


def with_escapes(secrets: Iterable[str]) -> tuple[str, ...]:
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


def error_for(
    status: int,
    raw: bytes,
    method: str,
    url: str,
    secrets: Iterable[str],
    retry_after: str | None,
    server_time: float | None,
) -> ApiError:
    """The `ApiError` for an error answer, from its parts (what `HttpCore.request` raises)."""
    answer = Answer(raw, False, status, None, retry_after)
    return api_error(answer, method, url, with_escapes(secrets), server_time)
