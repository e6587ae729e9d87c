"""`aioica-auth serve`: run the local ICA-compatible server until interrupted."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .base import PROG, Failure, Stop, on_signals
from .faults import FaultSpec

if TYPE_CHECKING:
    from ..testing import LocalIcaServer

__all__ = ["ServeError", "serve_command"]


class ServeError(Failure):
    """The local server could not listen (exit code 1)."""


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
        stop = Stop()
        try:
            for spec in faults:
                srv.inject(
                    spec.endpoint,
                    kind=spec.kind,
                    status=spec.status,
                    times=spec.times,
                    retry_after=spec.retry_after,
                )
            with on_signals(stop):
                print(_banner(srv, lifetime, latency, clock_offset), file=out, flush=True)
                await stop.event.wait()
        finally:
            await srv.close()
        calls = ", ".join(f"{k} {v}" for k, v in sorted(srv.counts.items())) or "none"
        print(f"stopped; requests served: {calls}", file=out, flush=True)
        return stop.exit_code

    return asyncio.run(serve())
