"""Conformance with a console v1 client no one here wrote: libica 2.5.0's generated
`libconsole` (the last libica release that ships it) against `LocalIcaServer`.

libica 2.5.0 cannot share an environment with the libica 3.3 of our test extras, so the suite
makes a side virtual environment for it, with this interpreter (`sys.executable -m venv`), in
the user's cache directory (`~/.cache/aioica_auth-tests`, never inside the checkout), keyed by
the libica and Python versions and reused by later runs.
`tests/libconsole_driver.py` runs there: it drives every console endpoint, each of the nine
`create_token` parameters (`True` and `False` included) and each credential, parses every answer
with libconsole's own models, and reports what it got as JSON. These tests check that report.

Only when PyPI cannot be reached (and not in CI, where CI is set) are they skipped, saying so.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aioica_auth.testing import LocalIcaServer

from ..support import suite_cache

LIBICA = "2.5.0"
DRIVER = Path(__file__).parents[1] / "libconsole_driver.py"
#: The side venv lives in the suite's cache, outside the checkout: built once, reused by every
#: later run and clone.
PY = f"py{sys.version_info[0]}{sys.version_info[1]}"
VENV = suite_cache() / f"libconsole-venv-libica{LIBICA}-{PY}"
READY = "aioica-auth-ready"  # written last: a venv without it is half-built
NETWORK_ERRORS = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|Name or "
    r"service not known|Network is unreachable|Connection refused|Max retries exceeded|"
    r"ConnectTimeoutError|Read timed out|No route to host",
)
TWO_TENANTS = ("test-tenant", "beta")
SCOPES = ["GDS.FILES.READ", "BSSH.RUNS.READ"]
# The side venv's first build downloads libica 2.5.0 and its dependencies (~15 s on a warm
# pip cache); later runs reuse it and take about a second.
# One xdist worker runs them all: the venv fixture is per module and per worker, and eight
# workers building it at once on a new machine cost 50 s each.
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow, pytest.mark.xdist_group("libconsole")]

JWT = {"status": 201, "model": "TokenResponse", "token_type": "Bearer", "kind": "jwt"}
PS = {"status": 201, "model": "TokenResponse", "token_type": "psToken", "kind": "ps"}
DETAILS = {"status": 200, "model": "TokenDetailResponse", "content_type": "application/json"}
NO_CONTENT = {"status": 204, "model": None}


def refused(status: int, message: str | None = None) -> dict[str, Any]:
    """A refusal libconsole parsed into its ErrorResponse (no unknown keys)."""
    code = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden"}[status]
    body: dict[str, Any] = {"code": code, "details": []}
    if message is not None:
        body["message"] = message
    expected = {"error": "ApiException", "status": status, "content_type": "application/json"}
    return {**expected, "body": body, "unknown_keys": []}


EMPTY_401 = {"error": "ApiException", "status": 401, "content_type": None, "body_bytes": 0}
NO_REFRESH = "The token is no longer able to be refreshed."

#: Every case the driver runs, in its order, and what libconsole must have made of the answer
#: (a subset of its report; `claims` a subset of the JWT's claims).
EXPECTED: dict[str, dict[str, Any]] = {
    "create x_api_key": {**JWT, "claims": {"tns": "test-tenant", "aud": "ica"}},
    "create api_key (obsolete query)": JWT,
    "create client_id": {**JWT, "claims": {"azp": "my-app"}},
    "create domain": {**JWT, "claims": {"tns": "beta"}},
    "create data": {**JWT, "claims": {"session": "meta-1"}},
    "create scopes": {**JWT, "claims": {"scopes": SCOPES}},
    "create cwid": {**JWT, "claims": {"cwid": "wg-1"}},
    "create cid": {**JWT, "claims": {"cid": "project-9"}},
    "create return_session_token=True": PS,
    "create return_session_token=False": JWT,
    "create all nine, False": {
        **JWT,
        "claims": {
            "azp": "my-app",
            "tns": "beta",
            "session": "meta-2",
            "scopes": SCOPES,
            "cwid": "wg-2",
            "cid": "project-2",
        },
    },
    "create all nine, True": PS,
    "create Basic username:password": {**JWT, "claims": {"tns": "test-tenant"}},
    "create Basic with apiKey": {**JWT, "claims": {"tns": "test-tenant"}},
    "create Basic, return_session_token=True": PS,
    "create Bearer psToken": JWT,
    "create Bearer JWT + x_api_key + cid": {**JWT, "claims": {"cid": "project-3"}},
    "create wrong x_api_key": refused(401),
    "create no credentials": refused(401),
    "create unknown domain": refused(403),
    "details Bearer JWT": DETAILS,
    "details Bearer psToken": DETAILS,
    "details Basic username:password": DETAILS,
    "details Basic with apiKey": DETAILS,
    "details no credentials": EMPTY_401,
    "details Bearer garbage": EMPTY_401,
    "refresh Bearer psToken": PS,
    "refresh Basic username:password": PS,
    "refresh Bearer JWT": PS,
    "refresh no credentials": refused(401),
    "refresh Bearer garbage": refused(401),
    "revoke no credentials": refused(401),
    "revoke Bearer garbage": refused(401),
    "revoke Basic wrong password": refused(401),
    "revoke psToken, Basic with apiKey": NO_CONTENT,
    "refresh revoked psToken, Bearer itself": refused(401, NO_REFRESH),
    "revoke JWT, Bearer itself": NO_CONTENT,
    "details revoked JWT": EMPTY_401,
}


# -- the side virtual environment -----------------------------------------------------------


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtual environment."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output (no shell, no stdin)."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
    )


def give_up(what: str, result: subprocess.CompletedProcess[str]) -> None:
    """Fail, or skip when PyPI is unreachable outside CI, with pip's own last lines."""
    output = (result.stdout + result.stderr).strip()
    tail = "\n".join(output.splitlines()[-15:])
    network = NETWORK_ERRORS.search(output)
    if network is not None and not os.environ.get("CI"):
        pytest.skip(f"PyPI is unreachable, so libica {LIBICA} cannot be installed ({network[0]})")
    pytest.fail(f"{what} failed (exit {result.returncode}):\n{tail}", pytrace=False)


