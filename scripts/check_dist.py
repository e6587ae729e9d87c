"""What the built sdist and wheel hold, checked before anyone installs them.

`python -m build` writes both into a folder; this reads them there (`python
scripts/check_dist.py DIST_DIR`) and fails, naming each problem, unless the sdist carries the
package with its tests, examples and docs (a checkout a user can test and read), the wheel
carries the package alone (with `py.typed`, so type checkers read its annotations), and the
wheel's metadata has the version of `aioica_auth/_version.py` and the four Project-URLs.
.ci/run calls it between the build and the wheel's smoke test.
"""

from __future__ import annotations

import argparse
import re
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

SDIST_HOLDS = ("aioica_auth/", "tests/", "examples/", "docs/", "README.md", "CHANGELOG.md")
PROJECT_URLS = ("Documentation", "Changelog", "Source", "Issues")


def version(checkout: Path) -> str:
    """The version written in `_version.py`, its one place."""
    text = (checkout / "aioica_auth" / "_version.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if found is None:
        msg = "aioica_auth/_version.py has no __version__ line"
        raise SystemExit(msg)
    return found.group(1)


def one(dist: Path, pattern: str) -> Path:
    """The one file of `dist` matching `pattern`."""
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        msg = f"expected one {pattern} in {dist}, found {[p.name for p in found]}"
        raise SystemExit(msg)
    return found[0]


def sdist_problems(sdist: Path) -> list[str]:
    """What the sdist lacks or should not hold."""
    with tarfile.open(sdist) as tar:
        # Each member is "<name>-<version>/path": the path inside the project.
        names = {name.partition("/")[2] for name in tar.getnames()}
    problems = [
        f"sdist: no {want}"
        for want in SDIST_HOLDS
        if not any(n == want or n.startswith(want) for n in names)
    ]
    problems += [f"sdist: holds {n}" for n in sorted(names) if "__pycache__" in n]
    return problems


def wheel_problems(wheel: Path, expected: str) -> list[str]:
    """What the wheel lacks, holds beyond the package, or says wrongly in its metadata."""
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        meta_name = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        metadata = whl.read(meta_name).decode() if meta_name else ""
    problems = [
        f"wheel: holds {n}"
        for n in names
        if not (n.startswith("aioica_auth/") or ".dist-info/" in n) or "__pycache__" in n
    ]
    if "aioica_auth/py.typed" not in names:
        problems.append("wheel: no aioica_auth/py.typed")
    if meta_name is None:
        return [*problems, "wheel: no METADATA"]
    meta = Parser().parsestr(metadata)
    if meta["Version"] != expected:
        problems.append(f"wheel: Version {meta['Version']}, but _version.py says {expected}")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    problems += [f"wheel: no Project-URL {label}" for label in PROJECT_URLS if label not in urls]
    return problems


def main(argv: list[str] | None = None) -> int:
    """Check DIST_DIR's sdist and wheel; print what is wrong and exit 1, or one ok line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path, help="the folder python -m build wrote into")
    args = parser.parse_args(argv)
    expected = version(Path(__file__).resolve().parent.parent)
    sdist = one(args.dist, f"aioica_auth-{expected}.tar.gz")
    wheel = one(args.dist, f"aioica_auth-{expected}-py3-none-any.whl")
    problems = sdist_problems(sdist) + wheel_problems(wheel, expected)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{sdist.name} and {wheel.name}: contents and metadata as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
