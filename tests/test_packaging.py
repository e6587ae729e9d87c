"""The release's metadata, read from the checkout without building: one version, a dated
CHANGELOG entry for it, and the Project-URLs. .ci/run builds the sdist and the wheel and checks
what they hold (scripts/check_dist.py); these are the fast half, run with the suite."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import aioica_auth
from aioica_auth import _version
from aioica_auth._cli import main

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CHANGELOG = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
# "## [0.2.0] - 2026-12-07": Keep a Changelog's heading of a released version.
_RELEASED = re.compile(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", re.MULTILINE)


def test_the_version_has_one_place() -> None:
    """pyproject takes the version from _version.py (hatch), and the package exports it."""
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "aioica_auth/_version.py"
    assert aioica_auth.__version__ == _version.__version__


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`aioica-auth --version` prints `_version.__version__`."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"aioica-auth {_version.__version__}\n"


def test_the_newest_dated_changelog_entry_is_the_version() -> None:
    """The first dated CHANGELOG entry is the version --version prints, under an [Unreleased]
    heading, and every release heading has a date, newest first."""
    released = _RELEASED.findall(CHANGELOG)
    assert released, "no dated release in CHANGELOG.md"
    assert released[0][0] == _version.__version__
    assert CHANGELOG.index("## [Unreleased]") < CHANGELOG.index(f"## [{released[0][0]}]")
    headings = re.findall(r"^## \[([^\]]+)\].*$", CHANGELOG, re.MULTILINE)
    assert headings == ["Unreleased", *(version for version, _ in released)]
    dates = [date for _, date in released]
    assert dates == sorted(dates, reverse=True)


def test_project_urls() -> None:
    """The wheel's metadata points at the docs, the changelog, the source and the issues."""
    urls = PYPROJECT["project"]["urls"]
    assert set(urls) == {"Documentation", "Changelog", "Source", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Changelog"].endswith("/CHANGELOG.md")


def test_the_sdist_carries_tests_examples_and_docs() -> None:
    """The sdist is a checkout a user can test and read; the wheel is the package alone."""
    include = PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    for path in ("aioica_auth", "tests", "examples", "docs", "README.md", "CHANGELOG.md"):
        assert path in include
    assert PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["aioica_auth"]
    assert (ROOT / "aioica_auth" / "py.typed").exists()
