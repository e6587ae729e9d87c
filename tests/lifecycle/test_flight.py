"""SingleFlight: one task for many bounded waiters, driven by a fake clock and loop turns.

Deadlines are read from a `FlightClock` the tests move by hand; its loop timer still has to
fire in real time, so the deadlines are a few milliseconds ahead and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import gc
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from aioica_auth._lifecycle.flight import _SLACK, Landing, Outcome, SingleFlight

from ..fakes import FlightClock

DONE_1 = Outcome(Landing.DONE, value=1)
TIMED_OUT = Outcome(Landing.TIMED_OUT)


class Runs:
    """`run` for a SingleFlight: counts its calls; call n returns n once gate n is opened."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.calls = 0
        self.gates: dict[int, asyncio.Event] = {}
        self.error = error

    def gate(self, n: int) -> asyncio.Event:
        return self.gates.setdefault(n, asyncio.Event())

    async def run(self) -> int:
        self.calls += 1
        n = self.calls
        await self.gate(n).wait()
        if self.error is not None:
            raise self.error
        return n


def flight_of(runs: Runs, clock: Callable[[], float]) -> SingleFlight[int]:
    return SingleFlight(asyncio.get_running_loop(), runs.run, name="test-flight", clock=clock)


async def turns(predicate: Callable[[], bool], limit: int = 100) -> None:
    """Give the loop turns, with no time passing, until `predicate` holds (at most `limit`)."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached within {limit} loop turns")


async def until_fired(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait, bounded, for a real loop timer to have done something `predicate` can see."""
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "the loop timer did not fire in time"
        await asyncio.sleep(0.001)


async def finish(flight: SingleFlight[Any]) -> None:
    """Cancel the task in flight, if any, and await it: no task outlives a test."""
    task = flight.cancel()
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)


# -- one task, many waiters ----------------------------------------------------------------------


async def test_n_waiters_share_one_task() -> None:
    """100 callers that start() and wait() cause one run() and all get its value."""
    runs, clock = Runs(), FlightClock()
    flight = flight_of(runs, clock)

    async def caller() -> Outcome[int]:
        flight.start()
        return await flight.wait(clock.now + 60)

    callers = [asyncio.create_task(caller()) for _ in range(100)]
    await turns(lambda: flight.waiting == 100 and runs.calls == 1)
    assert flight.running
    runs.gate(1).set()
    assert await asyncio.gather(*callers) == [DONE_1] * 100
    assert runs.calls == 1
    assert flight.waiting == 0
    assert not flight.running


async def test_start_returns_the_task_in_flight() -> None:
    """While a task runs, start() hands back that same task and starts nothing."""
    runs = Runs()
    flight = flight_of(runs, FlightClock())
    task = flight.start()
    assert flight.start() is task
    await turns(lambda: runs.calls == 1)
    assert flight.start() is task
    assert runs.calls == 1
    await finish(flight)


async def test_wait_before_start_is_an_error() -> None:
    """wait() with no task ever started raises RuntimeError instead of waiting forever."""
    flight = flight_of(Runs(), FlightClock())
    with pytest.raises(RuntimeError, match="before start"):
        await flight.wait(math.inf)


async def landed_before_its_callback(
    runs: Runs, flight: SingleFlight[int]
) -> tuple[asyncio.Task[int], asyncio.Task[Outcome[int]]]:
    """Start a task with one parked waiter, let it finish, and return in the loop turn in which
    it is done but its done-callback (which wakes the waiters) has not run yet."""
    old = flight.start()
    parked = asyncio.create_task(flight.wait(math.inf))
    await turns(lambda: flight.waiting == 1 and runs.calls == 1)
    runs.gate(1).set()
    await asyncio.sleep(0)  # run() returns in this turn; its done-callback is queued behind us
    assert old.done()
    assert flight.waiting == 1  # the done-callback has not run: the waiter is still parked
    return old, parked


