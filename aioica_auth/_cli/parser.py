"""The command line of `aioica-auth`: its parser, and the check that keeps secrets off argv.

`check_argv` runs before argparse, whose error messages echo values: a secret-looking option
or argument is refused in a line that does not repeat it. It reads the options each parser
recorded as they were added (`Parser.options`), not argparse's internals.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import textwrap
from collections.abc import Callable
from typing import Any, NoReturn

from .._version import __version__
from .._wire.console import CONSOLE_BASE_URL
from .._wire.ica import ICA_BASE_URL
from .base import PROG, shown
from .faults import FaultSpec, parse_faults

__all__ = ["CACHE_HELP", "ENV_HELP", "Parser", "build_parser"]

ENV_HELP = (
    "set ICAV2_X_API_KEY (an API key) or ICAV2_ACCESS_TOKEN (a JWT), pass --x-api-key-file "
    "PATH, or put a plaintext x-api-key in ~/.icav2/config.yaml"
)
CACHE_HELP = (
    "Cache: the token is kept in $XDG_CACHE_HOME/aioica_auth (default ~/.cache/aioica_auth) "
    "and reused by later runs while it is before its refresh point (min(20 min, half its "
    "lifetime) before expiry) and lasts --min-validity, so a loop of calls mints once. The "
    "files hold bearer tokens: 0600 files in a 0700 directory, private to you; a directory "
    "or file that another user owns or others can write is refused with one warning line, "
    "and the command goes on without the cache. --no-cache neither reads nor writes it. "
    "A JWT given as it is (ICAV2_ACCESS_TOKEN) and a console psToken are never cached."
)
STEER_HELP = (
    "token --force-refresh mints now and replaces the cached token (runs at once share one "
    "mint: one that finds a token another run published since it started prints that one); "
    "token --invalidate drops the cached token (only the one it read: a token another run "
    "just published stays), so a revoked token stops being handed out; it prints no token."
)
WAIT_HELP = (
    "Waiting: a refused connection, an unknown host or a TLS failure is tried 3 times at "
    "most, within 5 s, then reported; anything else (no answer, 5xx, 429) is retried until "
    "--timeout. A wait longer than a second is said on stderr (on a terminal, one line that "
    "is rewritten; -q: nothing but errors)."
)
_REGION = re.compile(r"[a-z]{2,4}[0-9]{1,2}")

# Laid out by hand within 78 columns; a longer line is one logical line that _Layout wraps.
EPILOG = f"""\
Credentials, first found wins (as the icav2 CLI finds them; never from the command line):
  --x-api-key-file PATH          an API key in a file (- for stdin)
  ICAV2_X_API_KEY                an API key
  ICAV2_ACCESS_TOKEN             a JWT (refreshed while ICA allows)
  ~/.icav2/config.yaml           a plaintext x-api-key (icav2 config set encrypts it: pass the \
key instead); then ~/.icav2/.session.<host>.yaml access-token
  ICA_API_KEY, ICA_USERNAME + ICA_PASSWORD, ICA_PS_TOKEN
                                 deprecated: still read, with a warning
API root: --base-url URL or -s/--server-url HOST, else ICAV2_BASE_URL,
  ICAV2_SERVER_URL (a host), server-url in ~/.icav2/config.yaml, else
  {ICA_BASE_URL}.
Console v1 (--console, details): ICAV2_X_API_KEY or ICA_ACCESS_TOKEN (a
  console JWT), then ~/.ica/; its root: --region NAME (aps2, use1, euc1,
  cac1, ...), ICA_CONSOLE_URL, ICA_SERVER_URL, server-url in
  ~/.ica/config.yaml, else {CONSOLE_BASE_URL}.
HTTPS_PROXY, HTTP_PROXY and NO_PROXY are honoured.

examples:
  {PROG} demo
      1000 tasks share short-lived tokens on a local server
  {PROG} demo --faults
      ... while the token endpoint answers 5xx and 429
  {PROG} serve --lifetime 60
      a local ICA-compatible server; prints test credentials
  {PROG} token
      print a fresh JWT (ICA v2; --console for the console v1)
  curl -H "$({PROG} token --header)" "$ICAV2_BASE_URL/api/projects"
      in a loop, one mint: token and whoami reuse a cached token (bearer tokens,
      in ~/.cache/aioica_auth: 0600 files, 0700 directory); --no-cache skips
      the cache
  {PROG} whoami
      tenant, user, e-mail and expiry of a fresh token
  {PROG} token | {PROG} decode -
      claims and expiry, offline; exit 1 once expired
  {PROG} details --region use1
      who the console says the credential speaks for

