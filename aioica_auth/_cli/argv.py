"""Keeping secrets off the command line: `check_argv` runs before argparse.

argparse's error messages echo values, so a secret-looking option or argument is refused here
first, in a line that does not repeat it, saying where the secret belongs instead. It reads the
options and commands the parser recorded (`Parser.options`, `Parser.commands`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .base import PROG, WORD, UsageError, shown
from .parser import ENV_HELP, Parser

__all__ = ["check_argv"]

_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")

_USE_A_KEY = "use an API key: --x-api-key-file PATH, or ICAV2_X_API_KEY in the environment"
# Words in an unknown option's name that make it a secret, and what to do instead; the first
# row that matches wins.
_SECRET_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (f"pass the key in a file or the environment: {_USE_A_KEY}", ("key",)),
    (f"passwords are not read from the command line: {_USE_A_KEY}", ("pass", "pwd")),
    (
        f"usernames and passwords are not read from the command line: {_USE_A_KEY}",
        ("user", "login", "email"),
    ),
    (
        "set ICAV2_ACCESS_TOKEN in the environment instead "
        f"(to decode a JWT, pipe it: ... | {PROG} decode -)",
        ("token", "jwt", "secret", "bearer", "cred", "auth", "session"),
    ),
)

# Positional arguments a command takes, and what to say about one too many ({command} is the
# command); a command missing here takes none.
_POSITIONALS: dict[str, tuple[int, str]] = {
    "decode": (1, "decode takes one JWT (or -); an extra argument was given (not shown)"),
}
_NO_POSITIONALS = (
    "{command} takes no positional arguments (the one given is not shown); "
    "credentials never come from the command line: " + ENV_HELP
)


def _secret_advice(option: str) -> str | None:
    """What to do instead of a secret-looking option, if it is one."""
    name = option.lstrip("-").lower().replace("-", "").replace("_", "")
    for advice, words in _SECRET_WORDS:
        if any(w in name for w in words):
            return advice
    return None


def _option_name(arg: str, known: Mapping[str, bool]) -> tuple[str, bool]:
    """The option of `arg` and whether its value is attached (`--x=1`, `-sHOST`)."""
    name, eq, _ = arg.partition("=")
    if not arg.startswith("--") and len(arg) > 2 and arg[:2] in known:
        return arg[:2], True
    return name, bool(eq)


def _check_option(arg: str, known: Mapping[str, bool], command: str | None) -> bool:
    """Refuse a secret-looking or unknown option; return whether its value is the next arg."""
    name, attached = _option_name(arg, known)
    if name in known:
        return command is not None and known[name] and not attached
    advice = _secret_advice(name)
    if advice is not None:
        msg = f"{name} is refused: secrets on the command line end up in shell history "
        msg += f"and ps; {advice}"
        raise UsageError(msg)
    where = PROG if command is None else f"{PROG} {command}"
    msg = f"unknown option {shown(name)!r} for {where}; see {where} --help"
    raise UsageError(msg)


def _check_command(arg: str, commands: Mapping[str, object]) -> str:
    """`arg` when it names a command; else refuse it, with a hint when it looks like a secret."""
    if arg in commands:
        return arg
    hint = ""
    if _JWT_SHAPE.fullmatch(arg):
        hint = f"; to decode a JWT, pipe it: ... | {PROG} decode -"
    elif not WORD.fullmatch(arg):
        hint = f"; credentials never come from the command line: {ENV_HELP}"
    msg = f"unknown command {shown(arg)!r}; choose from {', '.join(commands)}{hint}"
    raise UsageError(msg)


def _check_positional(command: str, count: int) -> None:
    """Refuse the `count`th positional argument of `command` when it takes fewer."""
    most, message = _POSITIONALS.get(command, (0, _NO_POSITIONALS))
    if count > most:
        raise UsageError(message.format(command=command))


def check_argv(argv: Sequence[str], parser: Parser) -> None:
    """Refuse secrets and unknown options before argparse, whose errors echo values.

    Raises:
        UsageError: a secret-looking option or argument, an unknown option or command.
    """
    command: str | None = None
    positionals = 0
    only_positional = False
    args = iter(argv)
    for arg in args:
        if arg == "--" and not only_positional:
            only_positional = True
        elif not only_positional and arg.startswith("-") and arg != "-":
            known = parser.options if command is None else parser.commands[command].options
            if _check_option(arg, known, command):
                next(args, None)  # its value
        elif command is None:
            command = _check_command(arg, parser.commands)
        else:
            positionals += 1
            _check_positional(command, positionals)
