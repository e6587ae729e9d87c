"""The `aioica-auth` command line (also `python -m aioica_auth`).

Credentials come from the environment only, never from the command line, where shell
history and `ps` would keep them. Exit codes: 0 success, 1 authentication or API failure,
2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TextIO

from ._cli_demo import demo_command
from ._cli_serve import PROG, FaultSpec, ServeError, parse_faults, serve_command
from ._console import CONSOLE_BASE_URL, ConsoleTokenApi
from ._credentials import ApiKey, BasicAuth, Jwt, PsToken
from ._errors import IcaError, InvalidResponseError
from ._http import check_base_url
from ._ica import ICA_BASE_URL
from ._manager import TokenManager
from ._models import converter
from ._token import Token
from ._version import __version__

__all__ = [
    "UsageError",
    "build_parser",
    "check_argv",
    "describe_validity",
    "human_duration",
    "main",
]

_ENV_HELP = "set ICA_API_KEY, or ICA_USERNAME and ICA_PASSWORD, or ICA_PS_TOKEN"
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
_WORD = re.compile(r"[a-z][a-z0-9-]{0,19}")

EPILOG = f"""\
Credentials come from the environment only, never from the command line (shell history, ps):
  ICA_API_KEY                    an API key, or
  ICA_USERNAME + ICA_PASSWORD    username and password (not for single sign-on accounts), or
  ICA_PS_TOKEN                   a psToken
  ICA_BASE_URL                   optional: the ICA v2 base URL ({ICA_BASE_URL})
  ICA_CONSOLE_URL                optional: the console v1 base URL ({CONSOLE_BASE_URL})

examples:
  {PROG} demo                  1000 tasks share short-lived tokens on a local server
  {PROG} demo --faults         ... while the token endpoint answers 5xx and 429
  {PROG} serve --lifetime 60   a local ICA-compatible server; prints test credentials
  {PROG} token                 print a fresh JWT (ICA v2; --console for the console v1)
  curl -H "$({PROG} token --header)" "$ICA_BASE_URL/api/projects"
  {PROG} token | {PROG} decode -    claims and expiry, offline
  {PROG} details               who the console says the credential speaks for

exit codes: 0 success, 1 authentication or API failure, 2 usage error, 130 interrupted
"""


class UsageError(Exception):
    """A mistake on the command line or in the environment: exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse quotes offending values: never let a secret-looking one through.
        message = re.sub(r"'([^']*)'", lambda m: f"'{_shown(m.group(1))}'", message)
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def _shown(value: str) -> str:
    return value if _WORD.fullmatch(value) or len(value) < 12 else "<not shown>"


