"""Waiting at a terminal: fail fast on what retrying will not fix, and never in silence.

`within_timeout` runs a command's wait for a token (a manager's `token()`) under the CLI's
`--timeout`, as curl would:

* A connection refused, a host that does not resolve, a TLS failure (`TransportError.kind`
  "refused", "dns", "tls") is tried `FAST_ATTEMPTS` times (the manager's first backoffs:
  about 0.5 s and 1 s apart) and never beyond `FAST_WITHIN` seconds, then reported with its
  cause. Anything else (a timeout, a torn connection, 5xx, 429) is retried until
  `--timeout`, which the CLI keeps itself: the manager's own `acquire_timeout` is set a
  second beyond it, so the message the person reads names `--timeout` and the seconds
  actually waited, not a library keyword.
* Once a wait has lasted `SILENT_FOR` seconds, stderr says what it waits for and why:
  on a terminal one status line, rewritten in place and erased at the end; otherwise one
  line each time the status changes (`aioica-auth: token endpoint: connection refused by
  127.0.0.1:8443; retrying (2/3)`), and a wait with no failure yet (a hung server, another
  run's renewal) only after `SILENT_FOR_IN_LOGS` seconds, so that a loaded machine's slow
  second puts nothing in a script's log. `-q` silences them; errors are still said.

The manager's failed attempts are observed through the `aioica_auth` logger, whose
`token.renewal_failed` records (`record.event`) carry the failure among their arguments and the
delay before the next attempt as `record.next_in` (`_lifecycle.renewal.Renewal._failed`): the
event, not the wording, is matched. A filter on that logger sees them, including the DEBUG
ones, by lowering the logger's level while a wait is watched; it passes on only what the level
before would have passed, so no handler sees a record it would not have seen.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import shutil
import sys
import threading
from collections.abc import Awaitable
from typing import TextIO, TypeVar

from .._errors import IcaError, RateLimitError, TokenUnavailableError, TransportError
from .._events import Event
from .._lifecycle.backoff import Severity, classify
from .base import PROG, Failure

__all__ = ["FAST_ATTEMPTS", "FAST_KINDS", "FAST_WITHIN", "SILENT_FOR", "Watch", "within_timeout"]

_T = TypeVar("_T")

FAST_KINDS = frozenset({"refused", "dns", "tls"})
"""Failures a person at a terminal would rather hear of at once than have retried."""
FAST_ATTEMPTS = 3
FAST_WITHIN = 5.0  # seconds: the longest a fast kind is retried
SILENT_FOR = 1.0  # seconds of waiting before the first status line
# Not on a terminal (a log, a CI job), a wait with no failure yet (a slow or hung server,
# another run's renewal) is said after this long: a second of a loaded machine is no news.
SILENT_FOR_IN_LOGS = 5.0
_TICK = 1.0  # seconds between two refreshes of a terminal's status line
_REQUEST = re.compile(r"^[A-Z]+ \S+: ")  # "POST https://host/ica/rest/api/tokens: "

logger = logging.getLogger("aioica_auth")


def reason(exc: BaseException) -> str:
    """What failed, without the request's method and URL (`connection refused by HOST`)."""
    return _REQUEST.sub("", str(exc), count=1)


class Watch:
    """One command's wait for a token: the attempts that failed, the status it shows, and
    the verdict once a fast failure has been tried enough."""

    def __init__(
        self, origin: str, timeout: float, *, out: TextIO, quiet: bool, started: float
    ) -> None:
        self.origin = origin
        self.timeout = timeout
        self.out = out
        self.quiet = quiet
        self.started = started
        self.tty = _isatty(out)
        self.failures = 0
        self.fast = 0  # fast failures in a row
        self.last: IcaError | None = None
        self.gave_up: str | None = None
        self.status = f"waiting for a token from {origin} (--timeout {timeout:g} s)"
        self.news = False  # whether the status says a failure, not just a wait
        self.changed = asyncio.Event()
        self._shown: str | None = None
        self._width = 0  # of the status line on the terminal, to erase it

    def failed(self, exc: IcaError, delay: float, now: float) -> None:
        """An attempt failed with `exc`; the next is due in `delay` s (called at `now`)."""
        self.failures += 1
        self.last = exc
        elapsed = now - self.started
        kind = exc.kind if isinstance(exc, TransportError) else None
        if kind in FAST_KINDS:
            self.fast += 1
            if self.fast >= FAST_ATTEMPTS or elapsed + delay >= FAST_WITHIN:
                tries = "attempt" if self.fast == 1 else "attempts"
                self.gave_up = (
                    f"no valid token: {exc} (gave up after {self.fast} {tries} in {elapsed:.1f} s)"
                )
            else:
                self.status = (
                    f"token endpoint: {reason(exc)}; retrying ({self.fast + 1}/{FAST_ATTEMPTS})"
                )
        else:
            self.fast = 0
            self.status = (
                f"token endpoint: {reason(exc)}; retrying (attempt {self.failures + 1}, "
                f"--timeout {self.timeout:g} s)"
            )
        self.news = True
        self.changed.set()

    def waiting(self, status: str) -> None:
        """Say `status` from now on (another run holds the cache's lease, ...)."""
        if status != self.status:
            self.status, self.news = status, False
            self.changed.set()

    def out_of_time(self, now: float) -> str:
        """The message once `--timeout` has passed with no token."""
        waited = now - self.started
        head = f"no valid token within --timeout {self.timeout:g} s (waited {waited:.1f} s)"
        if self.last is None:
            return f"{head}: no answer from {self.origin} yet"
        tries = "attempt" if self.failures == 1 else "attempts"
        return f"{head}: {self.failures} {tries} failed, the last: {self.last}"

    def show(self, now: float) -> None:
        """Print the status, if the wait has lasted `SILENT_FOR` s: on a terminal in place
        (with the seconds waited), else once per change (a wait with no failure yet once it
        has lasted `SILENT_FOR_IN_LOGS` s)."""
        elapsed = now - self.started
        silent_for = SILENT_FOR if self.tty or self.news else SILENT_FOR_IN_LOGS
        if self.quiet or elapsed < silent_for:
            return
        if not self.tty:
            if self.status != self._shown:
                self._shown = self.status
                self._write(f"{PROG}: {self.status}\n")
            return
        line = f"{PROG}: {self.status} [{elapsed:.0f} s]"
        columns = shutil.get_terminal_size().columns
        if len(line) >= columns:
            line = line[: max(columns - 2, 0)] + "…"
        self._write("\r" + line + "\x1b[K")
        self._width = len(line)

    def erase(self) -> None:
        """Take a terminal's status line away, so the next line stands alone."""
        if self._width:
            self._width = 0
            self._write("\r\x1b[K")

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            self.quiet = True  # stderr gone: the exit code still says it


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


