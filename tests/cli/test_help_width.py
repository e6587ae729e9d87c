"""Every `--help` reads in an 80-column terminal: argparse wraps its own parts to COLUMNS, and
the hand-laid descriptions, examples and epilogs are wrapped under themselves (parser._Layout)."""

from __future__ import annotations

import pytest

from aioica_auth._cli import main
from aioica_auth._cli.parser import build_parser

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