def build_venv() -> Path:
    """Make the side venv with libica==LIBICA in a scratch folder, then move it in place."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    scratch = VENV.with_name(f"{VENV.name}.building-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        made = run([sys.executable, "-m", "venv", str(scratch)], timeout=120)
        if made.returncode != 0:
            give_up(f"{sys.executable} -m venv", made)
        python = str(venv_python(scratch))
        pip = [python, "-I", "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        installed = run([*pip, "--timeout", "30", "--retries", "2", f"libica=={LIBICA}"], 240)
        if installed.returncode != 0:
            give_up(f"pip install libica=={LIBICA} into the side venv", installed)
        check = (
            "import libica.openapi.libconsole, importlib.metadata as m; print(m.version('libica'))"
        )
        probe = run([python, "-I", "-c", check], timeout=60)
        if probe.returncode != 0 or probe.stdout.strip() != LIBICA:
            give_up("importing libconsole in the side venv", probe)
        (scratch / READY).write_text(f"libica=={LIBICA}\n")
        try:
            scratch.rename(VENV)
        except OSError:
            if not (VENV / READY).exists():  # not another run that finished first
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return venv_python(VENV)


@pytest.fixture(scope="module")
def libconsole_python() -> Path:
    """The side venv's interpreter, built on first use and reused after."""
    python = venv_python(VENV)
    if (VENV / READY).exists() and python.exists():
        return python
    shutil.rmtree(VENV, ignore_errors=True)  # half-built, or its interpreter is gone
    return build_venv()


# -- one run of the driver ------------------------------------------------------------------


