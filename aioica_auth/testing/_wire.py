"""Response bodies and content types of the two APIs, as ICA-API.md gives them."""

from __future__ import annotations

import datetime as dt
import email.utils
import http
import json
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

__all__ = [
    "HTML_502",
    "JSON",
    "PROBLEM",
    "V2_SUCCESS",
    "empty_response",
    "error_response",
    "http_date",
    "json_response",
    "problem_response",
    "raw_response",
]

#: Success content type of the ICA v2 token endpoints.
V2_SUCCESS = "application/vnd.illumina.v3+json"
#: Error content type of ICA v2 (RFC 7807).
PROBLEM = "application/problem+json"
#: Content type of the console v1 API (success and ErrorResponse).
JSON = "application/json"
#: The page a gateway in front of ICA answers with (the "html" fault).
HTML_502 = "<html><body><h1>502 Bad Gateway</h1></body></html>"

# ICA error codes take the form ICA_<AREA>_<n> (ICA-API.md 2.3).
_ICA_CODES = {401: "ICA_SEC_002", 403: "ICA_SEC_003"}
_ICA_TITLES = {429: "Too many requests. Please try again later!"}


def http_date(timestamp: float) -> str:
    """An RFC 7231 IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``).

    Args:
        timestamp: Seconds since the epoch.

    Returns:
        The date text.
    """
    return email.utils.formatdate(timestamp, usegmt=True)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def raw_response(
    status: int,
    body: bytes,
    content_type: str | None,
    *,
    retry_after: str | None = None,
) -> web.Response:
    """A response with exactly this body and content type (no charset added).

    Args:
        status: The HTTP status.
        body: The body bytes.
        content_type: The Content-Type, or None for none.
        retry_after: A ``Retry-After`` header value, if any.

    Returns:
        The response.
    """
    headers: dict[str, str] = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return web.Response(status=status, body=body, headers=headers)


def json_response(status: int, payload: Any, content_type: str) -> web.Response:
    """A JSON response.

    Args:
        status: The HTTP status.
        payload: What to serialise.
        content_type: The Content-Type.

    Returns:
        The response.
    """
    return raw_response(status, _body(payload), content_type)


def empty_response(status: int) -> web.Response:
    """A response with no body and no Content-Type (e.g. 204, or the v1 details 401).

    Args:
        status: The HTTP status.

    Returns:
        The response.
    """
    return web.Response(status=status)


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str,
    now: float,
    retry_after: str | None = None,
) -> web.Response:
    """An ICA v2 error: an RFC 7807 Problem as ``application/problem+json``.

    Args:
        status: The HTTP status.
        detail: The human-readable detail (never a secret).
        instance: The URI of the request (no query string).
        now: The server's clock, for `timestamp`.
        retry_after: A ``Retry-After`` header value, if any.

    Returns:
        The response.
    """
    code = _ICA_CODES.get(status, f"ICA_API_{status}")
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
    problem: Mapping[str, Any] = {
        "id": str(uuid.uuid4()),
        "type": f"https://ica.local/problems/{code.lower()}",
        "title": f"{code}: {_ICA_TITLES.get(status, _phrase(status))}",
        "status": status,
        "detail": detail,
        "instance": instance,
        "parameters": {},
        "timestamp": stamp.replace("+00:00", "Z"),
    }
    return raw_response(status, _body(problem), PROBLEM, retry_after=retry_after)


def error_response(status: int, message: str, *, retry_after: str | None = None) -> web.Response:
    """A console v1 error: ``{"code", "message", "details"}`` as ``application/json``.

    Args:
        status: The HTTP status.
        message: The message (never a secret).
        retry_after: A ``Retry-After`` header value, if any.

    Returns:
        The response.
    """
    code = _phrase(status).replace(" ", "").replace("-", "")
    payload = {"code": code, "message": message, "details": []}
    return raw_response(status, _body(payload), JSON, retry_after=retry_after)
