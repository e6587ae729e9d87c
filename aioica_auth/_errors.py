"""Everything aioica_auth raises.

```
IcaError
├── ApiError                      an HTTP error answer (.status, .problem, .method, .url, .excerpt)
│   ├── BadRequestError           400
│   ├── UnauthorizedError         401
│   ├── ForbiddenError            403
│   ├── NotFoundError             404
│   ├── RateLimitError            429 (.retry_after, seconds)
│   ├── ServerError               5xx
│   └── InvalidResponseError      a 2xx answer that is not what the API defines
├── TransportError                the request did not get an answer (.kind says why)
│   └── TransportTimeoutError     ... because it timed out (also a builtin TimeoutError)
├── TokenUnavailableError         the manager cannot hand out a valid token (cause chained)
├── TokenStoreError               a fleet's store failed (never reaches a caller: the manager
│                                 mints on its own meanwhile)
└── DiscoveryError                no usable credential or base URL in the environment or the
                                  icav2 CLI's files (the message lists what was tried)
```

`TransportError.kind`, and what its message says after "METHOD URL: ":

```
"refused"       connection refused by HOST:PORT
"dns"           cannot resolve host HOST
"tls"           TLS certificate verify failed for HOST:PORT (REASON)
                TLS handshake with HOST:PORT failed (REASON)
"timeout"       timed out after N s                      (always a TransportTimeoutError)
"disconnected"  the server closed the connection before answering
                the answer was cut short
                the connection was reset
"closed"        the aiohttp session is closed
"other"         anything else (unreachable network, a proxy refusing, ...)
```

No message or attribute of these carries a secret: URLs are stripped of their query, body
excerpts are cut short and scrubbed of anything that looks like a token or of the request's
own credentials (also URL-, form-, HTML- and JSON-encoded). A `TransportError` never chains
aiohttp's exception (whose request info holds the request's headers, the credential among
them): its `__cause__` is a fresh builtin error built from the failure's safe parts (an
`OSError` subclass with errno and strerror, a `TimeoutError`, the TLS library's message).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from ._models import ErrorResponse, Problem

__all__ = [
    "ApiError",
    "BadRequestError",
    "DiscoveryError",
    "ForbiddenError",
    "IcaError",
    "InvalidResponseError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "TokenStoreError",
    "TokenUnavailableError",
    "TransportError",
    "TransportKind",
    "TransportTimeoutError",
    "UnauthorizedError",
]

TransportKind = Literal["refused", "dns", "tls", "timeout", "disconnected", "closed", "other"]
"""Why a request got no answer (`TransportError.kind`); the module docstring says more."""

_EXCERPT_LIMIT = 200
# JWTs (three base64url segments, header starting "eyJ"), and long opaque tokens.
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
_TAIL_RE = re.compile(r"\*\*\*(?:\.[A-Za-z0-9_-]+)+")
_BEARER_RE = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


class IcaError(Exception):
    """Root of every error aioica_auth raises."""


class ApiError(IcaError):
    """The server answered with an HTTP error status.

    Attributes:
        status: The HTTP status code.
        problem: The decoded error body, if it held one: an RFC 7807 `Problem` from ICA v2,
            or an `ErrorResponse` (`code`, `message`, `details`) from the console v1 API;
            None otherwise (an empty or HTML body, JSON of neither shape).
        method: The request method.
        url: The request URL without its query string.
        excerpt: A short, scrubbed excerpt of the body (for non-JSON answers such as an HTML
            error page).
        retry_after: Seconds the server asked us to wait before trying again (`Retry-After`,
            in seconds or as an HTTP date), or None when it did not say.
        reason: What the client found wrong, when it is not the status alone.
    """

    status: int
    problem: Problem | ErrorResponse | None
    method: str
    url: str
    excerpt: str
    retry_after: float | None
    reason: str

    def __init__(
        self,
        status: int,
        *,
        method: str = "",
        url: str = "",
        problem: Problem | ErrorResponse | None = None,
        excerpt: str = "",
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.reason = reason
        self.problem = problem
        self.method = method
        self.url = url
        self.excerpt = excerpt
        super().__init__(self._message(reason))

    def _message(self, reason: str) -> str:
        head = f"{self.method} {self.url}".strip()
        parts = [f"HTTP {self.status}" + (f" from {head}" if head else "")]
        if reason:
            parts.append(reason)
        if isinstance(self.problem, Problem):
            parts.extend(p for p in (self.problem.title, self.problem.detail) if p)
        elif isinstance(self.problem, ErrorResponse):
            parts.extend(p for p in (self.problem.code, self.problem.message) if p)
        elif self.excerpt:
            parts.append(repr(self.excerpt))
        return ": ".join(parts)


class BadRequestError(ApiError):
    """400 Bad Request."""


class UnauthorizedError(ApiError):
    """401 Unauthorized: the credential or token was not accepted."""


class ForbiddenError(ApiError):
    """403 Forbidden."""


class NotFoundError(ApiError):
    """404 Not Found: usually a wrong base URL."""


class RateLimitError(ApiError):
    """429 Too Many Requests; `retry_after` says how long the server asked us to wait."""


class ServerError(ApiError):
    """5xx: the server or a gateway in front of it failed."""


class InvalidResponseError(ApiError):
    """A success status whose body is not what the API defines (not JSON, no token, ...)."""


class TransportError(IcaError):
    """No HTTP answer: connection refused or reset, TLS failure, server disconnected.

    Attributes:
        kind: Why, as one word: "refused", "dns", "tls", "timeout", "disconnected",
            "closed" (the aiohttp session was closed) or "other".
    """

    kind: TransportKind

    def __init__(self, message: str, *, kind: TransportKind = "other") -> None:
        super().__init__(message)
        self.kind = kind


class TransportTimeoutError(TransportError, TimeoutError):
    """The request timed out (`kind` is "timeout")."""

    def __init__(self, message: str, *, kind: TransportKind = "timeout") -> None:
        super().__init__(message, kind=kind)


class TokenUnavailableError(IcaError):
    """The manager cannot hand out a valid token; `__cause__` holds the last failure."""


class TokenStoreError(IcaError):
    """A token store could not do what was asked (down, slow, refused, or misconfigured).

    The manager never lets this reach a caller: it mints on its own while the store fails.
    """


class DiscoveryError(IcaError):
    """No usable credential or base URL in the environment or the config files.

    The message lists what was tried, or says what is wrong with what was found; it never
    holds a secret.
    """


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    429: RateLimitError,
}


def error_class(status: int) -> type[ApiError]:
    """The `ApiError` subclass for an HTTP status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, ApiError)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything token-like replaced by `***`."""
    for secret in sorted((x for x in secrets if x), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _JWT_RE.sub("***", text)
    # JWTs written back to back: the first match swallows the next header, so its payload
    # and signature follow a `***`. Absorb them too.
    text = _TAIL_RE.sub("***", text)
    return _BEARER_RE.sub(r"\1 ***", text)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Cut `text` to a short excerpt with tokens and the given secrets replaced by `***`."""
    text = " ".join(redact(text, secrets).split())
    if len(text) > _EXCERPT_LIMIT:
        text = text[:_EXCERPT_LIMIT] + "…"
    return text
