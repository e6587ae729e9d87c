"""What every part of the command line shares: its name, its two failures, and its manners.

The program's name, the exceptions that become exit codes 2 and 1, `shown` (a value that may
be a secret is never echoed), `warn` (one warning line on stderr) and `on_signals` (SIGINT and
SIGTERM as a callback, for the commands that run until stopped; `Stop` is the callback they
both use). It imports nothing of the
CLI, so the parser, the commands and the local server's command all stand on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Callable, Iterator

__all__ = ["PROG", "WORD", "Failure", "Stop", "UsageError", "on_signals", "shown", "warn"]

PROG = "aioica-auth"
WORD = re.compile(r"[a-z][a-z0-9-]{0,19}")


class UsageError(Exception):
    """A mistake on the command line or in the environment: exit code 2."""


class Failure(Exception):
    """An authentication, API or environment failure: exit code 1."""


def shown(value: str) -> str:
    """`value` when it cannot be a secret (a short word), else `<not shown>`."""
    return value if WORD.fullmatch(value) or len(value) < 12 else "<not shown>"


def warn(message: str) -> None:
    """Say `message` on stderr as one warning line (its whitespace folded)."""
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr)


@contextlib.contextmanager
def on_signals(callback: Callable[[int], None]) -> Iterator[None]:
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


class Stop:
    """The callback of `on_signals` for a command that runs until stopped.

    The first signal sets `event`; `exit_code` is what the command then exits with: 128 + the
    signal's number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a command that the
    signal killed.
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._received: list[int] = []

    def __call__(self, signum: int) -> None:
        self._received.append(signum)
        self.event.set()

    @property
    def exit_code(self) -> int:
        """128 + the first signal's number; 130 (SIGINT) when none came."""
        return 128 + (self._received[0] if self._received else signal.SIGINT)
