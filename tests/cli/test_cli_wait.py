"""Failing fast, and never in silence (issue 19, item 7): `aioica-auth token` against a server
that is not there, in subprocesses over loopback, timed; and `_cli.progress` in-process."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from aioica_auth import TransportError
from aioica_auth._cli.base import Failure
from aioica_auth._cli.progress import FAST_ATTEMPTS, Watch, within_timeout
from aioica_auth._errors import ServerError, TokenUnavailableError
from aioica_auth._events import Event, fields
from aioica_auth.testing import LocalIcaServer

from ..support import find_secret, free_port, run_cli, server_tls

pytestmark = pytest.mark.timeout(120)

KEY = "test-apikey-0badc0de"  # secret-shaped: find_secret sees it anywhere it leaks
FAST_BOUND = 8.0  # seconds, for what must end within 5 s (a loaded 2-core machine: room)
# The timed runs, and test_cli_steer's storms of runs, on one xdist worker: one after another.
TIMED = pytest.mark.xdist_group("cli_timing")
_DROPPED = ("ICA", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "XDG_CACHE_HOME", "HOME")
ERROR = "aioica-auth: error: "


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A child environment with no credential or proxy of the developer's, a fresh HOME and
    cache, and a (wrong, secret-shaped) API key."""
    home = tmp_path / "home"
    home.mkdir()
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith(_DROPPED)}
    return kept | {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "ICAV2_X_API_KEY": KEY,
    }


@pytest.fixture
async def plain_server() -> AsyncIterator[LocalIcaServer]:
    """A local ICA server speaking plain HTTP."""
    async with LocalIcaServer() as srv:
        yield srv


@pytest.fixture
async def tls_server(self_signed: tuple[Path, Path]) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTPS server with a self-signed certificate this host does not trust:
    its URL, and the paths of the requests that reached it."""
    reached: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        reached.append(request.path)
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls(self_signed)).start()
    yield f"https://127.0.0.1:{runner.addresses[0][1]}", reached
    await runner.cleanup()


async def timed(*args: str, env: dict[str, str], within: float = 60) -> tuple[float, int, str]:
    """(seconds, exit status, stderr) of `aioica-auth ARGS`; stdout must stay empty."""
    start = time.monotonic()
    rc, out, err = await run_cli(*args, env=env, within=within)
    seconds = time.monotonic() - start
    assert out == ""
    assert find_secret(err, [KEY]) is None, err
    print(f"{args[-1]}: {seconds:.2f} s")  # the figure the report quotes (pytest -s)
    return seconds, rc, err


def error_line(err: str) -> str:
    """The last stderr line, an error; every line before it a status line of ours."""
    lines = err.splitlines()
    assert lines, err
    assert lines[-1].startswith(ERROR), err
    for line in lines[:-1]:
        assert line.startswith("aioica-auth: "), err
        assert ERROR not in line, err
    return lines[-1]


def check_fast(seconds: float, rc: int, err: str, cause: str) -> None:
    """Ended within the bound, exit 1, the cause named, with the attempts and seconds."""
    assert rc == 1, err
    assert seconds < FAST_BOUND, (seconds, err)
    line = error_line(err)
    assert cause in line, line
    assert re.search(r"gave up after [1-3] attempts? in [0-5]\.\d s\)$", line), line
    assert "acquire_timeout" not in err
    for status in err.splitlines()[:-1]:  # "token endpoint: ...; retrying (2/3)"
        assert re.fullmatch(rf"aioica-auth: token endpoint: .+; retrying \([23]/{FAST_ATTEMPTS}\)",
                            status), status  # fmt: skip


@pytest.mark.slow
@TIMED
async def test_refused_ends_fast(env: dict[str, str]) -> None:
    """A closed port on 127.0.0.1: within 5 s, the refused connection named."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/ica/rest"
    check_fast(*await timed("token", "--base-url", url, env=env),
               f"connection refused by 127.0.0.1:{port}")  # fmt: skip


@pytest.mark.slow
@TIMED
async def test_unknown_host_ends_fast(env: dict[str, str]) -> None:
    """A name that does not resolve (.invalid: RFC 6761): within 5 s, the host named."""
    url = "https://ica.aioica-auth-test.invalid/ica/rest"
    check_fast(*await timed("token", "--base-url", url, env=env),
               "cannot resolve host ica.aioica-auth-test.invalid")  # fmt: skip


@pytest.mark.slow
@TIMED
async def test_tls_to_plain_http_ends_fast(
    env: dict[str, str], plain_server: LocalIcaServer
) -> None:
    """https:// to a server speaking plain HTTP: within 5 s, the TLS handshake named."""
    url = plain_server.ica_base_url.replace("http://", "https://")
    check_fast(*await timed("token", "--base-url", url, env=env), "TLS handshake with 127.0.0.1")
    assert plain_server.counts["ica.create"] == 0


