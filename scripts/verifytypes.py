"""The typed-API gate: pyright's type completeness of the public API must be 100%.

`pyright --verifytypes aioica_auth --ignoreexternal` reads the package as a user's type checker
does, from what is installed beside this Python, and scores every public symbol whose type a
checker cannot know (a missing annotation, an inferred type, a type from a package that is not
installed). This prints the score and each symbol that is not fully known with pyright's
reason, and exits 1 below 1.0 (numpy, polars and trio keep the same bar in their CI).

Run it with the Python whose environment is to be judged: `.venv/bin/python
scripts/verifytypes.py` (the extras installed), or a venv holding the wheel alone (no redis,
no httpx: the public signatures must not depend on the optional packages). pyright comes from
the PyPI package `pyright` (the test extra), which carries pyright and runs it on node.

Exit codes: 0 at 100%, 1 below, 2 when pyright could not be run or said nothing readable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE = "aioica_auth"


def pyright_command() -> list[str]:
    """pyright from this Python's environment (its script beside the interpreter), else PATH."""
    beside = Path(sys.executable).parent / "pyright"
    found = str(beside) if beside.exists() else shutil.which("pyright")
    if found is None:
        msg = "pyright is not installed: pip install 'pyright==1.1.414' (the test extra has it)"
        raise SystemExit(msg)
    return [found]


def verify(package: str) -> dict[str, Any]:
    """pyright's JSON report of `package`, judged against this Python's environment."""
    argv = [
        *pyright_command(),
        "--verifytypes",
        package,
        "--ignoreexternal",
        "--outputjson",
    ]
    # pyright finds the environment through the `python` on PATH (its --pythonpath is not
    # read by --verifytypes): this one's first. Exit code 1 only says "not complete" (or an
    # error): the JSON says which.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path}
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)  # noqa: S603
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(f"pyright said nothing readable (exit {proc.returncode}):\n")
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(2) from None
    return report


def unknown(report: dict[str, Any]) -> list[str]:
    """The symbols whose type is not fully known, each with pyright's reasons."""
    lines = []
    for symbol in report["typeCompleteness"]["symbols"]:
        if symbol["isTypeKnown"]:
            continue
        reasons = [
            " ".join(d["message"].split())
            for d in symbol["diagnostics"]
            if d["severity"] == "error"
        ]
        lines.append(f"  {symbol['name']}" + "".join(f"\n      {r}" for r in reasons))
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the score and what lowers it; 0 at 100%, 1 below."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=PACKAGE, help=f"the package (default {PACKAGE})")
    args = parser.parse_args(argv)
    report = verify(args.package)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    for diagnostic in errors:  # "No py.typed file found", a package that is not installed
        print(f"pyright: {diagnostic['message']}", file=sys.stderr)
    completeness = report["typeCompleteness"]
    counts = completeness["exportedSymbolCounts"]
    score = float(completeness["completenessScore"])
    print(
        f"{args.package}: type completeness {score:.2%} "
        f"({counts['withKnownType']} exported symbols known, {counts['withAmbiguousType']} "
        f"ambiguous, {counts['withUnknownType']} unknown; pyright {report['version']})"
    )
    missing = unknown(report)
    if missing:
        print("not fully known:", *missing, sep="\n")
    if errors and not counts["withKnownType"]:
        return 2
    return 0 if score >= 1.0 and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
