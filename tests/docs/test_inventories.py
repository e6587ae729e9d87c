"""The intersphinx inventories kept in the repository are what `docs/_inventories/make.py`
writes from its table, and Sphinx can read them (no Sphinx needed to check the first)."""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ROOT / "docs" / "_inventories"


def make() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_inventories", INVENTORIES / "make.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_inventories_are_up_to_date() -> None:
    """Each committed `.inv` is byte for byte what make.py writes (`make.py --check`)."""
    assert make().main(["--check"]) == 0


def test_inventories_hold_the_objects_the_docs_name() -> None:
    """The four projects are there, with the objects our signatures and pages link to, each
    with an address on that project's site."""
    table = make().INVENTORIES
    assert set(table) == {"python", "aiohttp", "httpx", "attrs"}
    for stem, (_, _, entries) in table.items():
        data = (INVENTORIES / f"{stem}.inv").read_bytes()
        body = zlib.decompress(data.split(b"zlib.\n", 1)[1]).decode()
        names = {line.split(" ", 1)[0] for line in body.splitlines()}
        assert names == {name for name, _, _ in entries}
    python = {name for name, _, _ in table["python"][2]}
    assert {"asyncio", "logging.Filter", "datetime.datetime", "TimeoutError"} <= python
    aiohttp = {name for name, _, _ in table["aiohttp"][2]}
    assert {"aiohttp.ClientSession", "aiohttp.ClientTimeout"} <= aiohttp
    assert {"httpx.AsyncClient", "httpx.Auth"} <= {name for name, _, _ in table["httpx"][2]}
    assert "attrs.frozen" in {name for name, _, _ in table["attrs"][2]}
