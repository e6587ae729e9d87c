"""The `aioica-auth` command line: in-process `main([...])`, its pure helpers, and subprocesses."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from aioica_auth import ApiKey, ConsoleTokenApi, Token
from aioica_auth._cli import describe_validity, human_duration, main
from aioica_auth._cli_demo import (
    DemoResult,
    TokenUse,
    format_latency,
    format_summary,
    percentile,
    run_demo,
)
from aioica_auth._cli_serve import parse_faults
from aioica_auth.testing import LocalIcaServer, make_jwt

ROOT = Path(__file__).resolve().parent.parent
CREDENTIAL_VARS = (
    "ICA_API_KEY",
    "ICA_USERNAME",
    "ICA_PASSWORD",
    "ICA_PS_TOKEN",
    "ICA_BASE_URL",
    "ICA_CONSOLE_URL",
)
SECRET = "S3cr3t-Value-0123456789abcdef"
NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own ICA credentials (subprocesses inherit this)."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def server() -> AsyncIterator[LocalIcaServer]:
    """A local ICA server in the test's event loop."""
    async with LocalIcaServer(lifetime=600.0) as srv:
        yield srv


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this one without ICA credentials, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update(extra)
    return env


def run(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """`python -m aioica_auth ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "aioica_auth", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env if env is not None else child_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


async def arun(*args: str, env: dict[str, str], within: float = 20) -> tuple[int, str, str]:
    """`python -m aioica_auth ARGS` without blocking the event loop (a server may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioica_auth",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line_error(stderr: str) -> str:
    """The stderr of a failed run: exactly one line, `aioica-auth: error: ...`."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("aioica-auth: error: "), stderr
    return lines[0]


def demo_result(**changes: object) -> DemoResult:
    """A synthetic demo result for the formatting tests."""
    values: dict[str, object] = {
        "tasks": 1000,
        "duration": 15.0,
        "lifetime": 4.0,
        "latency": 0.05,
        "faults": False,
        "connections": 100,
        "elapsed": 15.0,
        "interrupted": False,
        "requests": 123_456,
        "statuses": {200: 123_456},
        "auth_failures": 0,
        "other_errors": {},
        "crashed": 0,
        "token_calls": {"ica.create": 5},
        "token_answers": {200: 5},
        "server_401s": 0,
        "mints": 5,
        "refreshes": 0,
        "failures": 0,
        "waits": 1000,
        "invalidations": 0,
        "headers_calls": 123_456,
        "latency_p50": 4e-7,
        "latency_p99": 3e-6,
        "latency_max": 0.052,
        "timeline": (TokenUse("1a2b3c4d", "minted", 0.06, 4.0, 23_456, 0.1, 2.9),),
    }
    values.update(changes)
    return DemoResult(**values)  # type: ignore[arg-type]


# -- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.45, "0.4 s"),
        (10.0, "10 s"),
        (59.9, "59 s"),
        (60.0, "1 min"),
        (303.0, "5 min 3 s"),
        (3600.0, "1 h"),
        (86399.5, "23 h 59 min"),
        (2 * 86400 + 3 * 3600 + 5, "2 d 3 h"),
        (-300.2, "5 min"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    """Durations read as people say them: two units at most, truncated."""
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("jwt_kwargs", "text"),
    [
        ({"lifetime": 86400}, "expires in 23 h 59 min"),
        ({"issued_at": NOW.timestamp() - 3900, "lifetime": 3600}, "expired 5 min ago"),
        (
            {"not_before": NOW.timestamp() + 10.5, "lifetime": 3600},
            "not valid for another 10 s; expires in 59 min 59 s",
        ),
        ({"include_exp": False}, "never expires (no exp claim)"),
    ],
)
def test_describe_validity(jwt_kwargs: dict[str, float], text: str) -> None:
    """Expiry is described in human terms, relative to now."""
    kwargs: dict[str, object] = {"issued_at": NOW.timestamp() - 0.5, **jwt_kwargs}
    token = Token.from_jwt(make_jwt(**kwargs))  # type: ignore[arg-type]
    assert describe_validity(token, NOW) == text


def test_parse_faults() -> None:
    """`--faults` items: a status or a kind, and a count (default 1, `*` for always)."""
    specs = parse_faults("ica.create:503:3, ica.create:429,*:drop:*")
    assert [(s.endpoint, s.kind, s.status, s.times, s.retry_after) for s in specs] == [
        ("ica.create", "status", 503, 3, None),
        ("ica.create", "status", 429, 1, "1"),
        ("*", "drop", 503, None, None),
    ]


@pytest.mark.parametrize(
    "text", ["", "ica.create", "nowhere:503", "ica.create:200", "ica.create:503:0", "a:b:c:d"]
)
def test_parse_faults_rejects(text: str) -> None:
    """A malformed `--faults` item is a ValueError (a usage error on the command line)."""
    with pytest.raises(ValueError, match=r"fault|empty"):
        parse_faults(text)


def test_percentile_and_latency_format() -> None:
    """Nearest-rank percentiles; latencies in µs, ms or s."""
    data = [float(i) for i in range(1, 101)]
    assert percentile(data, 0.5) == 50.0
    assert percentile(data, 0.99) == 99.0
    assert percentile([], 0.5) is None
    assert [format_latency(v) for v in (4e-7, 0.00125, 2.1, None)] == [
        "0.4 µs",
        "1.25 ms",
        "2.10 s",
        "n/a",
    ]


def test_format_summary_pass() -> None:
    """The summary table names every measure, the timeline and a PASS verdict."""
    text = format_summary(demo_result())
    for needle in (
        "1,000 tasks",
        "requests (resource GETs by the tasks)",
        "123,456",
        "401s reaching the tasks",
        "token-endpoint calls (server-counted)",
        "tokens minted / refreshed (manager)",
        "headers() latency p99",
        "3.0 µs",
        "52.00 ms",
        "token 1a2b3c4d  minted",
        "served 23,456 requests",
        "Result: PASS",
    ):
        assert needle in text, needle


def test_format_summary_fail_and_long_timeline() -> None:
    """401s reaching tasks make a FAIL; a long timeline is cut in the middle."""
    uses = tuple(TokenUse(f"{i:08x}", "minted", i * 3.0, 4.0, 10, None, None) for i in range(50))
    text = format_summary(demo_result(auth_failures=3, timeline=uses, interrupted=True))
    assert "Result (so far): FAIL: 3 401s" in text
    assert "(interrupted)" in text
    assert "... 30 more tokens ..." in text
    assert "token 00000031" in text


def test_format_summary_no_requests() -> None:
    """A run in which no request completed is not a pass."""
    result = demo_result(requests=0, statuses={}, timeline=(), mints=0, headers_calls=0)
    assert not result.ok
    assert "FAIL: no request completed" in format_summary(result)
    assert "(no token)" in format_summary(result)


def test_demo_result_json() -> None:
    """`to_json` is JSON-ready and carries the verdict."""
    data = json.loads(json.dumps(demo_result().to_json()))
    assert data["ok"] is True
    assert data["token_endpoint_calls"] == 5
    assert data["statuses"] == {"200": 123_456}
    assert data["timeline"][0]["fingerprint"] == "1a2b3c4d"


# -- main() in-process: usage ----------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the version and exits 0."""
    assert main(["--version"]) == 0
    assert re.fullmatch(r"aioica-auth \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` lists the commands, the environment variables and examples."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for needle in ("token", "decode", "details", "serve", "demo", "ICA_API_KEY", "examples:"):
        assert needle in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """No command: the help on stderr, exit 2."""
    assert main([]) == 2
    assert "examples:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["token", "--api-key", SECRET], "ICA_API_KEY"),
        (["token", f"--password={SECRET}"], "ICA_PASSWORD"),
        (["token", "--token", SECRET], "ICA_PS_TOKEN"),
        (["details", "--ps-token", SECRET], "ICA_PS_TOKEN"),
        (["token", "--username", "me@example.org"], "ICA_USERNAME"),
        (["token", SECRET], "ICA_API_KEY"),
        (["demo", SECRET], "environment"),
        ([SECRET], "environment"),
        ([make_jwt()], "decode -"),
        (["token", "-p", SECRET], "unknown option '-p'"),
        (["decode", "eyJx.eyJy.z", SECRET], "not shown"),
    ],
)
def test_secret_arguments_refused(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret on the command line is refused in one line that does not repeat it (exit 2)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert hint in line
    assert SECRET not in captured.err + captured.out
    assert "eyJ" not in captured.err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command is a usage error that names the commands."""
    assert main(["frobnicate"]) == 2
    assert "choose from token, decode, details, serve, demo" in one_line_error(
        capsys.readouterr().err
    )


def test_bad_option_value(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own errors exit 2 with usage."""
    assert main(["demo", "--tasks", "0"]) == 2
    assert "--tasks: must be greater than 0" in capsys.readouterr().err


def test_token_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    """No credential in the environment: exit 2, saying what to set."""
    assert main(["token"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "ICA_API_KEY" in line
    assert "ICA_USERNAME and ICA_PASSWORD" in line
    assert "ICA_PS_TOKEN" in line


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ICA_API_KEY": SECRET, "ICA_USERNAME": "me"}, "ICA_API_KEY and ICA_USERNAME are both"),
        ({"ICA_API_KEY": SECRET, "ICA_PS_TOKEN": SECRET}, "ICA_API_KEY and ICA_PS_TOKEN"),
        ({"ICA_USERNAME": "me"}, "ICA_PASSWORD is not"),
        ({"ICA_PASSWORD": SECRET}, "ICA_USERNAME is not"),
        ({"ICA_API_KEY": SECRET + " "}, "whitespace"),
    ],
)
def test_token_ambiguous_credentials(
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two credentials, half of one, or a pasted space: exit 2, the secret never shown."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["token"]) == 2
    captured = capsys.readouterr()
    assert message in one_line_error(captured.err)
    assert SECRET not in captured.err + captured.out


def test_plain_http_base_url_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-loopback http:// base URL is a usage error (exit 2), before any request."""
    monkeypatch.setenv("ICA_API_KEY", SECRET)
    assert main(["token", "--base-url", "http://ica.example.com/ica/rest"]) == 2
    captured = capsys.readouterr()
    assert "plain http" in one_line_error(captured.err)
    assert SECRET not in captured.err


# -- main() in-process: decode ---------------------------------------------------------------


def test_decode_argument(capsys: pytest.CaptureFixture[str]) -> None:
    """`decode JWT` prints the claims as JSON and the expiry in human terms."""
    assert main(["decode", make_jwt(lifetime=86400, claims={"tns": "acme"})]) == 0
    out = capsys.readouterr().out
    assert '"tns": "acme"' in out
    assert out.rstrip().endswith("expires in 23 h 59 min")


def test_decode_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`decode -` reads stdin, and accepts an `Authorization: Bearer` line."""
    jwt_ = make_jwt(issued_at=dt.datetime.now(dt.UTC).timestamp() - 4000, lifetime=3600)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"Authorization: Bearer {jwt_}\n"))
    assert main(["decode", "-"]) == 0
    assert "expired 6 min" in capsys.readouterr().out


def test_decode_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`decode --json` (stdin by default) prints claims and times as JSON."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(make_jwt(lifetime=600)))
    assert main(["decode", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["claims"]["aud"] == "ica"
    assert 590 <= data["expires_in"] <= 600
    assert data["status"].startswith("expires in")


@pytest.mark.parametrize("text", ["not-a-jwt", "eyJhbGciOiJIUzI1NiJ9.bm9wZQ.sig"])
def test_decode_malformed(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed JWT: one line on stderr, exit 1."""
    assert main(["decode", text]) == 1
    assert "not a JWT" in one_line_error(capsys.readouterr().err)


def test_decode_empty_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing on stdin is a usage error."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["decode"]) == 2
    assert "nothing to decode" in one_line_error(capsys.readouterr().err)


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """`--debug` adds the traceback; without it, one line."""
    assert main(["--debug", "decode", "garbage"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main(["decode", "garbage", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


# -- main() in-process against a local server ------------------------------------------------


async def test_token_ica(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token` prints a JWT minted from ICA_API_KEY by ICA v2."""
    monkeypatch.setenv("ICA_API_KEY", server.api_key)
    assert await asyncio.to_thread(main, ["token", "--base-url", server.ica_base_url]) == 0
    token = Token.from_jwt(capsys.readouterr().out.strip())
    assert token.claims["tns"] == "test-tenant"
    assert server.counts["ica.create"] == 1


async def test_token_header_from_env_base_url(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --header` prints an Authorization line; ICA_BASE_URL sets the API root."""
    monkeypatch.setenv("ICA_API_KEY", server.api_key)
    monkeypatch.setenv("ICA_BASE_URL", server.ica_base_url)
    assert await asyncio.to_thread(main, ["token", "--header"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"Authorization: Bearer eyJ[\w-]+\.[\w-]+\.[\w-]+", line)


async def test_token_json_basic_auth(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --json` with ICA_USERNAME + ICA_PASSWORD: token, expires_at, expires_in."""
    monkeypatch.setenv("ICA_USERNAME", server.username)
    monkeypatch.setenv("ICA_PASSWORD", server.password)
    argv = ["token", "--json", "--base-url", server.ica_base_url, "--tenant", "test-tenant"]
    assert await asyncio.to_thread(main, argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"token", "expires_at", "expires_in"}
    assert 590 <= data["expires_in"] <= 600
    assert data["expires_at"].endswith("Z")
    assert Token.from_jwt(data["token"]).claims["tns"] == "test-tenant"


async def test_token_console(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --console` mints from the console v1 (ICA_CONSOLE_URL)."""
    monkeypatch.setenv("ICA_API_KEY", server.api_key)
    monkeypatch.setenv("ICA_CONSOLE_URL", server.base_url)
    assert await asyncio.to_thread(main, ["token", "--console"]) == 0
    Token.from_jwt(capsys.readouterr().out.strip())
    assert server.counts["console.create"] == 1
    assert server.counts["ica.create"] == 0


async def test_token_wrong_password(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused credential: exit 1, one line, no secret, fast (not retried)."""
    monkeypatch.setenv("ICA_USERNAME", server.username)
    monkeypatch.setenv("ICA_PASSWORD", SECRET)
    argv = ["token", "--base-url", server.ica_base_url]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), 10) == 1
    captured = capsys.readouterr()
    assert "401" in one_line_error(captured.err)
    assert SECRET not in captured.err
    assert captured.out == ""


async def test_token_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No server: exit 1 after --timeout, one line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ICA_API_KEY", SECRET)
    argv = ["token", "--base-url", f"http://127.0.0.1:{port}/ica/rest", "--timeout", "1"]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), 10) == 1
    captured = capsys.readouterr()
    assert "no valid token" in one_line_error(captured.err)
    assert SECRET not in captured.err


async def test_details_api_key(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`details` mints a console JWT from the API key, then prints the details as JSON."""
    monkeypatch.setenv("ICA_API_KEY", server.api_key)
    assert await asyncio.to_thread(main, ["details", "--base-url", server.base_url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["username"] == server.username
    assert data["domain"]["name"] == "test-tenant"
    assert "currentWorkgroup" in data
    assert server.counts["console.create"] == 1
    assert server.counts["console.details"] == 1


async def test_details_ps_token(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`details` uses ICA_PS_TOKEN as it is (no mint)."""
    async with aiohttp.ClientSession() as session:
        api = ConsoleTokenApi(session, server.base_url)
        answer = await api.create_token(ApiKey(server.api_key), return_session_token=True)
    assert answer.access_token is not None
    monkeypatch.setenv("ICA_PS_TOKEN", answer.access_token)
    monkeypatch.setenv("ICA_CONSOLE_URL", server.base_url)
    assert await asyncio.to_thread(main, ["details"]) == 0
    assert json.loads(capsys.readouterr().out)["uid"]
    assert server.counts["console.create"] == 1  # only the test's own


# -- run_demo in-process ---------------------------------------------------------------------


async def test_run_demo_small() -> None:
    """Tasks share one manager across several lifetimes: zero 401s, one mint per token."""
    result = await run_demo(tasks=20, duration=2.0, lifetime=1.0, latency=0.01)
    assert result.ok
    assert result.auth_failures == 0
    assert result.requests > 100
    assert result.mints >= 2
    # One more request than mints when aclose() cancelled a renewal under way at the end.
    assert set(result.token_calls) == {"ica.create"}
    assert result.mints <= result.token_calls["ica.create"] <= result.mints + 1
    assert len(result.timeline) == result.mints
    assert sum(u.requests for u in result.timeline) == result.requests
    assert result.latency_p50 is not None
    assert result.latency_p50 < 0.001


async def test_run_demo_rides_out_faults() -> None:
    """With 5xx and 429 on the token endpoint (seeded), still zero 401s reach the tasks."""
    result = await run_demo(tasks=20, duration=3.0, lifetime=1.0, latency=0.01, faults=True, seed=3)
    assert result.ok
    assert result.failures >= 2
    assert result.token_answers.get(429, 0) >= 1
    assert result.requests > 0


async def test_run_demo_stop_and_progress() -> None:
    """Setting `stop` ends the run early, marked interrupted; progress is reported."""
    stop = asyncio.Event()
    seen = []

    def progress(p: object) -> None:
        seen.append(p)
        stop.set()

    result = await run_demo(
        tasks=5, duration=30.0, lifetime=2.0, stop=stop, progress=progress, progress_interval=0.1
    )
    assert result.interrupted
    assert result.elapsed < 5
    assert seen


@pytest.mark.parametrize(
    "kwargs", [{"tasks": 0}, {"duration": 0.0}, {"lifetime": -1.0}, {"latency": float("nan")}]
)
async def test_run_demo_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    """Settings out of range are a ValueError before anything starts."""
    with pytest.raises(ValueError, match="must be"):
        await run_demo(**kwargs)  # type: ignore[arg-type]


# -- subprocesses ----------------------------------------------------------------------------


def test_cli_help() -> None:
    """`python -m aioica_auth --help` exits 0 with examples."""
    proc = run("--help")
    assert proc.returncode == 0
    assert "examples:" in proc.stdout
    assert proc.stderr == ""


def test_cli_unknown_command() -> None:
    """An unknown command exits 2 with one line on stderr."""
    proc = run("frobnicate")
    assert proc.returncode == 2
    one_line_error(proc.stderr)


def test_cli_decode_stdin_and_argument() -> None:
    """`decode` from stdin (`-`) and as an argument: claims and human expiry, exit 0."""
    jwt_ = make_jwt(lifetime=86400)
    for proc in (run("decode", "-", stdin=jwt_ + "\n"), run("decode", jwt_)):
        assert proc.returncode == 0, proc.stderr
        assert '"aud": "ica"' in proc.stdout
        assert "expires in 23 h 59 min" in proc.stdout


def test_cli_decode_malformed() -> None:
    """A malformed JWT exits 1 with one line and no traceback."""
    proc = run("decode", "-", stdin="definitely.not.a-jwt\n")
    assert proc.returncode == 1
    assert "not a JWT" in one_line_error(proc.stderr)


def test_cli_token_usage_errors() -> None:
    """Missing env, key and username both set, and a secret as an argument: exit 2."""
    missing = run("token")
    both = run("token", env=child_env(ICA_API_KEY=SECRET, ICA_USERNAME="me@example.org"))
    as_arg = run("token", "--api-key", SECRET)
    for proc in (missing, both, as_arg):
        assert proc.returncode == 2, proc.stderr
        one_line_error(proc.stderr)
        assert SECRET not in proc.stderr + proc.stdout
    assert "no credentials" in missing.stderr
    assert "both set" in both.stderr
    assert "ICA_API_KEY" in as_arg.stderr


async def test_cli_token_against_server(server: LocalIcaServer) -> None:
    """`token`, `--header` and `--json` in a subprocess against the test's server."""
    env = child_env(ICA_API_KEY=server.api_key, ICA_BASE_URL=server.ica_base_url)
    (rc1, plain, _), (rc2, header, _), (rc3, as_json, err) = await asyncio.gather(
        arun("token", env=env),
        arun("token", "--header", env=env),
        arun("token", "--json", env=env),
    )
    assert (rc1, rc2, rc3) == (0, 0, 0), err
    Token.from_jwt(plain.strip())
    assert header.startswith("Authorization: Bearer eyJ")
    assert json.loads(as_json)["expires_in"] > 500
    assert server.counts["ica.create"] == 3


async def test_cli_token_refused_no_secret(server: LocalIcaServer) -> None:
    """A wrong API key: exit 1, one line, the key not in stderr."""
    env = child_env(ICA_API_KEY=SECRET, ICA_BASE_URL=server.ica_base_url)
    rc, out, err = await arun("token", env=env)
    assert rc == 1
    assert "401" in one_line_error(err)
    assert SECRET not in err + out
    assert server.api_key not in err


async def test_cli_details_against_server(server: LocalIcaServer) -> None:
    """`details` with username and password in a subprocess: JSON, password never shown."""
    env = child_env(
        ICA_USERNAME=server.username, ICA_PASSWORD=server.password, ICA_CONSOLE_URL=server.base_url
    )
    rc, out, err = await arun("details", env=env)
    assert rc == 0, err
    assert json.loads(out)["username"] == server.username
    assert server.password not in out + err


async def _read_until(stream: asyncio.StreamReader, pattern: str, within: float) -> str:
    """Lines of `stream` until one matches `pattern`; all of them."""
    seen = ""
    async with asyncio.timeout(within):
        while not re.search(pattern, seen):
            line = await stream.readline()
            if not line:
                break
            seen += line.decode()
    return seen


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serve(signum: signal.Signals) -> None:
    """`serve` prints URLs and credentials, serves, and exits 0 on SIGTERM or Ctrl-C."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioica_auth",
        "serve",
        "--port",
        "0",
        "--lifetime",
        "60",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        banner = await _read_until(proc.stdout, r"export ICA_API_KEY=\S+ .*\n", 15)
        base = re.search(r"ICA v2 base URL:\s+(http://127\.0\.0\.1:\d+/ica/rest)", banner)
        key = re.search(r"export ICA_API_KEY=(\S+)", banner)
        assert base is not None, banner
        assert key is not None, banner
        async with aiohttp.ClientSession() as session:
            async with session.post(
                base.group(1) + "/api/tokens", headers={"X-API-Key": key.group(1)}
            ) as resp:
                assert resp.status == 200
                token = (await resp.json(content_type=None))["token"]
            async with session.get(
                base.group(1) + "/api/projects", headers={"Authorization": f"Bearer {token}"}
            ) as resp:
                assert resp.status == 200
        proc.send_signal(signum)
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out.decode()
    assert err.decode() == ""


async def test_cli_serve_port_in_use() -> None:
    """`serve --port` on a busy port: one line, exit 1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        rc, _, err = await arun("serve", "--port", str(port), env=child_env())
    assert rc == 1
    assert "already in use" in one_line_error(err)


def test_cli_demo_tiny() -> None:
    """A tiny `demo` exits 0 with a summary showing zero 401s and a token timeline."""
    proc = run("demo", "--tasks", "20", "--duration", "2", "--lifetime", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"401s reaching the tasks\s+0\n", proc.stdout)
    assert "Result: PASS" in proc.stdout
    assert len(re.findall(r"token [0-9a-f]{8}  minted", proc.stdout)) >= 2
    assert "\r" not in proc.stdout  # no progress line when stdout is not a TTY
    assert proc.stderr == ""


def test_cli_demo_faults_json() -> None:
    """`demo --faults --json`: parseable JSON, faults answered, still zero 401s."""
    proc = run(
        "demo", "--tasks", "20", "--duration", "3", "--lifetime", "1", "--faults", "--seed", "3",
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is True
    assert data["auth_failures"] == 0
    assert data["failures"] >= 2
    assert "429" in data["token_answers"]


async def test_cli_demo_interrupted() -> None:
    """Ctrl-C during `demo` prints the summary so far and exits 130."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioica_auth",
        "demo",
        "--tasks",
        "10",
        "--duration",
        "60",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        await _read_until(proc.stdout, r"^demo: ", 15)
        await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode == 130, err
    assert "(interrupted)" in out.decode()
    assert "401s reaching the tasks" in out.decode()