exit codes: 0 success, 1 authentication or API failure (or, for decode, a token not \
valid now), 2 usage error, 130 interrupted
"""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that records its options and commands, and never echoes a secret."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # option string -> whether it takes a value (-h and --help come with every parser)
        self.options: dict[str, bool] = {"-h": False, "--help": False}
        self.commands: dict[str, Parser] = {}

    def option(self, *names: str, into: Any = None, **kwargs: Any) -> None:
        """`add_argument` (on `into`, a group, if given), recording the option strings."""
        action = (into or self).add_argument(*names, **kwargs)
        self.options.update(dict.fromkeys(action.option_strings, action.nargs != 0))

    def values(self, *rows: tuple[str, Callable[[str], Any], Any, str]) -> None:
        """Options that take a value, one `(name, type, default, help)` row each."""
        for name, kind, default, help_ in rows:
            self.option(name, type=kind, default=default, help=help_)

    def flag(self, *names: str, help: str, into: Any = None, **kwargs: Any) -> None:
        """An option that takes no value (`store_true`), recorded as `option` records it."""
        self.option(*names, into=into, action="store_true", help=help, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse quotes offending values: never let a secret-looking one through.
        message = re.sub(r"'([^']*)'", lambda m: f"'{shown(m.group(1))}'", message)
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


# -- argument types --------------------------------------------------------------------------


def _number(minimum: float, *, strict: bool, integer: bool = False) -> Callable[[str], Any]:
    def convert(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            msg = f"expected {kind}, got {shown(text)!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if not math.isfinite(value) or (value <= minimum if strict else value < minimum):
            msg = f"must be {'greater than' if strict else 'at least'} {minimum:g}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return convert


_SECONDS = _number(0, strict=False)  # a wait or a margin: 0 or more
_POSITIVE = _number(0, strict=True)  # a lifetime, a duration, a timeout
_COUNT = _number(0, strict=True, integer=True)


def _port(text: str) -> int:
    """A TCP port to listen on: 0 (any free one) to 65535."""
    port = int(_number(0, strict=False, integer=True)(text))
    if port > 65535:
        msg = "must be a TCP port, 0 (a free one) to 65535"
        raise argparse.ArgumentTypeError(msg)
    return port


def _faults_arg(text: str) -> list[FaultSpec]:
    try:
        return parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _region(text: str) -> str:
    if not _REGION.fullmatch(text):
        msg = f"expected a console region such as aps2, use1, euc1 or cac1, got {shown(text)!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


# -- the parser ------------------------------------------------------------------------------

# Hand-laid text is never wider than this, however wide the terminal.
_MEASURE = 78
# Where a too-wide line goes on: a table row or an example under its second column (text
# after two or more spaces), if that is not too far right.
_COLUMN = re.compile(r" *\S.*?\S {2,}(?=\S)")


class _Layout(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as laid out by hand, each line wider than the terminal (or
    than 78 columns) wrapped under itself, so every --help reads in an 80-column terminal.

    argparse's own formatter fills them and loses the tables and examples; the raw one keeps
    them and overflows. A table row or example goes on under its second column, other lines
    under their own indent; words are never split.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        width = min(width, _MEASURE)
        return "".join(_wrap(indent + line, width) for line in text.splitlines(keepends=True))


def _wrap(line: str, width: int) -> str:
    body = line.rstrip("\n")
    if len(body) <= width:
        return line
    lead = len(body) - len(body.lstrip(" "))
    column = _COLUMN.match(body)
    hang = lead
    if column and column.end() <= width * 3 // 5:
        hang = column.end()
    wrapped = textwrap.fill(
        body,
        width,
        subsequent_indent=" " * hang,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return wrapped + line[len(body) :]


# Every parser's: the epilogs are laid out by hand, and no option may be abbreviated.
_LAYOUT: dict[str, Any] = {
    "formatter_class": _Layout,
    "allow_abbrev": False,
}
# Help lines too long to stand in their calls, or said twice.
_DEBUG = "DEBUG logging and tracebacks on stderr"
_QUIET = "say nothing on stderr while waiting (errors are still said)"
_STAYS_VALID = "exit 1 unless the token stays valid this long"
_FAULTS = "faults to inject, e.g. ica.create:503:3 (see below)"
_ICA_ROOT = (
    f"$ICAV2_BASE_URL, $ICAV2_SERVER_URL, server-url in ~/.icav2/config.yaml, else {ICA_BASE_URL}"
)
_CONSOLE_ROOT = (
    f"$ICA_CONSOLE_URL, $ICA_SERVER_URL, server-url in ~/.ica/config.yaml, else {CONSOLE_BASE_URL}"
)


def build_parser() -> Parser:
    """The argument parser of `aioica-auth`."""
    parser = Parser(
        prog=PROG,
        description="Tokens for Illumina ICA v2 and the platform console v1, from the shell; "
        "and a local demo of a thousand tasks sharing one TokenManager.",
        epilog=EPILOG,
        **_LAYOUT,
    )
    parser.option("--version", action="version", version=f"%(prog)s {__version__}")
    parser.flag("--debug", help=_DEBUG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(name: str, help_: str, epilog: str) -> Parser:
        p: Parser = sub.add_parser(name, help=help_, description=help_, epilog=epilog, **_LAYOUT)
        p.flag("--debug", help=_DEBUG, default=argparse.SUPPRESS)
        parser.commands[name] = p
        return p

    _token_command(command)
    _whoami_command(command)
    _decode_command(command)
    _details_command(command)
    _serve_command(command)
    _demo_command(command)
    return parser


_Command = Callable[[str, str, str], Parser]


def _token_command(command: _Command) -> None:
    p = command(
        "token",
        "Print a fresh JWT for the credential the environment or config files hold.",
        f"examples:\n  export ICAV2_X_API_KEY=...   # from a secrets manager, not typed in\n"
        f'  {PROG} token\n  {PROG} token --json\n  curl -H "$({PROG} token --header)" ...\n'
        f"  {PROG} token --min-validity 3600  # a token that lasts the next hour\n"
        f"  {PROG} token --x-api-key-file ~/.config/ica.key -s ica.illumina.com\n"
        f"  {PROG} token --console --region use1\n"
        f"  {PROG} token --no-cache  # neither read nor write the token cache\n"
        f"  {PROG} token --force-refresh\n      # a new token now, cached for the next runs\n"
        f"  {PROG} token --invalidate  # drop the cached token (revoked, say)\n\n"
        f"Credentials: {ENV_HELP}. Never pass one as an argument.\n\n{CACHE_HELP}\n"
        f"\n{STEER_HELP}\n\n{WAIT_HELP}",
    )
    out = p.add_mutually_exclusive_group()
    p.flag("--header", into=out, help="print 'Authorization: Bearer <jwt>'")
    p.flag("--json", into=out, help='print {"token", "expires_at", "expires_in"}')
    p.option(
        "--min-validity",
        metavar="SECONDS",
        type=_SECONDS,
        help="the token must stay valid this long (renewed first if needed; exit 1 if "
        "the server's tokens cannot last that long)",
    )
    cache = p.add_mutually_exclusive_group()
    _no_cache(p, into=cache)
    p.flag(
        "--force-refresh",
        into=cache,
        help="mint a new token now and cache it, even if the cached one is good "
        "(runs at once mint once)",
    )
    p.flag(
        "--invalidate",
        into=cache,
        help="drop the cached token (a revoked one, say) and print nothing; the next run mints",
    )
    p.flag("-q", "--quiet", help=_QUIET)
    _endpoint_options(p, console="flag")


def _whoami_command(command: _Command) -> None:
    p = command(
        "whoami",
        "Show who a fresh token speaks for: tenant, user, e-mail and expiry, from its claims.",
        f"examples:\n  {PROG} whoami\n  {PROG} whoami --json\n  {PROG} whoami --console\n\n"
        f"For the console's own view (workgroup, domain, ACLs) see `details`.\n\n{CACHE_HELP}"
        f"\n\n{WAIT_HELP}",
    )
    p.flag("--json", help="print the identity as JSON")
    _no_cache(p)
    p.flag("-q", "--quiet", help=_QUIET)
    _endpoint_options(p, console="flag")


def _decode_command(command: _Command) -> None:
    p = command(
        "decode",
        "Show a JWT's claims and times, offline (no signature check, no network).",
        f"examples:\n  {PROG} token | {PROG} decode\n  {PROG} decode - < token.txt\n"
        f"  {PROG} decode --quiet --min-validity 600 < token.txt &&\n"
        "      echo 'good for 10 min'\n\n"
        "Exit code 0 when the token is valid now (and for --min-validity seconds), 1 when it "
        "is expired, not yet valid, or not a JWT. Reading from stdin (- or no argument) keeps "
        "the JWT out of shell history; 'Bearer <jwt>' and 'Authorization: Bearer <jwt>' are "
        "accepted too.",
    )
    p.option("jwt", nargs="?", default="-", metavar="JWT", help="the JWT, or - for stdin")
    p.flag("--json", help="print claims and times as JSON")
    p.option("--min-validity", metavar="SECONDS", type=_SECONDS, default=0.0, help=_STAYS_VALID)
    p.flag("-q", "--quiet", help="print nothing: the exit code says it")


def _details_command(command: _Command) -> None:
    p = command(
        "details",
        "Print the console v1 token details (GET /v1/tokens/details) as JSON.",
        f"examples:\n  {PROG} details\n  {PROG} details --region use1\n"
        f"  ICA_CONSOLE_URL=https://euc1.platform.illumina.com {PROG} details\n\n"
        f"The console root defaults to {_CONSOLE_ROOT}.\n"
        "With an API key a console JWT is minted first; a JWT (ICA_ACCESS_TOKEN) or a psToken "
        "is used as it is.",
    )
    _endpoint_options(p, console="always")


def _no_cache(p: Parser, into: Any = None) -> None:
    help_ = "neither reuse nor store a cached token (the cache holds bearer tokens: see below)"
    p.flag("--no-cache", into=into, help=help_)


def _endpoint_options(p: Parser, *, console: str) -> None:
    """Where to ask and with what: --console, the API root, the key file, tenant, timeout."""
    if console == "flag":
        p.flag("--console", help="the console v1 (/v1/tokens); default ICA v2")
        root = f"ICA v2 default: {_ICA_ROOT}; console: {_CONSOLE_ROOT}"
    else:
        root = f"default: {_CONSOLE_ROOT}"
    where = p.add_mutually_exclusive_group()
    p.option("--base-url", into=where, metavar="URL", help=f"the API root ({root})")
    p.option(
        "-s",
        "--server-url",
        into=where,
        metavar="HOST",
        help="the server as the icav2 CLI names it: a host such as ica.illumina.com "
        "(https://HOST/ica/rest; on the console https://HOST)",
    )
    p.option(
        "--region",
        into=where,
        type=_region,
        metavar="NAME",
        help="console region: aps2, use1, euc1, cac1, ... (https://NAME.platform.illumina.com)",
    )
    p.option(
        "--x-api-key-file",
        metavar="PATH",
        help="read the API key from this file (- for stdin); wins over the environment",
    )
    p.option(
        "--tenant",
        help="tenant to mint for, when the user has several (the domain, on the console)",
    )
    p.option(
        "--timeout",
        type=_POSITIVE,
        default=30.0,
        help="seconds to wait for a token, retrying what may pass (default 30); "
        "a refused connection, unknown host or TLS failure ends within 5 s",
    )


def _serve_command(command: _Command) -> None:
    p = command(
        "serve",
        "Run the local ICA-compatible token server on 127.0.0.1 until Ctrl-C.",
        f"examples:\n  {PROG} serve --port 8080 --lifetime 60\n"
        f"  {PROG} serve --faults ica.create:503:3,ica.create:429\n\n"
        "--faults: comma-separated ENDPOINT:FAULT[:TIMES]. ENDPOINT: ica.create, "
        "ica.refresh, console.create, console.details, console.refresh, console.revoke, "
        "resource, or * (every token endpoint). FAULT: an HTTP status (429 comes with "
        "Retry-After: 1), or drop, malformed, html, empty, hang. TIMES: how many requests "
        "(default 1), or * for all.\n\n"
        "The printed API key and password are throwaway credentials of this local server. "
        "Ctrl-C exits 130 (SIGTERM 143), as the other commands do.",
    )
    p.values(
        ("--port", _port, 0, "port to listen on (default: a free one)"),
        ("--lifetime", _POSITIVE, 3600.0, "token lifetime in seconds (default 3600)"),
        ("--latency", _SECONDS, 0.0, "seconds each token endpoint takes to answer (default 0)"),
        ("--clock-offset", float, 0.0, "seconds the server clock runs ahead (negative: behind)"),
    )
    # every --faults adds its items to one list
    p.option("--faults", type=_faults_arg, action="extend", default=[], help=_FAULTS)


def _demo_command(command: _Command) -> None:
    p = command(
        "demo",
        "Many tasks share one TokenManager through its aiohttp middleware, against a local "
        "server with short-lived tokens; prints a summary.",
        f"examples:\n  {PROG} demo\n  {PROG} demo --faults\n"
        f"  {PROG} demo --tasks 5000 --duration 30 --lifetime 2\n  {PROG} demo --json\n\n"
        "Exit code 0 when requests went through, no 401 reached a task and no task crashed, "
        "else 1; Ctrl-C prints the summary so far and exits 130.",
    )
    p.values(
        ("--tasks", _COUNT, 1000, "concurrent tasks (default 1000)"),
        ("--duration", _POSITIVE, 15.0, "seconds to run (default 15)"),
        ("--lifetime", _POSITIVE, 4.0, "token lifetime in seconds (default 4)"),
        ("--latency", _SECONDS, 0.05, "token endpoint latency in seconds (default 0.05)"),
    )
    p.flag(
        "--faults",
        help="inject random 5xx (30%%) and 429 (10%%, Retry-After: 1) answers "
        "on the token endpoint",
    )
    p.option("--seed", type=int, help="seed of the random faults, for a reproducible run")
    p.flag("--json", dest="as_json", help="print the summary as JSON")
