"""What the demo shows: the live progress line and the closing summary.

`format_summary` renders a `DemoResult` as the closing table; the first `headers()` call of
each task (which waits for the first mint) is reported apart from the steady state, whose
p99 is what the performance figures (docs/performance.md) are about.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from .result import DemoProgress, DemoResult, TokenUse
from .run import FAULT_RATE_5XX, FAULT_RATE_429

__all__ = [
    "ProgressLine",
    "format_latency",
    "format_progress",
    "format_summary",
]

_TIMELINE_LINES = 20  # the text timeline shows the first and last tokens beyond this


def format_latency(seconds: float | None) -> str:
    """A short latency: `0.4 µs`, `12.3 µs`, `1.25 ms`, `2.10 s`; `n/a` for None."""
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _seconds(value: float) -> str:
    return f"{value:g} s"


def format_progress(p: DemoProgress, width: int | None = None) -> str:
    """The live progress line (without the carriage return), cut to `width` characters.

    A line wider than the terminal wraps, and a carriage return then rewrites only its last
    row: every redraw would leave a new line behind. So the less important fields go first.
    """
    fields = [
        f"{p.elapsed:5.1f}/{p.duration:g} s",
        f"requests {p.requests:,}",
        f"401s {p.auth_failures}",
        f"tokens minted {p.mints}",
        f"refreshes {p.refreshes}",
        f"waits {p.waits}",
    ]
    text = "  ".join(fields)
    while width is not None and len(text) > width and len(fields) > 1:
        fields.pop()
        text = "  ".join(fields)
    return text if width is None else text[:width]


def _counts(counter: Mapping[Any, int]) -> str:
    return ", ".join(f"{key}: {n:,}" for key, n in sorted(counter.items(), key=str))


def fit(line: str, width: int | None, indent: str = "    ") -> list[str]:
    """`line` as rows of at most `width` columns (None: as it is), the rows after the first
    indented by `indent`, words kept whole."""
    if width is None or len(line) <= width:
        return [line]
    lead = line[: len(line) - len(line.lstrip())]
    return textwrap.wrap(
        line, width, initial_indent=lead, subsequent_indent=indent, break_long_words=False
    )


def _timeline_line(use: TokenUse) -> str:
    at = "t+?" if use.received is None else f"t+{use.received:.2f}s"
    life = "" if use.lifetime is None else f"  lifetime {use.lifetime:g} s"
    span = ""
    if use.first_used is not None and use.last_used is not None:
        span = f"  (answered t+{use.first_used:.2f}s..t+{use.last_used:.2f}s)"
    return (
        f"  {at:>9}  token {use.fingerprint}  {use.how:<9}{life}  "
        f"served {use.requests:,} requests{span}"
    )


def format_summary(r: DemoResult, width: int | None = None) -> str:
    """The closing summary table and token timeline, as text, every row at most `width`
    columns (a note too long goes under its row; None: no limit)."""
    rate = r.requests / r.elapsed if r.elapsed > 0 else 0.0
    other = sum(r.other_errors.values())
    rows: list[tuple[str, str, str]] = [
        ("requests (resource GETs by the tasks)", f"{r.requests:,}", f"{rate:,.0f}/s"),
        ("401s reaching the tasks", f"{r.auth_failures:,}", ""),
        (
            "401s answered by the resource",
            f"{r.server_401s:,}",
            "all recovered by the middleware" if r.server_401s and not r.auth_failures else "",
        ),
        ("other errors", f"{other:,}", _counts(r.other_errors)),
        ("tasks crashed", f"{r.crashed:,}", ""),
        (
            "token-endpoint calls (server-counted)",
            f"{r.token_endpoint_calls:,}",
            "answers " + _counts(r.token_answers) if r.token_answers else "",
        ),
        ("tokens minted / refreshed (manager)", f"{r.mints} / {r.refreshes}", ""),
        (
            "renewal failures / waits (manager)",
            f"{r.failures} / {r.waits}",
            "failures retried with backoff" if r.failures else "",
        ),
        (
            "first headers() call p50 / max",
            f"{format_latency(r.first_call_p50)} / {format_latency(r.first_call_max)}",
            f"{r.first_calls:,} calls, one per task: they wait for the first mint",
        ),
        (
            "headers() latency p50",
            format_latency(r.latency_p50),
            f"{r.headers_calls:,} later calls (the steady state)",
        ),
        ("headers() latency p99", format_latency(r.latency_p99), ""),
        (
            "headers() latency max",
            format_latency(r.latency_max),
            "a call that waited for a renewal" if r.latency_max and r.latency_max > 1e-3 else "",
        ),
    ]
    label_w = max(len(label) for label, _, _ in rows)
    value_w = max(len(value) for _, value, _ in rows)
    faults = (
        f"5xx {FAULT_RATE_5XX:.0%} + 429 {FAULT_RATE_429:.0%} on the token endpoint"
        if r.faults
        else "off"
    )
    lines = fit(
        f"aioica_auth demo: {r.tasks:,} tasks (up to {r.connections} connections) "
        f"for {r.elapsed:.1f} s"
        + (" (interrupted)" if r.interrupted else "")
        + f"; token lifetime {_seconds(r.lifetime)}, token endpoint latency "
        + f"{format_latency(r.latency) if r.latency else '0'}, faults: {faults}",
        width,
        "  ",
    )
    lines.append("")
    for label, value, note in rows:
        line = f"  {label:<{label_w}}  {value:>{value_w}}"
        if note and width is not None and len(line) + 3 + len(note) > width:
            lines += [line, *fit(f"      {note}", width, "      ")]
        else:
            lines.append(f"{line}   {note}" if note else line)
    lines += ["", "Token timeline (t = seconds since start):"]
    uses = r.timeline
    if not uses:
        lines.append("  (no token)")
    else:
        half = _TIMELINE_LINES // 2
        cut = len(uses) > _TIMELINE_LINES
        for i, use in enumerate(uses[:half] + uses[-half:] if cut else uses):
            if cut and i == half:
                lines.append(f"  ... {len(uses) - 2 * half} more tokens ...")
            lines += fit(_timeline_line(use), width, " " * 13)
    lines.append("")
    result = "Result (so far)" if r.interrupted else "Result"
    if r.ok:
        verdict = f"{result}: PASS: zero 401s reached the tasks and no task crashed."
    elif r.requests == 0 and not r.auth_failures and not r.crashed:
        verdict = f"{result}: FAIL: no request completed (no token could be had)."
    else:
        verdict = (
            f"{result}: FAIL: {r.auth_failures} 401s reached the tasks, {r.crashed} tasks crashed."
        )
    lines += fit(verdict, width, "  ")
    return "\n".join(lines)


class ProgressLine:
    """One line rewritten in place with a carriage return, never wider than the terminal."""

    def __init__(self, stream: TextIO, columns: Callable[[], int] | None = None) -> None:
        self._stream = stream
        self._width = 0
        self._columns = columns or (lambda: shutil.get_terminal_size().columns)

    def __call__(self, progress: DemoProgress) -> None:
        # One column spare: a line that fills the last column wraps on some terminals.
        text = format_progress(progress, max(1, self._columns() - 1))
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