@pytest.mark.slow
@TIMED
async def test_tls_untrusted_certificate_ends_fast(
    env: dict[str, str], tls_server: tuple[str, list[str]]
) -> None:
    """A self-signed certificate: within 5 s, the failed verification named."""
    url, reached = tls_server
    check_fast(*await timed("token", "--base-url", f"{url}/ica/rest", env=env),
               "TLS certificate verify failed for 127.0.0.1")  # fmt: skip
    assert reached == []


@pytest.mark.slow
@TIMED
async def test_hung_server_ends_at_timeout(env: dict[str, str], hanging: str) -> None:
    """A server that accepts and never answers: the run ends at --timeout (not before), says
    the failed attempt, and the error names --timeout and the seconds waited."""
    seconds, rc, err = await timed("token", "--base-url", f"{hanging}/ica/rest",
                                   "--timeout", "3", env=env)  # fmt: skip
    assert rc == 1, err
    assert 3.0 <= seconds < 3.0 + 3.0, (seconds, err)
    lines = err.splitlines()
    # Not a terminal: the wait itself is said after 5 s, a failure after 1 s.
    assert lines[0] == (
        "aioica-auth: token endpoint: timed out after 2.4 s; retrying (attempt 2, --timeout 3 s)"
    )
    line = error_line(err)
    assert re.search(r"no valid token within --timeout 3 s \(waited 3\.\d s\)", line), line
    assert "timed out after 2.4 s" in line, line  # the first request's own bound: 0.8 x 3
    assert "acquire_timeout" not in err


@pytest.mark.slow
@TIMED
async def test_quiet_says_only_the_error(env: dict[str, str], hanging: str) -> None:
    """-q: a wait longer than a second says nothing until its one error line."""
    seconds, rc, err = await timed("token", "-q", "--base-url", f"{hanging}/ica/rest",
                                   "--timeout", "1.5", env=env)  # fmt: skip
    assert rc == 1
    assert 1.5 <= seconds < 1.5 + 10.0  # the point is -q: room for a loaded machine
    assert len(err.splitlines()) == 1
    assert "--timeout 1.5 s" in error_line(err)


# -- in-process: the watch itself -------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _refused(port: int = 9) -> TransportError:
    msg = (
        f"POST http://127.0.0.1:{port}/ica/rest/api/tokens: connection refused by 127.0.0.1:{port}"
    )
    return TransportError(msg, kind="refused")


def test_fast_failure_given_up_on_after_three_attempts() -> None:
    """Refused three times: given up on, the status said "retrying (2/3)", "(3/3)" before."""
    watch = Watch("127.0.0.1:9", 30, out=io.StringIO(), quiet=False, started=0.0)
    watch.failed(_refused(), 0.4, now=0.01)
    assert watch.status == "token endpoint: connection refused by 127.0.0.1:9; retrying (2/3)"
    watch.failed(_refused(), 0.8, now=0.45)
    assert watch.status.endswith("retrying (3/3)")
    assert watch.gave_up is None
    watch.failed(_refused(), 1.6, now=1.3)
    assert watch.gave_up is not None
    assert watch.gave_up.endswith("connection refused by 127.0.0.1:9 (gave up after 3 attempts "
                                  "in 1.3 s)")  # fmt: skip


def test_fast_failure_never_retried_beyond_five_seconds() -> None:
    """A fast kind whose next attempt would come after 5 s is given up on at once."""
    watch = Watch("h:443", 30, out=io.StringIO(), quiet=False, started=0.0)
    watch.failed(_refused(), 1.0, now=4.2)
    assert watch.gave_up is not None
    assert "(gave up after 1 attempt in 4.2 s)" in watch.gave_up


def test_other_failures_retried_until_timeout() -> None:
    """A 5xx or a timeout is retried: the status says so, with --timeout; a fast failure
    between them counts from one again."""
    watch = Watch("h:443", 30, out=io.StringIO(), quiet=False, started=0.0)
    for _ in range(5):
        watch.failed(ServerError(503, method="POST", url="https://h/api/tokens"), 1.0, now=1.0)
    assert watch.gave_up is None
    assert watch.status == (
        "token endpoint: HTTP 503 from POST https://h/api/tokens; retrying (attempt 6, "
        "--timeout 30 s)"
    )
    watch.failed(_refused(), 0.5, now=2.0)
    assert watch.status.endswith("(2/3)")
    assert watch.out_of_time(30.04) == (
        "no valid token within --timeout 30 s (waited 30.0 s): 6 attempts failed, the last: "
        + str(_refused())
    )


