"""`aioica-auth demo`: the command that runs the demo and shows it.

It stands apart from the demo's pieces (`run`, the tasks against a local server; `display`,
the progress line and the summary) as `serve_command` does from the local server: the entry
the command line calls, which owns the event loop, the signals and the exit code.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import TextIO

from ..base import Stop, on_signals
from .display import ProgressLine, fit, format_summary
from .result import DemoResult
from .run import run_demo

__all__ = ["demo_command"]


def demo_command(
    *,
    tasks: int,
    duration: float,
    lifetime: float,
    latency: float,
    faults: bool,
    seed: int | None,
    as_json: bool,
    out: TextIO,
) -> int:
    """`aioica-auth demo`: run it with live progress on a TTY, print the summary.

    Returns:
        0 when no 401 reached a task and no task crashed, else 1; 128 + the signal number
        when SIGINT or SIGTERM stopped it early (after printing the summary so far).
    """
    line = ProgressLine(out) if out.isatty() and not as_json else None
    width = shutil.get_terminal_size().columns  # COLUMNS, else the terminal's, else 80
    stop = Stop()

    async def demo() -> DemoResult:
        with on_signals(stop):
            if not as_json:  # after the handlers are in place: Ctrl-C from now on is handled
                start = (
                    f"demo: {tasks:,} tasks for {duration:g} s through one TokenManager "
                    f"against a local server (token lifetime {lifetime:g} s)..."
                )
                print("\n".join(fit(start, width, "  ")), file=out, flush=True)
            return await run_demo(
                tasks=tasks,
                duration=duration,
                lifetime=lifetime,
                latency=latency,
                faults=faults,
                seed=seed,
                stop=stop.event,
                progress=line,
            )

    result = asyncio.run(demo())
    if line is not None:
        line.finish()
    text = json.dumps(result.to_json(), indent=2) if as_json else format_summary(result, width)
    print(text, file=out)
    if result.interrupted:
        return stop.exit_code
    return 0 if result.ok else 1
