"""`aioica-auth serve`: run the local ICA-compatible server until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TextIO

import attrs

from .parser import PROG, Failure

if TYPE_CHECKING:
    from ..testing import LocalIcaServer

__all__ = ["FaultSpec", "ServeError", "parse_faults", "serve_command"]


class ServeError(Failure):
    """The local server could not listen (exit code 1)."""


def _fault_names() -> tuple[frozenset[str], frozenset[str]]:
    """The endpoints (and `*`) and the fault kinds `--faults` takes (a status is a number)."""
    from ..testing._faults import ENDPOINTS, FAULT_KINDS  # only when `serve` runs

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


@contextlib.contextmanager
def _on_signals(callback: Callable[[int], None]) -> Iterator[None]:
    """Call `callback(signum)` on SIGINT and SIGTERM, where the platform and thread allow."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, callback, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread, or not supported (Windows): Ctrl-C still raises
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _banner(srv: LocalIcaServer, lifetime: float, latency: float, clock_offset: float) -> str:
    """What `serve` prints on start: its URLs, its throwaway credentials, how to use them."""
    lines = [
        "Local ICA-compatible server (aioica_auth.testing); Ctrl-C stops it.",
        f"  ICA v2 base URL:     {srv.ica_base_url}",
        f"  console v1 base URL: {srv.base_url}",
        f"  protected resource:  {srv.resource_url}",
        f"  token lifetime {lifetime:g} s, latency {latency:g} s, clock offset {clock_offset:g} s",
        "Throwaway test credentials of this server (not secrets):",
        f"  API key:  {srv.api_key}",
        f"  username: {srv.username}",
        f"  password: {srv.password}",
        "In another shell:",
        f"  export ICAV2_X_API_KEY={srv.api_key} ICAV2_BASE_URL={srv.ica_base_url} "
        f"ICA_CONSOLE_URL={srv.base_url}",
        f"  {PROG} token --json",
    ]
    return "\n".join(lines)


def serve_command(
    *,
    port: int,
    lifetime: float,
    latency: float,
    clock_offset: float,
    faults: Sequence[FaultSpec],
    out: TextIO,
) -> int:
    """`aioica-auth serve`: run the local server until SIGINT or SIGTERM.

    Returns:
        128 + the number of the signal that stopped it (130 for Ctrl-C, 143 for SIGTERM),
        as the other commands exit when interrupted.

    Raises:
        ServeError: the port is in use, or another reason not to listen.
    """
    from ..testing import LocalIcaServer  # the CLI's other commands don't need it

    async def serve() -> int:
        srv = LocalIcaServer(
            port=port, lifetime=lifetime, latency=latency, clock_offset=clock_offset
        )
        try:
            await srv.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                msg = f"port {port} on 127.0.0.1 is already in use; pick another --port"
            else:
                msg = f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
            raise ServeError(msg) from exc
        try:
            for spec in faults:
                srv.inject(
                    spec.endpoint,
                    kind=spec.kind,
                    status=spec.status,
                    times=spec.times,
                    retry_after=spec.retry_after,
                )
            stop = asyncio.Event()
            received: list[int] = []

            def on_signal(signum: int) -> None:
                received.append(signum)
                stop.set()

            with _on_signals(on_signal):
                print(_banner(srv, lifetime, latency, clock_offset), file=out, flush=True)
                await stop.wait()
        finally:
            await srv.close()
        calls = ", ".join(f"{k} {v}" for k, v in sorted(srv.counts.items())) or "none"
        print(f"stopped; requests served: {calls}", file=out, flush=True)
        return 128 + (received[0] if received else signal.SIGINT)

    return asyncio.run(serve())
