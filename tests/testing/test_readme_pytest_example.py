"""The docs' "Testing your own code" example (docs/testing.md) runs as written: its conftest
line, its pytest configuration and its test, in a fresh project of their own (nothing of ours)."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")


def block(marker: str, language: str) -> str:
    """The fenced block right after `<!-- marker -->` in the page."""
    found = re.search(rf"<!-- {marker} -->\s*```{language}\n(.*?)```", PAGE, re.DOTALL)
    assert found is not None, marker
    return found.group(1)


async def test_readme_pytest_example_runs_as_written(tmp_path: Path) -> None:
    """conftest.py, pyproject.toml and the test exactly as the page shows them, beside the
    code under test (examples/uploader.py): pytest passes, with no async test skipped."""
    (tmp_path / "conftest.py").write_text(block("pytest-conftest", "python"))
    (tmp_path / "pyproject.toml").write_text(block("pytest-config", "toml"))
    (tmp_path / "test_uploader.py").write_text(block("pytest-example", "python"))
    shutil.copy(ROOT / "examples" / "uploader.py", tmp_path / "uploader.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode()
    assert proc.returncode == 0, text
    assert "1 passed" in text
    assert "skipped" not in text
