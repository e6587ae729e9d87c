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

from aioica_auth import CONSOLE_BASE_URL, ApiKey, ConsoleTokenApi, Token
from aioica_auth._cli.base import Stop
from aioica_auth._cli.demo.display import (
    ProgressLine,
    format_latency,
    format_progress,
    format_summary,
)
from aioica_auth._cli.demo.result import DemoProgress, DemoResult, TokenUse, percentile
from aioica_auth._cli.demo.run import run_demo
from aioica_auth._cli.faults import parse_faults
from aioica_auth._cli.main import build_parser, describe_validity, human_duration, main
from aioica_auth.testing import LocalIcaServer, make_jwt

from ..support import run_cli

ROOT = Path(__file__).resolve().parents[2]
# Every variable discovery or aiohttp's proxy lookup reads: none leaks in from the developer.
CREDENTIAL_VARS = (
    "ICAV2_X_API_KEY",
    "ICAV2_ACCESS_TOKEN",
    "ICAV2_BASE_URL",
    "ICAV2_SERVER_URL",
    "ICAV2_CONFIG_DIR",
    "ICA_ACCESS_TOKEN",
    "ICA_SERVER_URL",
    "ICA_CONFIG_FILE",
    "ICA_API_KEY",
    "ICA_USERNAME",
    "ICA_PASSWORD",
    "ICA_PS_TOKEN",
    "ICA_BASE_URL",
    "ICA_CONSOLE_URL",
    "XDG_CACHE_HOME",  # the token cache: under the test's HOME, never the developer's
    *(v for name in ("http_proxy", "https_proxy", "no_proxy") for v in (name, name.upper())),
)
SECRET = "S3cr3t-Value-0123456789abcdef"
NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's own ICA credentials, proxies or ~/.icav2 (subprocesses
    inherit this: HOME is a fresh temporary directory)."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))


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


def one_line_error(stderr: str) -> str:
    """The stderr of a failed run: exactly one line, `aioica-auth: error: ...`."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("aioica-auth: error: "), stderr
    return lines[0]


def warnings_and_error(stderr: str) -> tuple[list[str], str]:
    """The stderr of a failed run after warnings: `aioica-auth: warning: ...` lines, then
    exactly one error line."""
    *warned, error = stderr.strip().splitlines()
    assert all(line.startswith("aioica-auth: warning: ") for line in warned), stderr
    assert error.startswith("aioica-auth: error: "), stderr
    return warned, error


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
        "first_calls": 1000,
        "first_call_p50": 0.051,
        "first_call_max": 0.06,
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


def test_repeated_faults_options_make_one_list() -> None:
    """`serve --faults A --faults B,C` hands serve one list of every item, in order."""
    args = build_parser().parse_args(
        ["serve", "--faults", "ica.create:503", "--faults", "*:drop,resource:401"]
    )
    assert [(s.endpoint, s.kind) for s in args.faults] == [
        ("ica.create", "status"),
        ("*", "drop"),
        ("resource", "status"),
    ]
    assert build_parser().parse_args(["serve"]).faults == []


def test_stop_exits_with_the_first_signal() -> None:
    """A command stopped by a signal exits 128 + its number (SIGINT when none was seen)."""
    stop = Stop()
    assert stop.exit_code == 128 + signal.SIGINT
    stop(signal.SIGTERM)
    stop(signal.SIGINT)
    assert stop.event.is_set()
    assert stop.exit_code == 128 + signal.SIGTERM


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
        "first headers() call p50 / max",
        "51.00 ms / 60.00 ms",
        "they wait for the first mint",
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
    for needle in (
        "token", "whoami", "decode", "details", "serve", "demo", "ICAV2_X_API_KEY",
        "ICAV2_ACCESS_TOKEN", "~/.icav2/config.yaml", "--x-api-key-file", "HTTPS_PROXY",
        "examples:",
    ):  # fmt: skip
        assert needle in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """No command: usage and one error line naming the commands on stderr, exit 2."""
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    usage, error = captured.err.strip().splitlines()
    assert usage.startswith("usage: aioica-auth")
    assert error.startswith("aioica-auth: error: a command is required: one of token, whoami")


def test_details_help_states_the_console_default(capsys: pytest.CaptureFixture[str]) -> None:
    """`details --help` names the console's real default and its variables, not ICA v2's."""
    assert main(["details", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert CONSOLE_BASE_URL in out
    assert "ICA_CONSOLE_URL" in out
    assert "--region" in out
    assert "ICA_BASE_URL" not in out
    assert "ICAV2_BASE_URL" not in out


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["token", "--api-key", SECRET], "--x-api-key-file PATH, or ICAV2_X_API_KEY"),
        (["token", "--x-api-key", SECRET], "--x-api-key-file PATH"),
        (["whoami", f"--x-api-key={SECRET}"], "--x-api-key-file PATH"),
        (["token", f"--password={SECRET}"], "passwords are not read"),
        (["token", "--token", SECRET], "ICAV2_ACCESS_TOKEN"),
        (["details", "--ps-token", SECRET], "ICAV2_ACCESS_TOKEN"),
        (["token", "--username", "me@example.org"], "usernames and passwords"),
        (["token", SECRET], "ICAV2_X_API_KEY"),
        (["demo", SECRET], "never come from the command line"),
        ([SECRET], "never come from the command line"),
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
    assert "choose from token, whoami, decode, details, serve, demo" in one_line_error(
        capsys.readouterr().err
    )


def test_bad_option_value(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own errors exit 2 with usage."""
    assert main(["demo", "--tasks", "0"]) == 2
    assert "--tasks: must be greater than 0" in capsys.readouterr().err


