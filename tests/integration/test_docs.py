"""Docs that run: every README block marked `<!-- runnable -->` and every script in
`examples/` runs against the local server in a subprocess and exits 0."""

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
README_BLOCKS = BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
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


def test_readme_has_runnable_blocks() -> None:
    """The README keeps its runnable examples (so the test below is not vacuous)."""
    assert len(README_BLOCKS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "code", README_BLOCKS, ids=[f"block{i}" for i in range(len(README_BLOCKS))]
)
async def test_readme_block_runs(server: LocalIcaServer, code: str) -> None:
    """A runnable README block exits 0 against the local server and leaks no secret."""
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
