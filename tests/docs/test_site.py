"""The docs site builds with warnings as errors, and documents every public name: its object
inventory (`objects.inv`) has an entry for each name of `aioica_auth.__all__` and
`aioica_auth.testing.__all__`."""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import aioica_auth
import aioica_auth.testing

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("docs-site")]


def inventory_names(path: Path) -> set[str]:
    """The names of the Python objects in a Sphinx inventory (version 2: four header lines,
    then zlib-compressed lines of `name domain:role priority uri display-name`)."""
    data = path.read_bytes()
    header, _, compressed = data.partition(b"compressed using zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2\n"), header[:40]
    lines = zlib.decompress(compressed).decode().splitlines()
    found = (re.match(r"(.+?)\s+(py:\S+)\s+-?\d+\s", line) for line in lines)
    return {m.group(1) for m in found if m}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The site built into a temporary directory, and what Sphinx warned (nothing, we hope)."""
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    pytest.importorskip("myst_parser")
    out = tmp_path_factory.mktemp("site")
    warnings = out / "warnings.txt"
    html = out / "html"
    build = ["-W", "-q", "-E", "-b", "html", "-w", str(warnings), str(ROOT / "docs"), str(html)]
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", *build],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return html, warnings.read_text(encoding="utf-8") if warnings.exists() else ""


@pytest.mark.timeout(120)  # the build takes about 10 s here, up to 30 s on a loaded machine
def test_the_site_builds_without_a_warning(site: tuple[Path, str]) -> None:
    """`python -m sphinx -W -b html docs ...` succeeds and says nothing."""
    html, warnings = site
    assert warnings == ""
    assert (html / "index.html").exists()
    assert (html / "api.html").exists()


@pytest.mark.timeout(120)
def test_every_public_name_has_an_api_entry(site: tuple[Path, str]) -> None:
    """Each name of `aioica_auth.__all__` and `aioica_auth.testing.__all__` is in the built
    site's object inventory, so the API reference documents it."""
    html, _ = site
    documented = inventory_names(html / "objects.inv")
    public = [f"aioica_auth.{name}" for name in aioica_auth.__all__]
    public += [f"aioica_auth.testing.{name}" for name in aioica_auth.testing.__all__]
    missing = [name for name in public if name not in documented]
    assert missing == []