async def test_a_finished_task_is_never_running_even_before_its_callback() -> None:
    """Done but not yet called back: `running` is false, and start() starts a new task."""
    runs = Runs()
    flight = flight_of(runs, FlightClock())
    old, parked = await landed_before_its_callback(runs, flight)
    assert not flight.running
    new = flight.start()
    assert new is not old
    assert not new.done()
    assert flight.running
    assert await parked == DONE_1
    await turns(lambda: runs.calls == 2)
    await finish(flight)


async def test_the_old_tasks_landing_does_not_end_a_wait_on_the_new_one() -> None:
    """A waiter of the new task, woken when the old one's callback runs, parks again and gets the
    new task's value, not the old one's."""
    runs = Runs()
    flight = flight_of(runs, FlightClock())
    _, parked = await landed_before_its_callback(runs, flight)
    flight.start()

    async def open_second_gate() -> None:
        # Once the old landing woke everyone and our wait below parked again, let run 2 finish.
        await turns(lambda: parked.done() and flight.waiting == 1 and runs.calls == 2)
        runs.gate(2).set()

    opener = asyncio.create_task(open_second_gate())
    # Parks now, before the old task's done-callback runs and wakes it.
    assert await flight.wait(math.inf) == Outcome(Landing.DONE, value=2)
    assert await parked == DONE_1
    await opener


async def test_a_waiter_that_finds_the_task_done_yields_once() -> None:
    """wait() on a finished task gives the loop a turn before it reports, so a loop around it
    cannot starve other tasks."""
    runs = Runs()
    runs.gate(1).set()
    flight = flight_of(runs, FlightClock())
    task = flight.start()
    await task
    await asyncio.sleep(0)  # its done-callback has run too
    other: list[str] = []
    asyncio.get_running_loop().call_soon(other.append, "ran")
    assert await flight.wait(math.inf) == DONE_1
    assert other == ["ran"]


async def test_a_wait_past_its_deadline_still_yields() -> None:
    """wait() awaits something on every call: one whose deadline has passed yields too."""
    clock = FlightClock()
    flight = flight_of(Runs(), clock)
    flight.start()
    other: list[str] = []
    asyncio.get_running_loop().call_soon(other.append, "ran")
    try:
        assert await flight.wait(clock.now - 1) == TIMED_OUT
        assert other == ["ran"]
    finally:
        await finish(flight)


# -- leaving: cancellation, deadlines ------------------------------------------------------------


async def test_a_cancelled_waiter_removes_its_future_and_spares_the_task() -> None:
    """Cancelling one of three waiters drops the count to two, leaves the task running, and the
    others still get its value."""
    runs, clock = Runs(), FlightClock()
    flight = flight_of(runs, clock)
    task = flight.start()
    waiters = [asyncio.create_task(flight.wait(clock.now + 60)) for _ in range(3)]
    await turns(lambda: flight.waiting == 3)
    waiters[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    assert flight.waiting == 2
    assert flight.running
    assert task.cancelling() == 0
    runs.gate(1).set()
    assert await asyncio.gather(*waiters[1:]) == [DONE_1] * 2


async def test_a_callers_timeout_scope_does_not_reach_the_task() -> None:
    """A caller's asyncio.timeout ends its own wait only; the task runs on to its value."""
    runs = Runs()
    flight = flight_of(runs, FlightClock())
    task = flight.start()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.005):
            await flight.wait(math.inf)
    assert flight.waiting == 0
    assert flight.running
    assert task.cancelling() == 0
    runs.gate(1).set()
    assert await task == 1


