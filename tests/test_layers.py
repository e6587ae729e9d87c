"""The package's layers (DESIGN section 2, LAYOUT.md): who may import whom, no import circle, no
module over 450 lines, and a command line that loads neither the test server nor aiohttp.web.

Every import counts, lazy and `TYPE_CHECKING` ones included: each is a dependency of the
design, whether or not it runs at import time.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aioica_auth"
VALUES = frozenset(
    {
        "_errors",
        "_checks",
        "_credentials",
        "_models",
        "_token",
        "_clock",
        "_version",
        "_events",
        "_observe",
    }
)
CORE = ("_wire", "_discovery", "_lifecycle", "_fleet", "_adapters", "_manager", "_sync")
# layer -> the layers it may import besides its own (LAYOUT.md section 2), with two departures:
# `_sync` is a façade like `_manager` and names the two base URLs in its signatures, so it may
# see `_wire`; and the adapters put a bearer on HTTP requests, so they may read `_wire`'s
# helpers for them (the aiohttp middleware tells a `.netrc` credential by `_wire`'s rules).
ALLOWED: dict[str, frozenset[str]] = {
    "values": frozenset(),
    "_wire": frozenset({"values"}),
    "_discovery": frozenset({"values", "_wire"}),
    "_lifecycle": frozenset({"values", "_wire"}),
    "_fleet": frozenset({"values", "_lifecycle"}),
    "_adapters": frozenset({"values", "_wire", "_lifecycle"}),
    "_manager": frozenset({"values", *CORE[:5]}),
    "_sync": frozenset({"values", "_wire", "_manager"}),
    "_cli": frozenset({"values", *CORE, "testing", "package"}),
    "testing": frozenset(),
    "package": frozenset({"values", *CORE, "_cli"}),  # __init__ and __main__
}
MAX_LINES = 450


def module_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "package"
    head = parts[1]
    return "values" if head in VALUES else head


def imports_of(path: Path) -> dict[str, int]:
    """Every aioica_auth module `path` imports (relative imports resolved), with a line number."""
    module, found = module_of(path), {}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from . import x` may name a module: count it when there is such a file
            targets = [base] + [
                f"{base}.{a.name}" for a in node.names if known(f"{base}.{a.name}") and base
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == "aioica_auth":
                found.setdefault(target, node.lineno)
    return found


def known(module: str) -> bool:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = {module_of(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: imports_of(p) for m, p in MODULES.items()}


def test_every_import_follows_the_layer_table() -> None:
    broken = [
        f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} -> {target}"
        for m, targets in GRAPH.items()
        for target, line in targets.items()
        if (theirs := layer_of(target)) != (mine := layer_of(m))
        and theirs not in ALLOWED[mine]
        # a package's __init__ is its own layer's doorway; the root package is everyone's
        and target != "aioica_auth"
    ]
    assert not broken, "\n".join(broken)


def test_the_module_graph_has_no_circle() -> None:
    """Module-level circles; a package's `__init__` re-exporting its own modules is not one."""
    edges = {
        m: {t for t in targets if t in MODULES and t != m and not m.startswith(t + ".")}
        for m, targets in GRAPH.items()
    }
    circles = []
    for start in sorted(edges):  # every circle through `start` among later modules, once
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for target in sorted(edges[node]):
                if target == start:
                    circles.append(" -> ".join([*path, start]))
                elif target > start and target not in path:
                    stack.append((target, [*path, target]))
    assert not circles, "\n".join(circles)


def test_the_top_level_holds_only_values_and_the_two_facades() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= {"__init__", "__main__", "_manager", "_sync", *VALUES}, sorted(top)
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        *CORE[:5],
        "_cli",
        "testing",
    }


@pytest.mark.parametrize("path", sorted(MODULES.values()), ids=lambda p: p.name)
def test_no_module_is_over_450_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)}: {lines} lines"


def test_the_command_line_loads_neither_the_test_server_nor_aiohttp_web() -> None:
    code = (
        "import sys, aioica_auth._cli\n"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('aioica_auth.testing', 'aiohttp.web'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]", out.stdout
