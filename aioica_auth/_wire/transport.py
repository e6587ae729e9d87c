"""aiohttp's failures to get an answer, as `TransportError`s that say why and leak nothing.

aiohttp's exceptions carry the request with them: `ClientResponseError.request_info.headers`
holds the `X-API-Key` or `Authorization` we sent, and a connector error's connection key holds
any proxy credentials. So no aiohttp exception is ever chained (as `__cause__` or
`__context__`): the `TransportError` built here chains a fresh builtin error made from the
failure's harmless parts only (errno and strerror, the TLS library's message, a timeout).
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp

from .._errors import TransportError, TransportKind, TransportTimeoutError

__all__ = ["session_closed", "transport_error"]

_Described = tuple[TransportKind, str, BaseException | None]

# Exact builtin classes a cause may have, most derived first.
_SAFE_OS_ERRORS: tuple[type[OSError], ...] = (
    ssl.SSLCertVerificationError,
    ssl.SSLError,
    socket.gaierror,
    ConnectionRefusedError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    TimeoutError,
    ConnectionError,
    OSError,
)
_RESET = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})


def transport_error(
    exc: BaseException, head: str, timeout: aiohttp.ClientTimeout
) -> TransportError:
    """The `TransportError` for an aiohttp failure (or a timeout) of the request `head`.

    Args:
        exc: What aiohttp raised; nothing of it is kept.
        head: "METHOD URL" of the request (a URL without its query).
        timeout: The request's timeout, to say which bound ran out.
    """
    if isinstance(exc, TimeoutError):  # aiohttp's own timeouts are TimeoutErrors too
        seconds = _bound(exc, timeout)
        message = f"timed out after {seconds} s"
        error: TransportError = TransportTimeoutError(f"{head}: {message}")
        return _chain(error, TimeoutError(message))
    kind, message, cause = _describe(exc)
    return _chain(TransportError(f"{head}: {message}", kind=kind), cause)


def session_closed(head: str) -> TransportError:
    """The `TransportError` for a request on a closed aiohttp session."""
    error = TransportError(f"{head}: the aiohttp session is closed", kind="closed")
    return _chain(error, RuntimeError("Session is closed"))


def _chain(error: TransportError, cause: BaseException | None) -> TransportError:
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error


def _bound(exc: BaseException, timeout: aiohttp.ClientTimeout) -> float | None:
    """The timeout that ran out: the connect or read bound aiohttp names, else the total."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        bounds = [b for b in (timeout.connect, timeout.sock_connect) if b]
        return min(bounds) if bounds else timeout.total
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return timeout.sock_read or timeout.total
    return timeout.total


def _describe(exc: BaseException) -> _Described:
    for cls, describe in _DESCRIBERS:
        if isinstance(exc, cls):
            return describe(exc)
    return "other", f"{type(exc).__name__}: no answer from the server", None


def _connector(exc: aiohttp.ClientConnectorError) -> _Described:
    where = _host_port(exc.host, exc.port)
    os_error = exc.os_error
    cause = os_cause(os_error)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns", f"cannot resolve host {exc.host}", cause
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        where = f"the proxy {where}"
    if isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED:
        return "refused", f"connection refused by {where}", cause
    reason = os_error.strerror if isinstance(os_error, OSError) and os_error.strerror else None
    return "other", f"cannot connect to {where}" + (f": {reason}" if reason else ""), cause


def _certificate(exc: aiohttp.ClientConnectorCertificateError) -> _Described:
    where = _host_port(exc.host, exc.port)
    error = exc.certificate_error
    reason = getattr(error, "verify_message", None) or getattr(error, "reason", None)
    message = f"TLS certificate verify failed for {where}" + _parenthesised(reason)
    return "tls", message, os_cause(error) if isinstance(error, OSError) else None


def _handshake(exc: aiohttp.ClientSSLError) -> _Described:
    where = _host_port(exc.host, exc.port)
    reason = getattr(exc.os_error, "reason", None) or exc.os_error.strerror
    message = f"TLS handshake with {where} failed" + _parenthesised(reason)
    return "tls", message, os_cause(exc.os_error)


def _fingerprint(exc: aiohttp.ServerFingerprintMismatch) -> _Described:
    where = _host_port(exc.host, exc.port)
    return "tls", f"the TLS certificate of {where} does not match the pinned fingerprint", None


def _disconnected(exc: aiohttp.ServerDisconnectedError) -> _Described:
    message = "the server closed the connection before answering"
    return "disconnected", message, ConnectionResetError(message)


def _cut_short(exc: aiohttp.ClientPayloadError) -> _Described:
    message = "the answer was cut short"
    return "disconnected", message, ConnectionResetError(message)


def _proxy_refused(exc: aiohttp.ClientHttpProxyError) -> _Described:
    return "other", f"the proxy answered HTTP {exc.status}", None


def _reset(exc: OSError) -> _Described:
    return "disconnected", "the connection was reset", os_cause(exc)


def _os_failure(exc: aiohttp.ClientOSError) -> _Described:
    if isinstance(exc, ConnectionResetError) or exc.errno in _RESET:
        return _reset(exc)
    reason = exc.strerror if isinstance(exc.strerror, str) else type(exc).__name__
    return "other", f"the connection failed: {reason}", os_cause(exc)


# Most derived first: a certificate error is also an SSL error, both are connector errors,
# and every connector error is a ClientOSError.
_DESCRIBERS: tuple[tuple[type[BaseException], Callable[[Any], _Described]], ...] = (
    (aiohttp.ClientConnectorCertificateError, _certificate),
    (aiohttp.ClientSSLError, _handshake),
    (aiohttp.ClientConnectorError, _connector),
    (aiohttp.ServerFingerprintMismatch, _fingerprint),
    (aiohttp.ServerDisconnectedError, _disconnected),
    (aiohttp.ClientPayloadError, _cut_short),
    (aiohttp.ClientHttpProxyError, _proxy_refused),
    (aiohttp.ClientConnectionResetError, _reset),
    (aiohttp.ClientOSError, _os_failure),
)


def os_cause(error: BaseException) -> OSError:
    """A fresh builtin `OSError` (of the nearest safe class) with `error`'s errno and strerror."""
    cls = next((c for c in _SAFE_OS_ERRORS if isinstance(error, c)), OSError)
    code = getattr(error, "errno", None)
    text = getattr(error, "strerror", None)
    if isinstance(code, int) and isinstance(text, str):
        return cls(code, text)
    return cls(text) if isinstance(text, str) else cls()


def _host_port(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def _parenthesised(reason: object) -> str:
    return f" ({reason})" if isinstance(reason, str) and reason else ""
