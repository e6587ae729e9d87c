"""`SingleFlight`: one renewal task, and the callers waiting for it, each with a deadline.

Rules it holds, so that no caller of it can break them:

- A finished task is never in flight: `running` is false from the moment the task is done,
  whatever its done-callback has not yet run; `start()` then starts a new one.
- Each waiter parks on a future of its own, never on the task: cancelling a waiter cancels
  nothing but itself, and a waiter that leaves (cancelled, or past its deadline) removes its
  future at once, so waiters cannot pile up while the task hangs.
- `wait()` always awaits something: a waiter that finds the task already finished yields
  once before it returns, so no loop around it can go round without yielding.
- Deadlines cost one loop timer per flight, not one per waiter: the timer is armed for the
  earliest deadline and, when it fires, releases every waiter due within `_SLACK`.
- Where the running Python allows (3.12+), the task starts eagerly: its first step (opening
  the connection) runs before the other callers' first steps, not after ten thousand of them.
"""

from __future__ import annotations

import asyncio
import enum
import math
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import attrs

__all__ = ["Landing", "Outcome", "SingleFlight", "outcome_of"]

_T = TypeVar("_T")
_SLACK = 0.005  # seconds: waiters due this close together are released by one timer


class Landing(enum.Enum):
    """How a wait for the flight ended."""

    DONE = "done"  # the task returned a value
    FAILED = "failed"  # the task raised
    CANCELLED = "cancelled"  # the task was cancelled (the manager is closing)
    TIMED_OUT = "timed out"  # the waiter's deadline passed first


@attrs.frozen
class Outcome(Generic[_T]):
    """What a waiter learnt: the landing, and the value or the exception."""

    landing: Landing
    value: _T | None = None
    error: BaseException | None = None


class SingleFlight(Generic[_T]):
    """One task at a time made by `run()`, awaited by any number of bounded waiters."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[], Coroutine[Any, Any, _T]],
        *,
        name: str,
        clock: Callable[[], float],
    ) -> None:
        self._loop = loop
        self._run = run
        self._name = name
        self._clock = clock
        self._task: asyncio.Task[_T] | None = None
        self._landing: Outcome[_T] | None = None  # of `_task`, once it has landed
        self._waiters: dict[asyncio.Future[None], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    @property
    def running(self) -> bool:
        """Whether a task is in flight (started and not finished)."""
        task = self._task
        return task is not None and not task.done()

    @property
    def landing(self) -> Outcome[_T] | None:
        """How the last task landed, once it has (and its done-callback ran); else None."""
        return self._landing

    @property
    def waiting(self) -> int:
        """How many waiters are parked."""
        return len(self._waiters)

    def start(self) -> asyncio.Task[_T]:
        """The task in flight, starting one if none is."""
        task = self._task
        if task is None or task.done():
            self._landing = None
            task = _spawn(self._loop, self._run(), self._name)
            self._task = task
            task.add_done_callback(self._landed)
        return task

    def cancel(self) -> asyncio.Task[_T] | None:
        """Cancel the task in flight; returns it (to be awaited), or None."""
        task = self._task
        if task is None or task.done():
            return None
        task.cancel()
        return task

    async def wait(self, deadline: float) -> Outcome[_T]:
        """Wait for the task in flight (see `start`) until `deadline` (clock seconds)."""
        task = self._task
        if task is None:
            msg = "SingleFlight.wait() before start()"
            raise RuntimeError(msg)
        if task.done():
            await asyncio.sleep(0)  # finished already: yield once, then report it
        while not task.done():
            waiter = self.park(deadline)
            if waiter is None:
                await asyncio.sleep(0)  # even a wait already past its deadline yields
                return Outcome(Landing.TIMED_OUT)
            try:
                await waiter  # woken when any task lands, or by the deadline timer
            finally:
                self.unpark(waiter)
        return outcome_of(task)

    def park(self, deadline: float) -> asyncio.Future[None] | None:
        """A future of the caller's own, resolved when a task lands or `deadline` comes, or
        None if `deadline` has come. Await it, then `unpark` it (in a `finally`)."""
        if self._clock() >= deadline - _SLACK:
            return None
        waiter = self._loop.create_future()
        self._waiters[waiter] = deadline
        if deadline < self._timer_at:
            self._arm(deadline)
        return waiter

    def unpark(self, waiter: asyncio.Future[None]) -> None:
        """Forget a parked future (the waiter left: woken, timed out or cancelled)."""
        self._waiters.pop(waiter, None)

    # -- internals --------------------------------------------------------------------------

    def _landed(self, task: asyncio.Task[_T]) -> None:
        # Judged once per task (each waiter reads `landing`); this retrieves its exception.
        outcome = outcome_of(task)
        if task is self._task:
            self._landing = outcome
        # Every waiter wakes; one whose task is still running (a newer one) parks again.
        self._disarm()
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _arm(self, deadline: float) -> None:
        self._disarm()
        delay = max(0.0, deadline - self._clock())
        self._timer = self._loop.call_at(self._loop.time() + delay, self._expire)
        self._timer_at = deadline

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = math.inf

    def _expire(self) -> None:
        """Release the waiters whose deadline has come; re-arm for the next one."""
        self._timer = None
        self._timer_at = math.inf
        due = self._clock() + _SLACK
        earliest = math.inf
        for waiter, deadline in list(self._waiters.items()):
            if deadline <= due:
                del self._waiters[waiter]
                if not waiter.done():
                    waiter.set_result(None)
            else:
                earliest = min(earliest, deadline)
        if not math.isinf(earliest):
            self._arm(earliest)


def outcome_of(task: asyncio.Task[_T]) -> Outcome[_T]:
    """How a finished task landed."""
    if task.cancelled():
        return Outcome(Landing.CANCELLED)
    error = task.exception()
    if error is not None:
        return Outcome(Landing.FAILED, error=error)
    return Outcome(Landing.DONE, value=task.result())


def _spawn(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T], name: str
) -> asyncio.Task[_T]:
    if sys.version_info >= (3, 12):
        # Eager: the first step runs now, in the caller's turn, not behind every queued task.
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)
    return loop.create_task(coro, name=name)
