"""`aioica-auth serve` in this process (so that its code is measured): it serves until a
signal, applies its faults, says what it served, and refuses a port in use."""

from __future__ import annotations

import io
import os
import signal
import socket
import threading

import pytest

from aioica_auth._cli.faults import FaultSpec
from aioica_auth._cli.serve import ServeError, serve_command

from ..support import free_port

pytestmark = pytest.mark.timeout(30)


class _Banner(io.StringIO):
    """The command's output; `shown` is set once the banner is out (its signal handlers
    are installed by then)."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = threading.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        if "Ctrl-C stops it" in self.getvalue():
            self.shown.set()
        return written


def test_serve_runs_until_sigterm_and_says_what_it_served() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("the command's signal handlers need the main thread")  # else SIGTERM kills
    out = _Banner()

    def stop() -> None:
        if out.shown.wait(20):
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the command's loop

    stopper = threading.Thread(target=stop, daemon=True)
    stopper.start()
    fault = FaultSpec("ica.create", "status", 503, 1, None)
    status = serve_command(
        port=free_port(), lifetime=60, latency=0, clock_offset=0, faults=[fault], out=out
    )
    stopper.join(5)
    assert status == 128 + signal.SIGTERM
    text = out.getvalue()
    assert "ICA v2 base URL:" in text
    assert "stopped; requests served: none" in text


def test_serve_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already in use"):
            serve_command(
                port=port, lifetime=60, latency=0, clock_offset=0, faults=[], out=io.StringIO()
            )
