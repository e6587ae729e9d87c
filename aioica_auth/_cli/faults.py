"""`--faults` of `aioica-auth serve`: `ENDPOINT:STATUS|KIND[:TIMES]` items, parsed and checked.

The parser checks the option's text as it reads it (an argparse type) and `serve` injects the
specs into the local server; this module imports neither, so neither imports the other. The
endpoint and fault names are the local server's, read from `aioica_auth.testing` only when a
`--faults` is parsed: the CLI's other commands never load the test server.
"""

from __future__ import annotations

import attrs

__all__ = ["FaultSpec", "parse_faults"]


def _fault_names() -> tuple[frozenset[str], frozenset[str]]:
    """The endpoints (and `*`) and the fault kinds `--faults` takes (a status is a number)."""
    from ..testing._faults import ENDPOINTS, FAULT_KINDS  # only when a --faults is parsed

    return frozenset(ENDPOINTS - {"other"} | {"*"}), frozenset(FAULT_KINDS - {"status"})


@attrs.frozen
class FaultSpec:
    """One `--faults` item of `serve`: `ENDPOINT:STATUS|KIND[:TIMES]`."""

    endpoint: str
    kind: str
    status: int
    times: int | None
    retry_after: str | None


def parse_faults(text: str) -> list[FaultSpec]:
    """Parse `ica.create:503:3,ica.create:429,console.create:drop:*`.

    ENDPOINT is an endpoint name or `*` (every token endpoint); then an HTTP status (a 429
    carries `Retry-After: 1`) or one of drop, malformed, html, empty, hang; then how many
    requests to hit (default 1; `*` for every one).

    Raises:
        ValueError: a malformed item.
    """
    specs = [_parse_fault(item) for item in (raw.strip() for raw in text.split(",")) if item]
    if not specs:
        msg = "--faults is empty"
        raise ValueError(msg)
    return specs


def _parse_fault(item: str) -> FaultSpec:
    """One `ENDPOINT:STATUS|KIND[:TIMES]` item, checked in the order: endpoint, count, fault."""
    parts = item.split(":")
    if len(parts) not in (2, 3):
        msg = f"bad fault {item!r}: expected ENDPOINT:STATUS|KIND[:TIMES]"
        raise ValueError(msg)
    endpoint, what = parts[0], parts[1].lower()
    endpoints, _ = _fault_names()
    if endpoint not in endpoints:
        names = ", ".join(sorted(endpoints))
        msg = f"unknown endpoint {endpoint!r} in --faults; one of {names}"
        raise ValueError(msg)
    times = _fault_times(parts[2]) if len(parts) == 3 else 1
    return _fault_spec(endpoint, what, times)


def _fault_times(text: str) -> int | None:
    """The TIMES of a fault: a positive count, or None (`*`) for every request."""
    if text == "*":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    msg = f"bad count {text!r} in --faults: a positive number or *"
    raise ValueError(msg)


def _fault_spec(endpoint: str, what: str, times: int | None) -> FaultSpec:
    """The fault `what` (an HTTP status or a kind, lower case) on `endpoint`."""
    if what.isdigit() and 400 <= int(what) <= 599:
        status = int(what)
        retry_after = "1" if status == 429 else None
        return FaultSpec(endpoint, "status", status, times, retry_after)
    _, kinds = _fault_names()
    if what in kinds:
        return FaultSpec(endpoint, what, 503, times, None)
    msg = f"bad fault {what!r}: an HTTP status 400-599 or one of {sorted(kinds)}"
    raise ValueError(msg)
