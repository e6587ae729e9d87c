"""Every `--help` reads in an 80-column terminal: argparse wraps its own parts to COLUMNS, and
the hand-laid descriptions, examples and epilogs are wrapped under themselves (parser._Layout)."""

from __future__ import annotations

from typing import Any

import pytest

from aioica_auth._cli import main
from aioica_auth._cli.demo.display import format_summary
from aioica_auth._cli.demo.result import TokenUse
from aioica_auth._cli.parser import build_parser

from .test_cli import demo_result

COMMANDS = sorted(build_parser().commands)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_fits_80_columns(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`aioica-auth [COMMAND] --help` with COLUMNS=80 has no line wider than 80."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main([command, "--help"] if command else ["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    wide = [line for line in out.splitlines() if len(line) > 80]
    assert not wide, "\n".join(wide)


def test_every_command_is_checked() -> None:
    """The commands above are the parser's own, so a new one is checked too."""
    assert COMMANDS == ["decode", "demo", "details", "serve", "token", "whoami"]


def test_a_wide_terminal_keeps_the_hand_layout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 200 columns the hand-laid text still stops at 78 columns, its table intact."""
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--help"]) == 0
    epilog = capsys.readouterr().out.partition("Credentials, first found wins")[2]
    assert max(map(len, epilog.splitlines())) <= 78
    assert "  ICAV2_X_API_KEY                an API key\n" in epilog


@pytest.mark.parametrize("interrupted", [False, True])
def test_the_demo_summary_and_timeline_fit_80_columns(interrupted: bool) -> None:
    """Notes too long for their row go under it; timeline spans and verdicts wrap."""
    uses = tuple(
        TokenUse(f"{i:08x}", "minted", i * 3.0, 4.0, 1_234_567, i * 3.0 + 0.5, i * 3.0 + 3.9)
        for i in range(30)
    )
    result = demo_result(auth_failures=3, timeline=uses, interrupted=interrupted)
    text = format_summary(result, 80)
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, "\n".join(wide)
    assert "they wait for the first mint" in text  # nothing cut, only wrapped
    assert "(answered t+0.50s..t+3.90s)" in text
    assert format_summary(result) == format_summary(result, None)  # no width: as it was


def test_the_demo_fits_80_columns_when_run(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["demo", "--tasks", "20", "--duration", "1", "--lifetime", "2"]) == 0
    out = capsys.readouterr().out
    assert "Result: PASS" in out
    wide = [line for line in out.splitlines() if len(line) > 80]
    assert not wide, "\n".join(wide)