def test_token_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    """No credential anywhere: exit 2, listing what was tried in discovery order."""
    assert main(["token"]) == 2
    line = one_line_error(capsys.readouterr().err)
    tried = [
        "ICAV2_X_API_KEY (not set)",
        "ICAV2_ACCESS_TOKEN (not set)",
        "ICA_API_KEY, ICA_USERNAME, ICA_PASSWORD, ICA_PS_TOKEN (deprecated; not set)",
        "/.icav2/config.yaml (no such file)",
        "/.icav2/.session.ica.yaml (no such file)",
    ]
    positions = [line.index(t) for t in tried]
    assert positions == sorted(positions)


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
    monkeypatch.setenv("ICAV2_X_API_KEY", SECRET)
    assert main(["token", "--base-url", "http://ica.example.com/ica/rest"]) == 2
    captured = capsys.readouterr()
    assert "plain http" in one_line_error(captured.err)
    assert SECRET not in captured.err


# -- main() in-process: decode ---------------------------------------------------------------


def test_decode_argument(capsys: pytest.CaptureFixture[str]) -> None:
    """`decode JWT` prints the claims as JSON, each time once in human terms, and a verdict."""
    assert main(["decode", make_jwt(lifetime=86400, claims={"tns": "acme"})]) == 0
    out = capsys.readouterr().out
    assert '"tns": "acme"' in out
    assert out.count("23 h 59 min") == 1
    assert re.search(r"^expires at  \S+Z  \(in 23 h 59 min; exp [\d.]+\)$", out, re.MULTILINE)
    assert out.rstrip().endswith("status      valid")