# -- pure helpers ----------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """A duration for people: `0.4 s`, `10 s`, `5 min 3 s`, `23 h 59 min`, `2 d 3 h`.

    Two units at most, truncated (never rounded up); the sign is ignored.
    """
    seconds = abs(seconds)
    if seconds < 1:
        return f"{math.floor(seconds * 10) / 10:.1f} s"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    for big, big_unit, small, small_unit in (
        (days, "d", hours, "h"),
        (hours, "h", minutes, "min"),
        (minutes, "min", secs, "s"),
    ):
        if big:
            return f"{big} {big_unit}" + (f" {small} {small_unit}" if small else "")
    return f"{secs} s"


def describe_validity(token: Token, now: dt.datetime) -> str:
    """`expires in 23 h 59 min`, `expired 5 min ago`, `not valid for another 10 s; ...`."""
    parts = []
    if token.not_before is not None and token.not_before > now:
        wait = (token.not_before - now).total_seconds()
        parts.append(f"not valid for another {human_duration(wait)}")
    if token.expires_at is None:
        parts.append("never expires (no exp claim)")
    else:
        left = (token.expires_at - now).total_seconds()
        if left > 0:
            parts.append(f"expires in {human_duration(left)}")
        else:
            parts.append(f"expired {human_duration(left)} ago")
    return "; ".join(parts)


# -- argument types --------------------------------------------------------------------------


def _number(minimum: float, *, strict: bool, integer: bool = False) -> Callable[[str], Any]:
    def convert(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            msg = f"expected {kind}, got {_shown(text)!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            msg = f"must be {'greater than' if strict else 'at least'} {minimum:g}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return convert


def _faults_arg(text: str) -> list[FaultSpec]:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `aioica-auth`."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Tokens for Illumina ICA v2 and the platform console v1, from the shell; "
        "and a local demo of a thousand tasks sharing one TokenManager.",
        epilog=EPILOG,
        formatter_class=fmt,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="DEBUG logging and tracebacks on stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_: str, epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=epilog,
            formatter_class=fmt,
            allow_abbrev=False,
        )
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="DEBUG logging and tracebacks on stderr",
        )
        return p

    p = command(
        "token",
        "Print a fresh JWT minted from the credential in the environment.",
        f"examples:\n  export ICA_API_KEY=...   # from a secrets manager, not typed in\n"
        f'  {PROG} token\n  {PROG} token --json\n  curl -H "$({PROG} token --header)" ...\n'
        f"  {PROG} token --console --base-url https://use1.platform.illumina.com\n\n"
        f"Credentials: {_ENV_HELP}. Never pass one as an argument.",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--header", action="store_true", help="print 'Authorization: Bearer <jwt>'")
    out.add_argument(
        "--json", action="store_true", help='print {"token", "expires_at", "expires_in"}'
    )
    _add_endpoint_options(p, console_flag=True)

    p = command(
        "decode",
        "Show a JWT's claims and expiry, offline (no signature check, no network).",
        f"examples:\n  {PROG} token | {PROG} decode\n  {PROG} decode - < token.txt\n\n"
        "Reading from stdin (- or no argument) keeps the JWT out of shell history;\n"
        "'Bearer <jwt>' and 'Authorization: Bearer <jwt>' are accepted too.",
    )
    p.add_argument("jwt", nargs="?", default="-", metavar="JWT", help="the JWT, or - for stdin")
    p.add_argument("--json", action="store_true", help="print claims and times as JSON")

    p = command(
        "details",
        "Print the console v1 token details (GET /v1/tokens/details) as JSON.",
        f"examples:\n  {PROG} details\n  ICA_CONSOLE_URL=https://use1.platform.illumina.com "
        f"{PROG} details\n\nWith an API key or username and password, a console JWT is minted "
        "first;\na psToken (ICA_PS_TOKEN) is used as it is.",
    )
    _add_endpoint_options(p, console_flag=False)

    p = command(
        "serve",
        "Run the local ICA-compatible token server on 127.0.0.1 until Ctrl-C.",
        f"examples:\n  {PROG} serve --port 8080 --lifetime 60\n"
        f"  {PROG} serve --faults ica.create:503:3,ica.create:429\n\n"
        "--faults: comma-separated ENDPOINT:FAULT[:TIMES]. ENDPOINT: ica.create,\n"
        "ica.refresh, console.create, console.details, console.refresh, console.revoke,\n"
        "resource, or * (every token endpoint). FAULT: an HTTP status (429 comes with\n"
        "Retry-After: 1), or drop, malformed, html, empty, hang. TIMES: how many requests\n"
        "(default 1), or * for all.\n\n"
        "The printed API key and password are throwaway credentials of this local server.",
    )
    p.add_argument("--port", type=_number(0, strict=False, integer=True), default=0,
                   help="port to listen on (default: a free one)")  # fmt: skip
    p.add_argument("--lifetime", type=_number(0, strict=True), default=3600.0,
                   help="token lifetime in seconds (default 3600)")  # fmt: skip
    p.add_argument("--latency", type=_number(0, strict=False), default=0.0,
                   help="seconds each token endpoint takes to answer (default 0)")  # fmt: skip
    p.add_argument("--clock-offset", type=float, default=0.0,
                   help="seconds the server clock runs ahead (negative: behind)")  # fmt: skip
    p.add_argument("--faults", type=_faults_arg, action="append", default=[],
                   help="faults to inject, e.g. ica.create:503:3 (see below)")  # fmt: skip

    p = command(
        "demo",
        "Many tasks share one TokenManager through its aiohttp middleware, against a local "
        "server with short-lived tokens; prints a summary.",
        f"examples:\n  {PROG} demo\n  {PROG} demo --faults\n"
        f"  {PROG} demo --tasks 5000 --duration 30 --lifetime 2\n  {PROG} demo --json\n\n"
        "Exit code 0 when requests went through, no 401 reached a task and no task crashed,\n"
        "else 1; Ctrl-C prints the summary so far and exits 130.",
    )
    p.add_argument("--tasks", type=_number(0, strict=True, integer=True), default=1000,
                   help="concurrent tasks (default 1000)")  # fmt: skip
    p.add_argument("--duration", type=_number(0, strict=True), default=15.0,
                   help="seconds to run (default 15)")  # fmt: skip
    p.add_argument("--lifetime", type=_number(0, strict=True), default=4.0,
                   help="token lifetime in seconds (default 4)")  # fmt: skip
    p.add_argument("--latency", type=_number(0, strict=False), default=0.05,
                   help="token endpoint latency in seconds (default 0.05)")  # fmt: skip
    p.add_argument("--faults", action="store_true",
                   help="inject random 5xx (30%%) and 429 (10%%, Retry-After: 1) answers "
                   "on the token endpoint")  # fmt: skip
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the random faults, for a reproducible run")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _add_endpoint_options(p: argparse.ArgumentParser, *, console_flag: bool) -> None:
    if console_flag:
        p.add_argument(
            "--console", action="store_true", help="the console v1 (/v1/tokens); default ICA v2"
        )
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="API root (default $ICA_BASE_URL, or $ICA_CONSOLE_URL with the console, "
        "or the Illumina hosts)",
    )
    p.add_argument(
        "--tenant",
        help="tenant to mint for, when the user has several (the domain, on the console)",
    )
    p.add_argument("--timeout", type=_number(0, strict=True), default=30.0,
                   help="seconds to keep retrying transient failures (default 30)")  # fmt: skip


# -- refusing secrets on the command line ----------------------------------------------------


# Words in an option's name that make it a secret, and the variable to set instead; the first
# row that matches wins.
_SECRET_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ICA_API_KEY", ("key",)),
    ("ICA_PASSWORD", ("pass", "pwd")),
    ("ICA_USERNAME", ("user", "login", "email")),
    ("ICA_PS_TOKEN", ("token", "jwt", "secret", "bearer", "cred", "auth", "session")),
)
_SECRET_HINTS = {"ICA_PS_TOKEN": f" (to decode a JWT, pipe it: ... | {PROG} decode -)"}

# Positional arguments a command takes, and what to say about one too many ({command} is the
# command); a command missing here takes none.
_POSITIONALS: dict[str, tuple[int, str]] = {
    "decode": (1, "decode takes one JWT (or -); an extra argument was given (not shown)"),
}
_NO_POSITIONALS = (
    "{command} takes no positional arguments (the one given is not shown); "
    "credentials come from the environment only: " + _ENV_HELP
)


def _secret_env(option: str) -> str | None:
    """The environment variable to use instead of a secret-looking option, if it is one."""
    name = option.lstrip("-").split("=", 1)[0].lower().replace("-", "").replace("_", "")
    for env, words in _SECRET_WORDS:
        if any(w in name for w in words):
            return env
    return None


def _takes_value(parser: argparse.ArgumentParser) -> dict[str, bool]:
    """Each option string of `parser`: whether it takes a value."""
    return {opt: a.nargs != 0 for a in parser._actions for opt in a.option_strings}


def _command_options(parser: argparse.ArgumentParser) -> dict[str, dict[str, bool]]:
    """Each command of `parser`, in order: its options, as `_takes_value` gives them."""
    commands: dict[str, dict[str, bool]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                commands[name] = _takes_value(subparser)
    return commands


def _check_option(arg: str, known: Mapping[str, bool], command: str | None) -> bool:
    """Refuse a secret-looking or unknown option; return whether its value is the next arg."""
    name, eq, _ = arg.partition("=")
    env = _secret_env(name)
    if env is not None:
        msg = (
            f"{name} is refused: secrets on the command line end up in shell history "
            f"and ps; set {env} in the environment instead{_SECRET_HINTS.get(env, '')}"
        )
        raise UsageError(msg)
    if name not in known:
        where = PROG if command is None else f"{PROG} {command}"
        msg = f"unknown option {_shown(name)!r} for {where}; see {where} --help"
        raise UsageError(msg)
    return command is not None and known[name] and not eq


def _check_command(arg: str, commands: Mapping[str, object]) -> str:
    """`arg` when it names a command; else refuse it, with a hint when it looks like a secret."""
    if arg in commands:
        return arg
    hint = ""
    if _JWT_SHAPE.fullmatch(arg):
        hint = f"; to decode a JWT, pipe it: ... | {PROG} decode -"
    elif not _WORD.fullmatch(arg):
        hint = f"; credentials come from the environment: {_ENV_HELP}"
    msg = f"unknown command {_shown(arg)!r}; choose from {', '.join(commands)}{hint}"
    raise UsageError(msg)


def _check_positional(command: str, count: int) -> None:
    """Refuse the `count`th positional argument of `command` when it takes fewer."""
    most, message = _POSITIONALS.get(command, (0, _NO_POSITIONALS))
    if count > most:
        raise UsageError(message.format(command=command))


def check_argv(argv: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """Refuse secrets and unknown options before argparse, whose errors echo values.

    Raises:
        UsageError: a secret-looking option or argument, an unknown option or command.
    """
    commands = _command_options(parser)
    top = _takes_value(parser)
    command: str | None = None
    positionals = 0
    only_positional = False
    args = iter(argv)
    for arg in args:
        if arg == "--" and not only_positional:
            only_positional = True
        elif not only_positional and arg.startswith("-") and arg != "-":
            known = top if command is None else commands[command]
            if _check_option(arg, known, command):
                next(args, None)  # its value
        elif command is None:
            command = _check_command(arg, commands)
        else:
            positionals += 1
            _check_positional(command, positionals)


# -- credentials -----------------------------------------------------------------------------


def credential_from_env(env: Mapping[str, str]) -> ApiKey | BasicAuth | PsToken:
    """The one credential the environment holds.

    Raises:
        UsageError: none, or more than one kind, or half of a username and password.
    """
    key = env.get("ICA_API_KEY") or None
    user = env.get("ICA_USERNAME") or None
    password = env.get("ICA_PASSWORD") or None
    ps = env.get("ICA_PS_TOKEN") or None
    present = [
        name
        for name, value in (("ICA_API_KEY", key), ("ICA_USERNAME", user), ("ICA_PS_TOKEN", ps))
        if value is not None
    ]
    if password is not None and user is None:
        present.append("ICA_PASSWORD")
    if len(present) > 1:
        both = "both" if len(present) == 2 else "all"
        msg = f"{' and '.join(present)} are {both} set: keep one credential in the environment"
        raise UsageError(msg)
    try:
        if key is not None:
            return ApiKey(key)
        if user is not None:
            if password is None:
                msg = "ICA_USERNAME is set but ICA_PASSWORD is not"
                raise UsageError(msg)
            return BasicAuth(user, password)
        if ps is not None:
            return PsToken(ps)
    except ValueError as exc:  # whitespace or a control character; the message has no secret
        raise UsageError(str(exc)) from None
    if password is not None:
        msg = "ICA_PASSWORD is set but ICA_USERNAME is not"
        raise UsageError(msg)
    msg = f"no credentials in the environment: {_ENV_HELP}"
    raise UsageError(msg)


def _base_url(args: argparse.Namespace, env: Mapping[str, str], *, console: bool) -> str:
    if args.base_url:
        url: str = args.base_url
    elif console:
        url = env.get("ICA_CONSOLE_URL") or CONSOLE_BASE_URL
    else:
        url = env.get("ICA_BASE_URL") or ICA_BASE_URL
    try:
        check_base_url(url, name="the base URL")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return url


# -- commands --------------------------------------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _cmd_token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    console: bool = args.console
    credential = credential_from_env(env)
    base_url = _base_url(args, env, console=console)
    if args.tenant is not None and not args.tenant.strip():
        raise UsageError("--tenant must not be empty")

    async def fetch() -> Token:
        if console:
            manager = TokenManager.for_console(
                credential,
                base_url=base_url,
                domain=args.tenant,
                acquire_timeout=args.timeout,
                request_timeout=min(args.timeout, 30.0),
            )
        else:
            manager = TokenManager.for_ica(
                credential,
                base_url=base_url,
                tenant=args.tenant,
                acquire_timeout=args.timeout,
                request_timeout=min(args.timeout, 30.0),
            )
        async with manager:
            return await manager.token()

    token = asyncio.run(fetch())
    if args.header:
        print(f"Authorization: {token.authorization}")
    elif args.json:
        now = dt.datetime.now(dt.UTC)
        left = None if token.expires_at is None else (token.expires_at - now).total_seconds()
        print(
            json.dumps(
                {
                    "token": token.value,
                    "expires_at": _iso(token.expires_at),
                    "expires_in": None if left is None else max(0, int(left)),
                }
            )
        )
    else:
        print(token.value)
    return 0


def _read_jwt(arg: str, stdin: TextIO) -> str:
    if arg == "-":
        if stdin.isatty():
            print("reading a JWT from stdin (paste it, then Ctrl-D)", file=sys.stderr)
        text = stdin.read()
    else:
        text = arg
    text = text.strip()
    if text.lower().startswith("authorization:"):
        text = text.split(":", 1)[1].strip()
    if text.lower().startswith("bearer "):
        text = text[7:].strip()
    if not text:
        raise UsageError("nothing to decode: give a JWT on stdin or as the argument")
    return text


def _cmd_decode(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    text = _read_jwt(args.jwt, sys.stdin)
    try:
        token = Token.from_jwt(text)
    except InvalidResponseError as exc:
        raise _Failure(f"not a JWT: {exc.reason}") from None
    except (OverflowError, ValueError) as exc:  # a time claim too large for a float
        raise _Failure(f"not a usable JWT ({type(exc).__name__})") from None
    now = dt.datetime.now(dt.UTC)
    status = describe_validity(token, now)
    if args.json:
        left = None if token.expires_at is None else (token.expires_at - now).total_seconds()
        data = {
            "claims": dict(token.claims),
            "issued_at": _iso(token.issued_at),
            "not_before": _iso(token.not_before),
            "expires_at": _iso(token.expires_at),
            "expires_in": None if left is None else int(left),
            "fingerprint": token.fingerprint,
            "status": status,
        }
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(json.dumps(dict(token.claims), indent=2, default=str))
    for label, when in (
        ("issued at", token.issued_at),
        ("not before", token.not_before),
        ("expires at", token.expires_at),
    ):
        if when is not None:
            delta = (when - now).total_seconds()
            rel = f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(delta)} ago"
            print(f"{label:<11} {_iso(when)}  ({rel})")
    print(f"{'fingerprint':<11} {token.fingerprint}")
    print(status)
    return 0


def _cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return serve_command(
        port=args.port,
        lifetime=args.lifetime,
        latency=args.latency,
        clock_offset=args.clock_offset,
        faults=[spec for group in args.faults for spec in group],
        out=sys.stdout,
    )


def _cmd_demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return demo_command(
        tasks=args.tasks,
        duration=args.duration,
        lifetime=args.lifetime,
        latency=args.latency,
        faults=args.faults,
        seed=args.seed,
        as_json=args.json,
        out=sys.stdout,
    )


def _cmd_details(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    credential = credential_from_env(env)
    base_url = _base_url(args, env, console=True)

    async def fetch() -> Any:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            api = ConsoleTokenApi(session, base_url, timeout=min(args.timeout, 30.0))
            if isinstance(credential, PsToken):
                return await api.get_token_details(credential)
            async with TokenManager.for_console(
                credential,
                base_url=base_url,
                session=session,
                domain=args.tenant,
                acquire_timeout=args.timeout,
                request_timeout=min(args.timeout, 30.0),
            ) as manager:
                token = await manager.token()
            return await api.get_token_details(Jwt(token.value))

    details = asyncio.run(fetch())
    print(json.dumps(converter.unstructure(details), indent=2))
    return 0


class _Failure(Exception):
    """An authentication, API or environment failure: exit code 1."""


_COMMANDS: dict[str, Callable[[argparse.Namespace, Mapping[str, str]], int]] = {
    "token": _cmd_token,
    "decode": _cmd_decode,
    "details": _cmd_details,
    "serve": _cmd_serve,
    "demo": _cmd_demo,
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


def _parse(args_list: list[str], parser: argparse.ArgumentParser) -> argparse.Namespace | int:
    """The parsed command line, or the exit code when there is no command to run."""
    try:
        check_argv(args_list, parser)
        args = parser.parse_args(args_list)
    except UsageError as exc:
        return _fail(str(exc), 2, debug=False)
    except SystemExit as exc:  # --help, --version, argparse's own errors
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args


def _run(args: argparse.Namespace, *, debug: bool) -> int:
    """Run the command of `args`; return its exit code, reporting a failure in one line."""
    try:
        return _COMMANDS[args.command](args, os.environ)
    except UsageError as exc:
        return _fail(str(exc), 2, debug=debug)
    except (_Failure, ServeError, IcaError) as exc:
        return _fail(str(exc), 1, debug=debug)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, unless --debug
        hint = "" if debug else " (run with --debug for a traceback)"
        return _fail(f"unexpected {type(exc).__name__}: {exc}{hint}", 1, debug=debug)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `aioica-auth` with `argv` (default `sys.argv[1:]`); return the exit code."""
    parsed = _parse(list(sys.argv[1:] if argv is None else argv), build_parser())
    if isinstance(parsed, int):
        return parsed
    debug = bool(parsed.debug)
    with _logging(debug):
        return _run(parsed, debug=debug)
