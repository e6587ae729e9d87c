"""Fault injection and the request log of the local server: `Fault`, `RecordedRequest`."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import attrs

__all__ = [
    "ENDPOINTS",
    "FAULT_KINDS",
    "TOKEN_ENDPOINTS",
    "Fault",
    "FaultBook",
    "RecordedRequest",
    "check_endpoint",
]

#: The token endpoints, by name (what ``"*"`` stands for).
TOKEN_ENDPOINTS = frozenset(
    {
        "ica.create",
        "ica.refresh",
        "console.create",
        "console.details",
        "console.refresh",
        "console.revoke",
    }
)
#: Every endpoint name a fault can target (``"other"`` is unknown paths and methods).
ENDPOINTS = TOKEN_ENDPOINTS | {"resource", "redirect", "other"}
#: What a fault can do to a request.
FAULT_KINDS = frozenset({"status", "drop", "malformed", "html", "empty", "hang"})
_SERVER_ERRORS = (500, 502, 503, 504)


def _check_kind(_: object, __: attrs.Attribute[str], value: str) -> None:
    if value not in FAULT_KINDS:
        msg = f"unknown fault kind {value!r}; expected one of {sorted(FAULT_KINDS)}"
        raise ValueError(msg)


def check_endpoint(value: str) -> None:
    """Raise ValueError unless `value` is ``"*"`` or a known endpoint name.

    Args:
        value: The name to check.

    Raises:
        ValueError: For an unknown name.
    """
    if value != "*" and value not in ENDPOINTS:
        msg = f"unknown endpoint {value!r}; expected '*' or one of {sorted(ENDPOINTS)}"
        raise ValueError(msg)


def _check_endpoint(_: object, __: attrs.Attribute[str], value: str) -> None:
    check_endpoint(value)


def _check_status(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not 100 <= value <= 599:
        msg = f"status must be an HTTP status code (100-599), got {value}"
        raise ValueError(msg)


@attrs.define
class Fault:
    """One injected fault: what it does, to which endpoint, how many more times.

    Kinds:
        ``"status"``: answer `status` with a body in the endpoint's error format (a v2
        Problem, a v1 ErrorResponse), and a ``Retry-After`` header when `retry_after` is set.
        ``"drop"``: close the connection without answering (the client sees a disconnect;
        note that aiohttp retries an idempotent request once on a reused connection).
        ``"malformed"``: the endpoint's success status and content type, with truncated JSON.
        ``"html"``: 502 with a ``text/html`` gateway page, as a proxy in front would send.
        ``"empty"``: `status` with an empty body and no ``Content-Type``.
        ``"hang"``: never answer; the request is dropped when the server closes.

    Attributes:
        endpoint: The endpoint name it applies to, or ``"*"`` for any token endpoint.
        kind: One of the kinds above.
        status: The status for ``"status"`` and ``"empty"``.
        remaining: How many more requests it applies to; None for "until removed". Set it
            to 0 to switch the fault off.
        retry_after: The ``Retry-After`` header value for ``"status"`` (e.g. ``"1"``).
        hits: How many requests it has applied to so far.
    """

    endpoint: str = attrs.field(validator=_check_endpoint)
    kind: str = attrs.field(default="status", validator=_check_kind)
    status: int = attrs.field(default=503, validator=_check_status)
    remaining: int | None = 1
    retry_after: str | None = None
    hits: int = 0

    @property
    def active(self) -> bool:
        """Whether the fault still applies to future requests."""
        return self.remaining is None or self.remaining > 0

    def matches(self, endpoint: str) -> bool:
        """Whether the fault targets `endpoint` (``"*"`` covers the token endpoints only).

        Args:
            endpoint: An endpoint name.

        Returns:
            True when it applies there.
        """
        if self.endpoint == "*":
            return endpoint in TOKEN_ENDPOINTS
        return self.endpoint == endpoint

    def consume(self) -> None:
        """Count one application of the fault."""
        self.hits += 1
        if self.remaining is not None:
            self.remaining -= 1


def _redacted_query(query: tuple[tuple[str, str], ...]) -> str:
    return "(" + ", ".join(f"{name}=…" for name, _ in query) + ")"


@attrs.frozen(repr=False)
class RecordedRequest:
    """One request as the server received it, verbatim.

    The repr names the header fields and the query parameters, but never shows their values
    or the body: they carry API keys, passwords and tokens.

    Attributes:
        endpoint: The endpoint name (``"ica.create"``, ``"resource"``, ...).
        method: The HTTP method.
        path: The path as sent (not percent-decoded), without the query string.
        query: The query parameters, decoded, in order (repeated names repeat).
        headers: The request headers as sent (case-insensitive lookup).
        body: The request body.
        at: When the request arrived, on the server's clock (`LocalIcaServer.now()`).
    """

    endpoint: str
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    body: bytes
    at: float

    def __repr__(self) -> str:
        names = ", ".join(self.headers.keys())
        return (
            f"RecordedRequest(endpoint={self.endpoint!r}, method={self.method!r}, "
            f"path={self.path!r}, query={_redacted_query(self.query)}, headers=<{names}>, "
            f"body=<{len(self.body)} bytes>, at={self.at:.3f})"
        )

    __str__ = __repr__


@attrs.frozen
class _RandomFaults:
    endpoints: frozenset[str]
    rate_5xx: float
    rate_429: float
    rate_drop: float
    retry_after: str
    rng: random.Random = attrs.field(eq=False)


@attrs.define
class FaultBook:
    """The faults in force on a server: explicit ones first, then the random ones."""

    faults: list[Fault] = attrs.Factory(list)
    _random: _RandomFaults | None = None

    def add(self, fault: Fault) -> Fault:
        """Add `fault` after the ones already in force.

        Args:
            fault: The fault.

        Returns:
            The same fault.
        """
        self.faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        """Remove `fault` (no error when it is already gone).

        Args:
            fault: The fault.
        """
        self.faults = [f for f in self.faults if f is not fault]

    def clear(self) -> None:
        """Remove every fault, the random ones included."""
        self.faults.clear()
        self._random = None

    def set_random(
        self,
        *,
        endpoints: Sequence[str],
        rate_5xx: float,
        rate_429: float,
        rate_drop: float,
        retry_after: str,
        seed: int | None,
    ) -> None:
        """Replace the random faults (all rates 0 switches them off).

        Args:
            endpoints: Endpoint names (``"*"`` for every token endpoint).
            rate_5xx: Probability of a 500/502/503/504 answer per request.
            rate_429: Probability of a 429 with ``Retry-After: retry_after``.
            rate_drop: Probability of a dropped connection.
            retry_after: The ``Retry-After`` value of the 429s.
            seed: Seed for a reproducible sequence.

        Raises:
            ValueError: For an unknown endpoint or rates outside [0, 1] or summing above 1.
        """
        names: set[str] = set()
        for name in endpoints:
            check_endpoint(name)
            names |= TOKEN_ENDPOINTS if name == "*" else {name}
        rates = (rate_5xx, rate_429, rate_drop)
        if any(not 0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            msg = "fault rates must each be within [0, 1] and sum to at most 1"
            raise ValueError(msg)
        if not names or sum(rates) == 0.0:
            self._random = None
            return
        self._random = _RandomFaults(
            frozenset(names), rate_5xx, rate_429, rate_drop, retry_after, random.Random(seed)
        )

    def take(self, endpoint: str) -> Fault | None:
        """The fault to apply to the next request of `endpoint`, consumed; or None.

        Args:
            endpoint: The endpoint name of the request.

        Returns:
            An explicit fault (consumed and pruned when used up), a one-off fault drawn by the
            random faults, or None.
        """
        for fault in self.faults:
            if fault.active and fault.matches(endpoint):
                fault.consume()
                self.faults = [f for f in self.faults if f.active]
                return fault
        return self._draw(endpoint)

    def _draw(self, endpoint: str) -> Fault | None:
        rnd = self._random
        if rnd is None or endpoint not in rnd.endpoints:
            return None
        roll = rnd.rng.random()
        if roll < rnd.rate_5xx:
            return Fault(endpoint, "status", rnd.rng.choice(_SERVER_ERRORS), 0, None, 1)
        if roll < rnd.rate_5xx + rnd.rate_429:
            return Fault(endpoint, "status", 429, 0, rnd.retry_after, 1)
        if roll < rnd.rate_5xx + rnd.rate_429 + rnd.rate_drop:
            return Fault(endpoint, "drop", 503, 0, None, 1)
        return None
