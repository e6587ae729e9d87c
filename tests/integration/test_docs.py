"""Docs that run: every block marked `<!-- runnable -->` in the README and in `docs/**/*.md`,
and every script in `examples/`, runs against the local server in a subprocess and exits 0;
and the README stays the front door (short, with the quick-start commands CI runs)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from pathlib import Path

import aiohttp
import pytest

from aioica_auth import ApiKey, ConsoleTokenApi
from aioica_auth.testing import LocalIcaServer

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- runnable -->\s*```python\n(.*?)```", re.DOTALL)
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)
DOC_FILES = [ROOT / "README.md", *PAGES]
# (where, code): "docs/clients.md:block1" is the second runnable block of that page.
DOC_BLOCKS = [
    (f"{path.relative_to(ROOT).as_posix()}:block{i}", code)
    for path in DOC_FILES
    for i, code in enumerate(BLOCK.findall(path.read_text(encoding="utf-8")))
]
# The README's two quick-start commands: CI runs the test command verbatim (.ci/run greps it).
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest"
)
DEMO_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/aioica-auth demo"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("test_"))
EXAMPLE_TESTS = sorted((ROOT / "examples").glob("test_*.py"))
# What an example imports beyond the test extras' floor: without it, it is skipped, not failed
# (CI runs the suite once without OpenTelemetry).
EXAMPLE_NEEDS = {"otel_console.py": "opentelemetry.sdk"}


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


async def run_python(args: list[str], server: LocalIcaServer) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        created = await ConsoleTokenApi(session, server.base_url).create_token(
            ApiKey(server.api_key), return_session_token=True
        )
    env = os.environ | {
        "ICAV2_X_API_KEY": server.api_key,
        "ICAV2_BASE_URL": server.ica_base_url,
        "ICA_CONSOLE_URL": server.base_url,
        "ICA_PS_TOKEN": created.access_token or "",
        "PYTHONWARNINGS": "error",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(45):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode()


def test_docs_have_runnable_blocks() -> None:
    """The README and the docs keep their runnable examples (so the test below is not
    vacuous): the README's first program, and at least the eight the README had before the
    docs site took them over."""
    where = [name for name, _ in DOC_BLOCKS]
    assert any(name.startswith("README.md:") for name in where)
    assert sum(name.startswith("docs/") for name in where) >= 8


def test_readme_is_the_front_door() -> None:
    """The README is at most 250 lines, holds both quick-start commands verbatim, says how to
    install a package that is not on PyPI, and each of its relative links leads to a file."""
    lines = README.splitlines()
    assert len(lines) <= 250
    assert TEST_COMMAND in lines
    assert any(DEMO_COMMAND in line for line in lines)
    assert "not on PyPI" in README
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert links
    assert [link for link in links if not (ROOT / link).exists()] == []


@pytest.mark.slow
@pytest.mark.parametrize("code", [c for _, c in DOC_BLOCKS], ids=[w for w, _ in DOC_BLOCKS])
async def test_doc_block_runs(server: LocalIcaServer, code: str) -> None:
    """A runnable block of the README or the docs exits 0 against the local server and leaks
    no secret."""
    status, out = await run_python(["-c", code], server)
    assert status == 0, out
    assert server.api_key not in out


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
async def test_example_runs(server: LocalIcaServer, script: Path) -> None:
    """Each script in examples/ exits 0 against the local server and leaks no secret."""
    needs = EXAMPLE_NEEDS.get(script.name)
    if needs is not None and not importable(needs):
        pytest.skip(f"{script.name} needs {needs}, which is not installed")
    args = [str(script), "200"] if script.name == "uploader.py" else [str(script)]
    status, out = await run_python(args, server)
    assert status == 0, out
    assert server.api_key not in out
    assert out.strip()


@pytest.mark.slow
@pytest.mark.parametrize("tests", EXAMPLE_TESTS, ids=[p.name for p in EXAMPLE_TESTS])
async def test_example_test_suite_passes(tests: Path) -> None:
    """The README's "testing your own code" example is a real pytest file, and it passes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",  # in one process: the checkout's addopts would start xdist's workers for two tests
        "0",
        str(tests),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(50):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, out.decode()
    assert b" passed" in out