def basic_key_header(key: str) -> str:
    """The Authorization libconsole sends for Configuration(username=key, password="")."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


async def drive(python: Path) -> dict[str, Any]:
    """Run the driver against a fresh two-tenant server; its report and what the server saw."""
    async with LocalIcaServer(tenants=TWO_TENANTS) as server:
        settings = {
            "base_url": server.base_url,
            "api_key": server.api_key,
            "username": server.username,
            "password": server.password,
        }
        proc = await asyncio.create_subprocess_exec(
            str(python),
            "-I",
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(60):
                out, err = await proc.communicate(json.dumps(settings).encode())
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        secrets = (server.api_key, server.password)
        errors = err.decode(errors="replace")
        for secret in secrets:
            errors = errors.replace(secret, "<secret>")
        assert proc.returncode == 0, f"the driver failed:\n{errors[-3000:]}"
        report: dict[str, Any] = json.loads(out)
        # What libconsole sent, reduced to facts that hold no secret.
        sent = []
        for request in server.requests:
            auth = request.headers.get("Authorization", "")
            sent.append(
                {
                    "endpoint": request.endpoint,
                    "query": [(k, v) for k, v in request.query if k != "api_key"],
                    "api_key_query": any(k == "api_key" for k, _ in request.query),
                    "scheme": auth.partition(" ")[0],
                    "basic_key": auth == basic_key_header(server.api_key),
                    "x_api_key": request.headers.get("X-API-Key") == server.api_key,
                    "content_type": request.headers.get("Content-Type"),
                }
            )
        report["sent"] = sent
        report["statuses"] = dict(server.statuses)
    return report


@pytest.fixture(scope="module")
def report(libconsole_python: Path) -> dict[str, Any]:
    """The driver's report of one run (each test checks a part of it)."""
    return asyncio.run(drive(libconsole_python))


# -- the checks -----------------------------------------------------------------------------


def test_libconsole_ran_every_case_in_libica_2_5_0(report: dict[str, Any]) -> None:
    """The side venv holds libica 2.5.0 and the driver ran exactly the expected cases."""
    assert report["libica"] == LIBICA
    assert [case["name"] for case in report["cases"]] == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_libconsole_case(report: dict[str, Any], name: str) -> None:
    """libconsole gets, and parses with its own models, the answer the spec gives this case."""
    case = next(c for c in report["cases"] if c["name"] == name)
    expected = dict(EXPECTED[name])
    claims = expected.pop("claims", {})
    body = expected.pop("body", {})
    assert {k: case.get(k) for k in expected} == expected
    assert {k: case.get("claims", {}).get(k) for k in claims} == claims
    assert {k: case.get("body", {}).get(k) for k in body} == body
    if body:
        assert isinstance(case["body"]["message"], str)
        assert case["body"]["message"]
    if case.get("model") == "TokenDetailResponse":
        fields = case["fields"]
        assert fields["username"] == "user@example.org"
        assert {"id", "name"} <= set(fields["domain"])
        assert fields["current_workgroup"]["id"]


def test_libconsole_sends_python_booleans_and_csv_scopes(report: dict[str, Any]) -> None:
    """libconsole sends returnSessionToken as Python's True/False (both accepted) and scopes
    as one comma-separated value."""
    creates = [s for s in report["sent"] if s["endpoint"] == "console.create"]
    flags = [v for s in creates for k, v in s["query"] if k == "returnSessionToken"]
    assert sorted(set(flags)) == ["False", "True"]
    scopes = [v for s in creates for k, v in s["query"] if k == "scopes"]
    assert scopes
    assert set(scopes) == {",".join(SCOPES)}
    assert report["statuses"].get(("console.create", 400), 0) == 0


def test_libconsole_presents_each_credential_as_the_spec_says(report: dict[str, Any]) -> None:
    """X-API-Key, the obsolete api_key query, Basic (username:password and <key>:) and Bearer
    all reach the server as sent, and the body endpoints send application/json."""
    sent = report["sent"]
    assert any(s["x_api_key"] for s in sent)
    assert any(s["api_key_query"] and not s["x_api_key"] for s in sent)
    assert {s["scheme"] for s in sent} == {"", "Basic", "Bearer"}
    assert any(s["basic_key"] for s in sent if s["endpoint"] == "console.create")
    assert any(s["basic_key"] for s in sent if s["endpoint"] == "console.details")
    bodies = [s for s in sent if s["endpoint"] in ("console.refresh", "console.revoke")]
    assert bodies
    assert {s["content_type"] for s in bodies} == {"application/json"}
    endpoints = {s["endpoint"] for s in sent}
    assert endpoints == {"console.create", "console.details", "console.refresh", "console.revoke"}