def test_status_lines_not_a_terminal() -> None:
    """Not a terminal: a failure said after a second, a mere wait after five; one line per
    change."""
    out = io.StringIO()
    watch = Watch("h:443", 30, out=out, quiet=False, started=0.0)
    watch.show(0.5)
    watch.show(4.9)
    assert out.getvalue() == ""
    watch.show(5.0)
    watch.show(6.0)
    watch.failed(ServerError(502, method="POST", url="https://h/api/tokens"), 0.5, now=6.5)
    watch.show(6.6)
    watch.erase()
    assert out.getvalue().splitlines() == [
        "aioica-auth: waiting for a token from h:443 (--timeout 30 s)",
        "aioica-auth: token endpoint: HTTP 502 from POST https://h/api/tokens; retrying "
        "(attempt 2, --timeout 30 s)",
    ]
    early = io.StringIO()
    watch = Watch("h:443", 30, out=early, quiet=False, started=0.0)
    watch.failed(_refused(), 0.5, now=0.1)
    watch.show(0.9)
    watch.show(1.0)
    assert early.getvalue() == (
        "aioica-auth: token endpoint: connection refused by 127.0.0.1:9; retrying (2/3)\n"
    )


def test_status_line_on_a_terminal() -> None:
    """A terminal: one line rewritten in place with the seconds waited, erased at the end;
    -q: nothing."""
    out = _Tty()
    watch = Watch("h:443", 30, out=out, quiet=False, started=0.0)
    watch.show(1.0)
    watch.show(2.0)
    watch.erase()
    assert out.getvalue() == (
        "\raioica-auth: waiting for a token from h:443 (--timeout 30 s) [1 s]\x1b[K"
        "\raioica-auth: waiting for a token from h:443 (--timeout 30 s) [2 s]\x1b[K"
        "\r\x1b[K"
    )
    quiet = _Tty()
    watch = Watch("h:443", 30, out=quiet, quiet=True, started=0.0)
    watch.show(5.0)
    watch.erase()
    assert quiet.getvalue() == ""


async def test_within_timeout_gives_up_on_logged_failures() -> None:
    """The manager's `token.renewal_failed` records (WARNING, then DEBUG) end the wait after
    three refused attempts, matched by their event (not their wording) and timed by `next_in`;
    the logger's level and filters are as before afterwards, and a DEBUG record reaches no
    handler that would not have seen it."""
    aioica = logging.getLogger("aioica_auth")
    aioica.setLevel(logging.WARNING)  # as in a program that did not ask for DEBUG
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    aioica.addHandler(handler)
    loop = asyncio.get_running_loop()
    watch = Watch("127.0.0.1:9", 30, out=io.StringIO(), quiet=False, started=loop.time())

    async def manager() -> None:
        for attempt in (1, 2, 3, 4):
            log = aioica.warning if attempt == 1 else aioica.debug
            exc = _refused()
            extra = fields(Event.TOKEN_RENEWAL_FAILED, reason=str(exc), attempt=attempt,
                           next_in=0.01, validity=None, status=None)  # fmt: skip
            log("token renewal failed (%s); attempt %d, next in %.2f s; current token: %s",
                exc, attempt, 0.01, "no token", extra=extra)  # fmt: skip
            await asyncio.sleep(0.01)
        await asyncio.sleep(60)

    try:
        with pytest.raises(Failure, match=r"gave up after 3 attempts"):
            await asyncio.wait_for(within_timeout(manager(), watch), 10)
        assert aioica.level == logging.WARNING
        assert aioica.filters == []
        assert [r.levelno for r in seen] == [logging.WARNING]
    finally:
        aioica.removeHandler(handler)
        aioica.setLevel(logging.NOTSET)


async def test_within_timeout_rewords_the_managers_timeout() -> None:
    """A transient failure the manager gave up on is said with --timeout, not the library's
    acquire_timeout; a permanent one is raised as it is."""
    loop = asyncio.get_running_loop()

    async def transient() -> None:
        cause = ServerError(503, method="POST", url="https://h/api/tokens")
        raise TokenUnavailableError("no valid token: still failing after acquire_timeout=9 s") \
            from cause  # fmt: skip

    watch = Watch("h:443", 8, out=io.StringIO(), quiet=True, started=loop.time())
    with pytest.raises(Failure, match=r"within --timeout 8 s \(waited 0\.\d s\): 1 attempt "):
        await within_timeout(transient(), watch)

    async def permanent() -> None:
        cause = TransportError("POST https://h/api/tokens: session closed", kind="closed")
        raise TokenUnavailableError("no valid token: session closed") from cause

    watch = Watch("h:443", 8, out=io.StringIO(), quiet=True, started=loop.time())
    with pytest.raises(TokenUnavailableError, match="session closed"):
        await within_timeout(permanent(), watch)