# -- observing the manager's failures ---------------------------------------------------------


class _Observer(logging.Filter):
    """On the `aioica_auth` logger: hands each `token.renewal_failed` record to the watch of
    the thread that logged it, and passes on only records at or above `floor` (the level the
    logger had before it was lowered to see the DEBUG ones)."""

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.floor = floor
        self.watches: dict[int, tuple[Watch, asyncio.AbstractEventLoop]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        watched = self.watches.get(record.thread or 0)
        if watched is not None and getattr(record, "event", None) == Event.TOKEN_RENEWAL_FAILED:
            args = record.args if isinstance(record.args, tuple) else ()
            exc = next((a for a in args if isinstance(a, IcaError)), None)
            delay = getattr(record, "next_in", None)
            delay = delay if isinstance(delay, int | float) else 0.0
            if exc is not None:
                watch, loop = watched
                watch.failed(exc, float(delay), loop.time())
        return record.levelno >= self.floor


_lock = threading.Lock()
_observer: _Observer | None = None
_saved_level = logging.NOTSET


def _observe(watch: Watch, loop: asyncio.AbstractEventLoop) -> None:
    global _observer, _saved_level  # one filter for every watched thread
    with _lock:
        if _observer is None:
            _observer = _Observer(logger.getEffectiveLevel())
            _saved_level = logger.level
            logger.addFilter(_observer)
            logger.setLevel(logging.DEBUG)
        _observer.watches[threading.get_ident()] = (watch, loop)


def _unobserve() -> None:
    global _observer
    with _lock:
        if _observer is None:
            return
        _observer.watches.pop(threading.get_ident(), None)
        if not _observer.watches:
            logger.removeFilter(_observer)
            logger.setLevel(_saved_level)
            _observer = None


# -- the wait ---------------------------------------------------------------------------------


async def within_timeout(work: Awaitable[_T], watch: Watch) -> _T:
    """`work`'s result, within `watch.timeout` seconds of `watch.started` (loop time), with
    a fast failure given up on as `Watch.failed` decides and the status said as it goes.

    Raises:
        Failure: `--timeout` passed, or a fast failure was tried enough (the message names
            the cause, and `--timeout` with the seconds waited where that is what ended it).
        IcaError: what `work` raised, when it is not a transient failure the CLI rewords
            (a refused credential: at once, as the manager raised it).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    deadline = watch.started + watch.timeout
    _observe(watch, loop)
    try:
        while not task.done():
            now = loop.time()
            # The last failure is the cause, so that --debug shows where it came from.
            if watch.gave_up is not None:
                raise Failure(watch.gave_up) from watch.last
            if now >= deadline:
                raise Failure(watch.out_of_time(now)) from watch.last
            watch.show(now)
            until = deadline - now
            if not watch.quiet:
                until = min(until, _next_tick(now - watch.started, tty=watch.tty))
            changed = asyncio.ensure_future(watch.changed.wait())
            try:
                await asyncio.wait(
                    {task, changed}, timeout=until, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
            watch.changed.clear()
        return _result(task, watch, loop.time())
    finally:
        _unobserve()
        watch.erase()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _next_tick(elapsed: float, *, tty: bool) -> float:
    """Seconds until the status may need showing: at `SILENT_FOR` and `SILENT_FOR_IN_LOGS`,
    then, on a terminal, every `_TICK` (the seconds waited); else never (a change wakes)."""
    for mark in (SILENT_FOR, SILENT_FOR_IN_LOGS):
        if elapsed < mark:
            return mark - elapsed
    if tty:
        return _TICK - (elapsed - SILENT_FOR) % _TICK
    return math.inf


def _result(task: asyncio.Future[_T], watch: Watch, now: float) -> _T:
    """The task's result; a transient failure it ended with, reworded for `--timeout`."""
    try:
        return task.result()
    except TokenUnavailableError as exc:
        if watch.gave_up is not None:
            raise Failure(watch.gave_up) from exc
        cause = exc.__cause__
        transient = isinstance(cause, IcaError) and classify(cause) is Severity.TRANSIENT
        if not transient or isinstance(cause, RateLimitError):
            raise
        if isinstance(cause, IcaError):
            watch.last = cause
            watch.failures = max(watch.failures, 1)
        raise Failure(watch.out_of_time(now)) from exc


def stderr_watch(origin: str, timeout: float, *, quiet: bool, started: float) -> Watch:
    """A `Watch` that speaks on `sys.stderr`."""
    return Watch(origin, timeout, out=sys.stderr, quiet=quiet, started=started)