async def test_a_thousand_waiters_that_time_out_leave_no_futures_behind() -> None:
    """1,000 waiters of a hung task all time out; none stays parked and the task runs on."""
    runs, clock = Runs(), FlightClock()
    flight = flight_of(runs, clock)
    task = flight.start()
    waiters = [asyncio.create_task(flight.wait(clock.now + 0.01 + i * 1e-5)) for i in range(1000)]
    await turns(lambda: flight.waiting == 1000)
    clock.now += 1.0  # past every deadline: the one armed timer releases them all
    async with asyncio.timeout(10):
        outcomes = await asyncio.gather(*waiters)
    assert outcomes == [TIMED_OUT] * 1000
    assert flight.waiting == 0
    assert flight.running
    assert task.cancelling() == 0
    assert runs.calls == 1
    await finish(flight)


async def test_a_thousand_cancelled_waiters_leave_no_futures_behind() -> None:
    """1,000 waiters cancelled while the task hangs leave none parked and the task unharmed."""
    runs, clock = Runs(), FlightClock()
    flight = flight_of(runs, clock)
    task = flight.start()
    waiters = [asyncio.create_task(flight.wait(clock.now + 60)) for _ in range(1000)]
    await turns(lambda: flight.waiting == 1000)
    for waiter in waiters:
        waiter.cancel()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert flight.waiting == 0
    assert flight.running
    assert task.cancelling() == 0
    await finish(flight)


async def test_a_timer_releases_every_waiter_due_within_the_slack() -> None:
    """When the clock reaches the first deadline, waiters due within 5 ms of it leave with it and
    a waiter due 6 ms later stays parked."""
    runs, clock = Runs(), FlightClock()
    flight = flight_of(runs, clock)
    flight.start()
    t0 = clock.now
    first, close, later = (asyncio.create_task(flight.wait(t0 + d)) for d in (0.010, 0.014, 0.016))
    await turns(lambda: flight.waiting == 3)
    clock.now = t0 + 0.010
    async with asyncio.timeout(5):
        assert await first == TIMED_OUT
        assert await close == TIMED_OUT
    assert not later.done()
    assert flight.waiting == 1
    runs.gate(1).set()
    assert await later == DONE_1


async def test_a_timer_never_releases_a_waiter_before_its_deadline_less_the_slack() -> None:
    """Timers that fire while the clock is 6 ms short of the deadline release nothing; once the
    clock is within the slack, the next one releases the waiter."""
    clock = FlightClock()
    flight = flight_of(Runs(), clock)
    flight.start()
    t0 = clock.now
    waiter = asyncio.create_task(flight.wait(t0 + 0.006))
    await turns(lambda: flight.waiting == 1)
    reads = clock.reads
    await until_fired(lambda: clock.reads >= reads + 4)  # two firings: each reads the clock twice
    assert not waiter.done()
    assert flight.waiting == 1
    clock.now = t0 + 0.002  # 4 ms before the deadline: within the slack
    async with asyncio.timeout(5):
        assert await waiter == TIMED_OUT
    assert flight.waiting == 0
    await finish(flight)


async def test_an_earlier_deadline_rearms_the_timer() -> None:
    """A waiter due in 6 ms, parked after one due in 30 s, is released in time, not after 30 s."""
    runs, clock = Runs(), FlightClock()
    flight = flight_of(runs, clock)
    flight.start()
    t0 = clock.now
    far = asyncio.create_task(flight.wait(t0 + 30))
    await turns(lambda: flight.waiting == 1)
    near = asyncio.create_task(flight.wait(t0 + 0.006))
    await turns(lambda: flight.waiting == 2)
    clock.now = t0 + 0.006
    async with asyncio.timeout(5):
        assert await near == TIMED_OUT
    assert not far.done()
    runs.gate(1).set()
    assert await far == DONE_1


async def test_a_real_deadline_releases_the_waiter_no_earlier_than_the_slack() -> None:
    """On the loop's own clock, a waiter due in 20 ms is released at the deadline less at most
    the slack (late only as a loaded loop is late)."""
    loop = asyncio.get_running_loop()
    flight = flight_of(Runs(), loop.time)
    flight.start()
    deadline = loop.time() + 0.02
    outcome = await flight.wait(deadline)
    released = loop.time()
    assert outcome == TIMED_OUT
    assert released >= deadline - _SLACK
    assert released < deadline + 5.0
    await finish(flight)