def test_decode_shows_each_time_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Each of iat, nbf and exp is on one line of its own and nowhere else."""
    iat = int(dt.datetime.now(dt.UTC).timestamp()) - 60
    jwt_ = make_jwt(issued_at=iat, not_before=iat + 5, lifetime=3600)
    assert main(["decode", jwt_]) == 0
    out = capsys.readouterr().out
    for claim, value in (("iat", iat), ("nbf", iat + 5), ("exp", iat + 3600)):
        assert out.count(str(value)) == 1, claim
        assert f'"{claim}"' not in out
    for when in (iat, iat + 5, iat + 3600):
        stamp = dt.datetime.fromtimestamp(when, dt.UTC).isoformat().replace("+00:00", "Z")
        assert out.count(stamp) == 1
    assert out.count(" ago") == 2
    assert out.count("in 58 min") == 1


@pytest.mark.parametrize(
    ("jwt_kwargs", "argv", "code", "said"),
    [
        ({"lifetime": 600}, [], 0, None),
        ({"issued_at": NOW.timestamp() - 4000, "lifetime": 3600}, [], 1, "expired"),
        (
            {"not_before": dt.datetime.now(dt.UTC).timestamp() + 300, "lifetime": 3600},
            [],
            1,
            "not valid yet",
        ),
        ({"lifetime": 600}, ["--min-validity", "60"], 0, None),
        ({"lifetime": 600}, ["--min-validity", "900"], 1, "less than --min-validity 900 s"),
        ({"include_exp": False}, ["--min-validity", "900"], 0, None),
    ],
)
def test_decode_exit_status_says_validity(
    jwt_kwargs: dict[str, float],
    argv: list[str],
    code: int,
    said: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`decode` exits 0 for a token valid now (for --min-validity), 1 otherwise, saying why;
    `--quiet` prints nothing either way."""
    jwt_ = make_jwt(**jwt_kwargs)  # type: ignore[arg-type]
    assert main(["decode", jwt_, *argv]) == code
    captured = capsys.readouterr()
    assert captured.out
    if said is None:
        assert captured.err == ""
    else:
        assert said in captured.err
        assert len(captured.err.strip().splitlines()) == 1
    assert main(["decode", "--quiet", jwt_, *argv]) == code
    assert capsys.readouterr() == ("", "")


