"""The `aioica-auth` command line (also `python -m aioica_auth`): run a command, report once.

The CLI is split by concern: `base` (the name, the failures, `shown`, `warn`, the signals),
`parser` (the parser), `argv` (the check that keeps secrets off argv), `faults` (serve's
--faults), `_discovery` (credentials, shared with `TokenManager.from_environment`),
`commands` (token, whoami, details), `cache` (the token cache of token and whoami, a
`FileTokenStore`, and token's --force-refresh and --invalidate), `progress` (waiting within
--timeout, failing fast, saying on stderr what a wait waits for), `decode` (decode, offline),
`serve` and `demo/` (the local server and the demo, imported only when they run: importing
this module loads neither `aioica_auth.testing` nor `aiohttp.web`).

Credentials never come from the command line, where shell history and `ps` would keep them.
Exit codes: 0 success, 1 authentication or API failure (or a token not valid now, for
`decode`), 2 usage error, 130 interrupted (128 + the signal's number), 141 when the reader of
stdout went away (`... | head -1`: 128 + SIGPIPE, what the shell reports for a command that
SIGPIPE killed), quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .._errors import IcaError
from .argv import check_argv
from .base import PROG, Failure, UsageError
from .cache import process_started
from .commands import details_command, token_command, whoami_command
from .decode import decode_command, describe_validity, human_duration
from .parser import Parser, build_parser

__all__ = [
    "UsageError",
    "build_parser",
    "check_argv",
    "describe_validity",
    "human_duration",
    "main",
]


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .serve import serve_command

    return serve_command(**_options(args, "port", "lifetime", "latency", "clock_offset", "faults"))


def _demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .demo.command import demo_command

    names = ("tasks", "duration", "lifetime", "latency", "faults", "seed", "as_json")
    return demo_command(**_options(args, *names))


def _options(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The keywords of a command of the local server: its options (the parser names each as
    the command's keyword) and stdout."""
    return {name: getattr(args, name) for name in names} | {"out": sys.stdout}


_COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "token": token_command,
    "whoami": whoami_command,
    "decode": decode_command,
    "details": details_command,
    "serve": _serve,
    "demo": _demo,
}


def _fail(message: str, code: int, *, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _logging(debug: bool) -> Iterator[None]:
    logger = logging.getLogger("aioica_auth")
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        # Retried failures are logged at WARNING: the CLI reports one line at the end instead.
        handler.setLevel(logging.ERROR)
    old_level = logger.level
    if debug:
        logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _parse(args_list: list[str], parser: Parser) -> argparse.Namespace | int:
    """The parsed command line, or the exit code when there is no command to run."""
    try:
        check_argv(args_list, parser)
        args = parser.parse_args(args_list)
    except UsageError as exc:
        return _fail(str(exc), 2, debug=False)
    except SystemExit as exc:  # --help, --version, argparse's own errors
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        commands = ", ".join(_COMMANDS)
        msg = f"a command is required: one of {commands}; see {PROG} --help"
        return _fail(msg, 2, debug=False)
    return args


_CLOSED_PIPE = 128 + 13  # 128 + SIGPIPE (13 on every POSIX system): 141


def _closed_pipe() -> int:
    """The exit code when stdout's reader went away (`| head`), after silencing stdout.

    The recipe of Python's `signal` documentation (note on SIGPIPE): point stdout at devnull,
    so that the interpreter's last flush at exit does not fail again with "Exception ignored
    ... BrokenPipeError", and exit without a message, as a command killed by SIGPIPE does;
    the code is that command's, 128 + SIGPIPE (the docs' example exits 1, which `decode`
    already uses for "not valid now").
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capture it)
        return _CLOSED_PIPE
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
    return _CLOSED_PIPE


def _run(args: argparse.Namespace, *, debug: bool) -> int:
    """Run the command of `args`; return its exit code, reporting a failure in one line."""
    try:
        code = _COMMANDS[args.command](args, os.environ)
        sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's last flush
    except BrokenPipeError:
        raise  # stdout's reader went away: `main` exits quietly
    except UsageError as exc:
        return _fail(str(exc), 2, debug=debug)
    except (Failure, IcaError) as exc:
        return _fail(str(exc), 1, debug=debug)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, unless --debug
        hint = "" if debug else " (run with --debug for a traceback)"
        return _fail(f"unexpected {type(exc).__name__}: {exc}{hint}", 1, debug=debug)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run `aioica-auth` with `argv` (default `sys.argv[1:]`); return the exit code."""
    # When this command started (for `token --force-refresh`): the process's start when it
    # runs as a program, so that runs spawned at once count as at once however slowly each
    # loads; this call's, when called with arguments (in-process, from tests).
    started = process_started() if argv is None else time.time()
    try:
        parsed = _parse(list(sys.argv[1:] if argv is None else argv), build_parser())
        if isinstance(parsed, int):
            sys.stdout.flush()  # --help, --version into a closed pipe
            return parsed
        parsed.started = started
        debug = bool(parsed.debug)
        with _logging(debug):
            return _run(parsed, debug=debug)
    except BrokenPipeError:
        return _closed_pipe()