async def test_a_deadline_already_past_times_out_without_parking() -> None:
    """A deadline in the past, or within the slack of now, times out at once and parks nothing."""
    clock = FlightClock()
    flight = flight_of(Runs(), clock)
    flight.start()
    assert await flight.wait(clock.now - 1) == TIMED_OUT
    assert await flight.wait(clock.now + _SLACK / 2) == TIMED_OUT
    assert flight.waiting == 0
    assert flight.running
    await finish(flight)


# -- landings: cancelled, failed -----------------------------------------------------------------


async def test_cancel_lands_every_waiter_as_cancelled() -> None:
    """cancel() cancels the task in flight and returns it; its waiters learn CANCELLED; with
    nothing in flight it returns None."""
    runs, clock = Runs(), FlightClock()
    flight = flight_of(runs, clock)
    assert flight.cancel() is None
    task = flight.start()
    waiters = [asyncio.create_task(flight.wait(clock.now + 60)) for _ in range(2)]
    await turns(lambda: flight.waiting == 2)
    assert flight.cancel() is task
    assert await asyncio.gather(*waiters) == [Outcome(Landing.CANCELLED)] * 2
    assert task.cancelled()
    assert not flight.running
    assert flight.cancel() is None


async def test_an_exception_is_delivered_to_every_waiter_in_its_outcome() -> None:
    """run() raising: each waiter, and one that comes after, gets FAILED with that exception."""
    error = ValueError("boom")
    runs, clock = Runs(error=error), FlightClock()
    flight = flight_of(runs, clock)
    flight.start()
    waiters = [asyncio.create_task(flight.wait(clock.now + 60)) for _ in range(2)]
    await turns(lambda: flight.waiting == 2)
    runs.gate(1).set()
    outcomes = [*await asyncio.gather(*waiters), await flight.wait(clock.now + 60)]
    assert outcomes == [Outcome(Landing.FAILED, error=error)] * 3
    assert all(o.error is error and o.value is None for o in outcomes)
    assert not flight.running


async def test_a_failure_nobody_waits_for_is_still_retrieved() -> None:
    """A task that fails with no waiter is not reported as 'exception was never retrieved' when
    collected (a bare task in the same situation is)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        runs = Runs(error=ValueError("unwatched"))
        runs.gate(1).set()
        flight: SingleFlight[int] | None = flight_of(runs, FlightClock())
        assert flight is not None
        task: asyncio.Task[int] | None = flight.start()
        await turns(lambda: task is not None and task.done())
        await asyncio.sleep(0)  # its done-callback runs
        task = flight = None
        gc.collect()
        assert reported == []

        bare_runs = Runs(error=ValueError("bare"))
        bare_runs.gate(1).set()
        bare: asyncio.Task[int] | None = loop.create_task(bare_runs.run())
        await turns(lambda: bare is not None and bare.done())
        bare = None
        gc.collect()
        assert [c["message"] for c in reported] == ["Task exception was never retrieved"]
    finally:
        loop.set_exception_handler(previous)


# -- eager start -----------------------------------------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager task start needs Python 3.12+")
async def test_eager_start_runs_the_first_step_before_queued_tasks() -> None:
    """On 3.12+, start() runs run()'s first step at once, ahead of tasks already queued."""
    order: list[str] = []

    async def queued() -> None:
        order.append("queued")

    async def run() -> int:
        order.append("first step")
        await asyncio.sleep(0)
        order.append("second step")
        return 1

    others = [asyncio.create_task(queued()) for _ in range(3)]
    flight = SingleFlight(asyncio.get_running_loop(), run, name="eager", clock=FlightClock())
    task = flight.start()
    assert order == ["first step"]
    await asyncio.gather(*others, task)
    assert order == ["first step", "queued", "queued", "queued", "second step"]