def test_decode_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`decode -` reads stdin, and accepts an `Authorization: Bearer` line."""
    jwt_ = make_jwt(issued_at=dt.datetime.now(dt.UTC).timestamp() - 4000, lifetime=3600)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"Authorization: Bearer {jwt_}\n"))
    assert main(["decode", "-"]) == 1
    captured = capsys.readouterr()
    assert "(6 min 40 s ago; exp" in captured.out
    assert "EXPIRED" in captured.out
    assert "expired 6 min" in captured.err


def test_decode_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`decode --json` (stdin by default) prints claims and times as JSON."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(make_jwt(lifetime=600)))
    assert main(["decode", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["claims"]["aud"] == "ica"
    assert 590 <= data["expires_in"] <= 600
    assert data["status"].startswith("expires in")
    assert data["valid"] is True


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
    """`token` prints a JWT minted from ICAV2_X_API_KEY by ICA v2."""
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
    assert await asyncio.to_thread(main, ["token", "--base-url", server.ica_base_url]) == 0
    token = Token.from_jwt(capsys.readouterr().out.strip())
    assert token.claims["tns"] == "test-tenant"
    assert server.counts["ica.create"] == 1


async def test_token_header_from_env_base_url(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --header` prints an Authorization line; ICAV2_BASE_URL sets the API root."""
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
    monkeypatch.setenv("ICAV2_BASE_URL", server.ica_base_url)
    assert await asyncio.to_thread(main, ["token", "--header"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"Authorization: Bearer eyJ[\w-]+\.[\w-]+\.[\w-]+", line)


async def test_token_json_basic_auth(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --json` with the deprecated ICA_USERNAME + ICA_PASSWORD: token, expires_at,
    expires_in, and one warning line that says what to use instead."""
    monkeypatch.setenv("ICA_USERNAME", server.username)
    monkeypatch.setenv("ICA_PASSWORD", server.password)
    argv = ["token", "--json", "--base-url", server.ica_base_url, "--tenant", "test-tenant"]
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "aioica-auth: warning: ICA_USERNAME + ICA_PASSWORD: deprecated, and read for this "
        "release only; set ICAV2_X_API_KEY (an API key) instead, or pass BasicAuth(...) in "
        "code\n"
    )
    data = json.loads(captured.out)
    assert set(data) == {"token", "expires_at", "expires_in"}
    assert 590 <= data["expires_in"] <= 600
    assert data["expires_at"].endswith("Z")
    assert Token.from_jwt(data["token"]).claims["tns"] == "test-tenant"


async def test_token_console(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --console` mints from the console v1 (ICA_CONSOLE_URL) with ICAV2_X_API_KEY."""
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
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
    warned, error = warnings_and_error(captured.err)
    assert len(warned) == 1
    assert "deprecated" in warned[0]
    assert "401" in error
    assert SECRET not in captured.err
    assert captured.out == ""


async def test_token_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No server: exit 1 after --timeout, one line naming the refused connection."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ICAV2_X_API_KEY", SECRET)
    argv = ["token", "--base-url", f"http://127.0.0.1:{port}/ica/rest", "--timeout", "1"]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), 10) == 1
    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert "no valid token" in line
    assert f"connection refused by 127.0.0.1:{port}" in line
    assert SECRET not in captured.err


async def test_details_api_key(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`details` mints a console JWT from the API key, then prints the details as JSON."""
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
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
    """`details` uses the deprecated ICA_PS_TOKEN as it is (no mint), with a warning."""
    async with aiohttp.ClientSession() as session:
        api = ConsoleTokenApi(session, server.base_url)
        answer = await api.create_token(ApiKey(server.api_key), return_session_token=True)
    assert answer.access_token is not None
    monkeypatch.setenv("ICA_PS_TOKEN", answer.access_token)
    monkeypatch.setenv("ICA_CONSOLE_URL", server.base_url)
    assert await asyncio.to_thread(main, ["details"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["uid"]
    assert "ICA_PS_TOKEN: deprecated" in captured.err
    assert server.counts["console.create"] == 1  # only the test's own


async def test_whoami_ica(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`whoami` mints a fresh token and shows its tenant, user, e-mail, expiry and source."""
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
    monkeypatch.setenv("ICAV2_BASE_URL", server.ica_base_url)
    assert await asyncio.to_thread(main, ["whoami"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert lines["tenant"].startswith("test-tenant (id ")
    assert re.fullmatch(r"[0-9a-f-]{36}", lines["user"])
    assert lines["e-mail"] == "(not in the token)"  # the local server's tokens carry none
    assert re.fullmatch(r"\S+Z \(in 9 min 5\d s\)", lines["expires"])
    assert lines["from"] == (
        "credential: ICAV2_X_API_KEY (environment); base URL: ICAV2_BASE_URL (environment)"
    )
    assert server.counts["ica.create"] == 1
    assert server.api_key not in out


async def test_whoami_json_console_with_email(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`whoami --console --json` with a console JWT (ICA_ACCESS_TOKEN): its claims, no request."""
    claims = {"tns": "acme", "tid": "aWNhOjEyMzQ=", "sub": "u-1", "email": "me@example.org"}
    monkeypatch.setenv("ICA_ACCESS_TOKEN", make_jwt(lifetime=600, claims=claims))
    monkeypatch.setenv("ICA_CONSOLE_URL", server.base_url)
    assert await asyncio.to_thread(main, ["whoami", "--console", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {k: data[k] for k in ("tenant", "tenant_id", "user", "email")} == {
        "tenant": "acme",
        "tenant_id": "1234",
        "user": "u-1",
        "email": "me@example.org",
    }
    assert 590 <= data["expires_in"] <= 600
    assert data["source"].startswith("credential: ICA_ACCESS_TOKEN (environment)")
    assert sum(server.counts.values()) == 0


async def test_token_console_jwt_as_it_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --console` prints a console JWT from ICA_ACCESS_TOKEN as it is, while it is
    valid; an expired one is exit 1 (the console cannot renew it)."""
    good = make_jwt(lifetime=600)
    monkeypatch.setenv("ICA_ACCESS_TOKEN", good)
    assert main(["token", "--console", "--base-url", "http://127.0.0.1:9"]) == 0
    assert capsys.readouterr().out.strip() == good
    assert main(["token", "--console", "--min-validity", "900"]) == 1
    assert "would not last --min-validity" in one_line_error(capsys.readouterr().err)
    monkeypatch.setenv("ICA_ACCESS_TOKEN", make_jwt(issued_at=NOW.timestamp(), lifetime=60))
    assert main(["token", "--console"]) == 1
    assert "has expired" in one_line_error(capsys.readouterr().err)


async def test_token_min_validity(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token --min-validity` prints a token that lasts that long, or exits 1 saying the
    server's tokens cannot (after one renewal, not a loop)."""
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
    monkeypatch.setenv("ICAV2_BASE_URL", server.ica_base_url)
    assert await asyncio.to_thread(main, ["token", "--json", "--min-validity", "300"]) == 0
    assert json.loads(capsys.readouterr().out)["expires_in"] >= 300
    assert await asyncio.to_thread(main, ["token", "--min-validity", "3600"]) == 1
    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert "less than --min-validity 3600 s (its tokens last 600 s)" in line
    assert captured.out == ""
    assert server.counts["ica.create"] <= 3


async def test_token_x_api_key_file(
    server: LocalIcaServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`--x-api-key-file` reads the key (a trailing newline is fine) and wins over
    ICAV2_X_API_KEY; a file others can read gets a warning, as ssh gives."""
    monkeypatch.setenv("ICAV2_X_API_KEY", SECRET)  # wrong: the file must win
    key_file = tmp_path / "ica.key"
    key_file.write_text(server.api_key + "\n")
    key_file.chmod(0o600)
    argv = ["token", "--x-api-key-file", str(key_file), "-s", server.base_url]
    assert await asyncio.to_thread(main, argv) == 0
    captured = capsys.readouterr()
    Token.from_jwt(captured.out.strip())
    assert captured.err == ""
    key_file.chmod(0o644)
    assert await asyncio.to_thread(main, argv) == 0
    err = capsys.readouterr().err
    assert f"warning: {key_file} holds a credential and is accessible by other users" in err
    assert f"chmod 600 {key_file}" in err
    assert server.api_key not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), ("", "is empty"), ("bad\x01key\n", "control character")],
)
def test_token_x_api_key_file_refused(
    content: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing, empty or malformed key file is a usage error that never shows its text."""
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    assert main(["token", "--x-api-key-file", str(path)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert message in line
    assert "bad" not in line.rsplit(":", 1)[-1]


async def test_token_server_url_from_environment(
    server: LocalIcaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ICAV2_SERVER_URL names the server as the icav2 CLI does: /ica/rest is added."""
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
    monkeypatch.setenv("ICAV2_SERVER_URL", server.base_url)
    assert await asyncio.to_thread(main, ["token"]) == 0
    Token.from_jwt(capsys.readouterr().out.strip())
    assert server.counts["ica.create"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["token", "--region", "use1"], "--region names a console region: add --console"),
        (["details", "--region", "Frankfurt"], "expected a console region such as aps2"),
        (["token", "-s", "ica.illumina.com", "--base-url", "https://x"], "not allowed with"),
    ],
)
def test_endpoint_flags_refused(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--region without --console, a region that is no region, two API roots: exit 2."""
    monkeypatch.setenv("ICAV2_X_API_KEY", SECRET)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_region_names_the_console_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--region use1` means https://use1.platform.illumina.com, and wins over the env."""
    from aioica_auth._cli.commands import resolve

    monkeypatch.setenv("ICAV2_X_API_KEY", SECRET)
    monkeypatch.setenv("ICA_CONSOLE_URL", "https://aps2.platform.illumina.com")
    args = build_parser().parse_args(["details", "--region", "use1"])
    found = resolve(args, os.environ, console=True)
    assert found.base_url == "https://use1.platform.illumina.com"
    assert found.source.endswith("base URL: --region")


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_cli_decode_stdin_and_argument() -> None:
    """`decode` from stdin (`-`) and as an argument: claims and human expiry, exit 0."""
    jwt_ = make_jwt(lifetime=86400)
    for proc in (run("decode", "-", stdin=jwt_ + "\n"), run("decode", jwt_)):
        assert proc.returncode == 0, proc.stderr
        assert '"aud": "ica"' in proc.stdout
        assert "(in 23 h 59 min; exp" in proc.stdout


def test_cli_decode_malformed() -> None:
    """A malformed JWT exits 1 with one line and no traceback."""
    proc = run("decode", "-", stdin="definitely.not.a-jwt\n")
    assert proc.returncode == 1
    assert "not a JWT" in one_line_error(proc.stderr)


@pytest.mark.slow
def test_cli_token_usage_errors() -> None:
    """Missing env, key and username both set, and a secret as an argument: exit 2."""
    missing = run("token")
    both = run("token", env=child_env(ICA_API_KEY=SECRET, ICA_USERNAME="me@example.org"))
    as_arg = run("token", "--api-key", SECRET)
    for proc in (missing, both, as_arg):
        assert proc.returncode == 2, proc.stderr
        one_line_error(proc.stderr)
        assert SECRET not in proc.stderr + proc.stdout
    assert "no ICA v2 credentials found; tried: ICAV2_X_API_KEY" in missing.stderr
    assert "both set" in both.stderr
    assert "--x-api-key-file" in as_arg.stderr


async def test_cli_token_against_server(server: LocalIcaServer) -> None:
    """`token`, `--header` and `--json` in subprocesses against the test's server; run at
    once, they share one mint through the token cache."""
    env = child_env(ICAV2_X_API_KEY=server.api_key, ICAV2_BASE_URL=server.ica_base_url)
    (rc1, plain, _), (rc2, header, _), (rc3, as_json, err) = await asyncio.gather(
        run_cli("token", env=env),
        run_cli("token", "--header", env=env),
        run_cli("token", "--json", env=env),
    )
    assert (rc1, rc2, rc3) == (0, 0, 0), err
    Token.from_jwt(plain.strip())
    assert header.startswith("Authorization: Bearer eyJ")
    assert json.loads(as_json)["expires_in"] > 500
    assert server.counts["ica.create"] == 1


async def test_cli_token_refused_no_secret(server: LocalIcaServer) -> None:
    """A wrong API key: exit 1, one line, the key not in stderr."""
    env = child_env(ICAV2_X_API_KEY=SECRET, ICAV2_BASE_URL=server.ica_base_url)
    rc, out, err = await run_cli("token", env=env)
    assert rc == 1
    assert "401" in one_line_error(err)
    assert SECRET not in err + out
    assert server.api_key not in err


async def test_cli_details_against_server(server: LocalIcaServer) -> None:
    """`details` with the deprecated username and password in a subprocess: JSON, a
    deprecation warning, the password never shown."""
    env = child_env(
        ICA_USERNAME=server.username, ICA_PASSWORD=server.password, ICA_CONSOLE_URL=server.base_url
    )
    rc, out, err = await run_cli("details", env=env)
    assert rc == 0, err
    assert json.loads(out)["username"] == server.username
    assert "warning: ICA_USERNAME + ICA_PASSWORD: deprecated" in err
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
    """`serve` prints URLs and credentials, serves, and exits 128 + the signal's number
    (130 on Ctrl-C) like the other commands."""
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
        banner = await _read_until(proc.stdout, r"export ICAV2_X_API_KEY=\S+ .*\n", 15)
        base = re.search(r"ICA v2 base URL:\s+(http://127\.0\.0\.1:\d+/ica/rest)", banner)
        key = re.search(r"export ICAV2_X_API_KEY=(\S+)", banner)
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
    assert proc.returncode == 128 + signum, err
    assert "stopped" in out.decode()
    assert err.decode() == ""


async def test_cli_serve_port_in_use() -> None:
    """`serve --port` on a busy port: one line, exit 1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        rc, _, err = await run_cli("serve", "--port", str(port), env=child_env())
    assert rc == 1
    assert "already in use" in one_line_error(err)


@pytest.mark.slow
def test_cli_demo_tiny() -> None:
    """A tiny `demo` exits 0 with a summary showing zero 401s and a token timeline."""
    proc = run("demo", "--tasks", "20", "--duration", "2", "--lifetime", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"401s reaching the tasks\s+0\n", proc.stdout)
    assert "Result: PASS" in proc.stdout
    assert len(re.findall(r"token [0-9a-f]{8}  minted", proc.stdout)) >= 2
    assert "\r" not in proc.stdout  # no progress line when stdout is not a TTY
    assert proc.stderr == ""


@pytest.mark.slow
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


# -- the CLI's shape: imports, the live line, the demo's summary, a newcomer's runs ----------


def test_import_cli_loads_no_server_code() -> None:
    """`import aioica_auth._cli.main` loads neither `aioica_auth.testing` nor `aiohttp.web` (nor
    PyYAML): `decode` and `token` do not pay for the local server."""
    code = (
        "import sys, aioica_auth._cli.main\n"
        "heavy = ('aioica_auth.testing', 'aiohttp.web', 'yaml', 'aioica_auth._cli.demo.run')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("columns", [20, 40, 60, 200])
def test_progress_line_fits_the_terminal(columns: int) -> None:
    """The live line never reaches the terminal's last column, so it never wraps (a wrapped
    line leaves a new line behind at every redraw); the request count stays on it."""
    stream = io.StringIO()
    line = ProgressLine(stream, columns=lambda: columns)
    for elapsed in (0.25, 7.5, 14.75):
        line(DemoProgress(elapsed, 15.0, 1_234_567, 12, 3, 0, 1000))
    drawn = stream.getvalue().split("\r")[1:]
    assert len(drawn) == 3
    assert all(len(text) <= columns - 1 for text in drawn)
    assert "\n" not in stream.getvalue()
    if columns >= 40:
        assert all("requests 1,234,567" in text for text in drawn)
    assert format_progress(DemoProgress(1.0, 15.0, 10, 1, 0, 0, 5)).endswith("waits 5")


async def test_run_demo_times_first_calls_apart() -> None:
    """Each task's first `headers()` call (which waits for the first mint) is timed apart
    from the steady state, whose p99 is then far below the mint's latency."""
    result = await run_demo(tasks=20, duration=1.5, lifetime=2.0, latency=0.05)
    assert result.first_calls == 20
    assert result.first_call_p50 is not None
    assert result.first_call_p50 >= 0.04
    assert result.headers_calls > result.first_calls
    assert result.latency_p99 is not None
    assert result.latency_p99 < result.first_call_p50


def _newcomer_env(home: Path, **extra: str) -> dict[str, str]:
    """Nothing but PATH, a fresh HOME and `extra`: what a newcomer's shell has."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), **extra}


async def test_newcomer_token_from_icav2_variables(server: LocalIcaServer, tmp_path: Path) -> None:
    """With only ICAV2_X_API_KEY and ICAV2_BASE_URL set, `token` prints a JWT."""
    env = _newcomer_env(
        tmp_path, ICAV2_X_API_KEY=server.api_key, ICAV2_BASE_URL=server.ica_base_url
    )
    rc, out, err = await run_cli("token", env=env)
    assert (rc, err) == (0, "")
    assert Token.from_jwt(out.strip()).claims["tns"] == "test-tenant"


async def test_newcomer_token_from_icav2_config_file(
    server: LocalIcaServer, tmp_path: Path
) -> None:
    """With only ~/.icav2/config.yaml (plaintext x-api-key, server-url), `token` prints a
    JWT; the same file open to others gets the ssh-style warning and still works."""
    config = tmp_path / ".icav2" / "config.yaml"
    config.parent.mkdir()
    config.write_text(
        f'access-token: ""\ncolormode: none\noutput-format: table\n'
        f"server-url: {server.base_url}\nx-api-key: {server.api_key}\n"
    )
    config.chmod(0o600)
    rc, out, err = await run_cli("token", env=_newcomer_env(tmp_path))
    assert (rc, err) == (0, "")
    Token.from_jwt(out.strip())
    config.chmod(0o644)
    rc, out, err = await run_cli("token", env=_newcomer_env(tmp_path))
    assert rc == 0
    assert "accessible by other users (mode 0644)" in err
    assert server.api_key not in err
    assert server.counts["ica.create"] == 1  # the second run adopts the cached token


# -- issue 19: files that hang or nest, variables named, usage and closed pipes --------------


def test_fifo_config_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO at ~/.icav2/config.yaml with ICAV2_X_API_KEY set (the base URL still to be
    found): `token` exits 2 at once naming the file; it used to block in `open` forever (the
    child is killed after 20 s, failing the test, never hanging the suite)."""
    home = tmp_path / "home"
    (home / ".icav2").mkdir()
    os.mkfifo(home / ".icav2" / "config.yaml")
    done = run("token", env=child_env(HOME=str(home), ICAV2_X_API_KEY=SECRET))
    assert done.returncode == 2, done.stderr
    line = one_line_error(done.stderr)
    assert "config.yaml is a named pipe (FIFO), not a regular file" in line
    assert SECRET not in done.stderr + done.stdout


def test_deeply_nested_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config nested past the recursion limit: exit 2 with the reason, not "unexpected
    RecursionError"."""
    config = tmp_path / "home" / ".icav2" / "config.yaml"
    config.parent.mkdir()
    config.write_text("x-api-key: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["token"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line == f"aioica-auth: error: {config} is nested too deeply to be a config file"


_EXPIRED = make_jwt(issued_at=1_000_000_000, lifetime=3600)
_GARBAGE = "garbage-not-a-jwt-0123456789"


@pytest.mark.parametrize(
    ("variable", "value", "argv", "said"),
    [
        pytest.param(
            "ICAV2_ACCESS_TOKEN",
            _EXPIRED,
            ["token"],
            "the JWT in ICAV2_ACCESS_TOKEN (environment) has expired (at 2001-09-09T02:46:40Z)",
            id="expired-token",
        ),
        pytest.param(
            "ICAV2_ACCESS_TOKEN",
            _EXPIRED,
            ["whoami", "--no-cache"],
            "the JWT in ICAV2_ACCESS_TOKEN (environment) has expired",
            id="expired-whoami",
        ),
        pytest.param(
            "ICAV2_ACCESS_TOKEN",
            _GARBAGE,
            ["token"],
            "ICAV2_ACCESS_TOKEN (environment) does not hold a JWT",
            id="garbage-token",
        ),
        pytest.param(
            "ICAV2_ACCESS_TOKEN",
            _GARBAGE,
            ["whoami"],
            "ICAV2_ACCESS_TOKEN (environment) does not hold a JWT",
            id="garbage-whoami",
        ),
        pytest.param(
            "ICA_ACCESS_TOKEN",
            _EXPIRED,
            ["token", "--console"],
            "the JWT in ICA_ACCESS_TOKEN (environment) has expired",
            id="expired-console",
        ),
    ],
)
def test_unusable_access_token_names_the_variable(
    variable: str,
    value: str,
    argv: list[str],
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An expired or garbage token in the variable people set: exit 1 naming the variable and
    what to do (it said "give the manager an ApiKey, BasicAuth or PsToken instead", or
    "unexpected ValueError"), before any request (the base URL is a closed port)."""
    monkeypatch.setenv(variable, value)
    base_url = "http://127.0.0.1:9" + ("" if "--console" in argv else "/ica/rest")
    assert main([*argv, "--base-url", base_url]) == 1
    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert said in line
    assert "set ICAV2_X_API_KEY (an API key)" in line
    assert "unexpected" not in line
    assert value not in captured.err + captured.out


@pytest.mark.parametrize("port", ["80000", "65536", "-1"])
def test_serve_port_out_of_range_is_a_usage_error(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --port 80000`: exit 2 with argparse's usage and message (it was "unexpected
    OverflowError" once the server tried to bind)."""
    assert main(["serve", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: aioica-auth serve")
    assert "aioica-auth: error: argument --port: must be" in err
    assert "unexpected" not in err


def _into_closed_pipe(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`python -m aioica_auth ARGS` with stdout a pipe whose reader has gone (`| head -0`
    that has already exited): every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "aioica_auth", *args],
            input=stdin,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=child_env(),
            cwd=ROOT,
            timeout=20,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize("jwt_", [make_jwt(lifetime=600), _EXPIRED], ids=["valid", "expired"])
def test_decode_into_a_closed_pipe_exits_quietly(jwt_: str) -> None:
    """`decode ... | head -0`: exit 141 (128 + SIGPIPE, as a command SIGPIPE killed) with
    nothing on stderr, whatever the token's validity; it was "unexpected BrokenPipeError"."""
    done = _into_closed_pipe("decode", "-", stdin=jwt_.encode())
    assert (done.returncode, done.stderr) == (141, b"")


def test_help_into_a_closed_pipe_is_quiet() -> None:
    """`--help | head -0`: no traceback, no "Exception ignored" (argparse drops the failed
    write itself, so the exit is 0 or 141)."""
    done = _into_closed_pipe("--help")
    assert done.returncode in (0, 141)
    assert done.stderr == b""
