"""Write the Sphinx inventories the docs cross-link to, from the table below.

CI and the machines that build the docs reach no docs site, so intersphinx reads these files,
kept in the repository, instead of downloading each project's `objects.inv`. Each holds only the
objects our pages and signatures name, each with its real address on that project's site. Run
it after changing the table; `--check` fails when a committed file differs from what it writes.

    python docs/_inventories/make.py [--check]
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project file -> (project name, version, [(name, domain:role, uri relative to the site root)]).
# A uri ending in "$" ends with the name itself, as in Sphinx's own inventories.
INVENTORIES: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "python": (
        "Python",
        "3",
        [
            ("asyncio", "py:module", "library/asyncio.html#module-$"),
            ("asyncio.run", "py:function", "library/asyncio-runner.html#$"),
            ("asyncio.to_thread", "py:function", "library/asyncio-task.html#$"),
            ("asyncio.Semaphore", "py:class", "library/asyncio-sync.html#$"),
            ("asyncio.CancelledError", "py:exception", "library/asyncio-exceptions.html#$"),
            ("asyncio.AbstractEventLoop", "py:class", "library/asyncio-eventloop.html#$"),
            ("logging", "py:module", "library/logging.html#module-$"),
            ("logging.Filter", "py:class", "library/logging.html#$"),
            ("logging.Logger", "py:class", "library/logging.html#$"),
            ("logging.LogRecord", "py:class", "library/logging.html#$"),
            ("logging.getLogger", "py:function", "library/logging.html#$"),
            ("datetime.datetime", "py:class", "library/datetime.html#$"),
            ("datetime.timedelta", "py:class", "library/datetime.html#$"),
            ("collections.abc.Awaitable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Callable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Iterable", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Mapping", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Sequence", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.AsyncIterator", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.Generator", "py:class", "library/collections.abc.html#$"),
            ("collections.abc.AsyncGenerator", "py:class", "library/collections.abc.html#$"),
            ("os.PathLike", "py:class", "library/os.html#$"),
            ("pathlib.Path", "py:class", "library/pathlib.html#$"),
            ("random.Random", "py:class", "library/random.html#$"),
            ("uuid.UUID", "py:class", "library/uuid.html#$"),
            ("types.TracebackType", "py:class", "library/types.html#$"),
            ("typing.Any", "py:data", "library/typing.html#$"),
            ("typing.Literal", "py:data", "library/typing.html#$"),
            ("typing.Self", "py:data", "library/typing.html#$"),
            ("typing.Protocol", "py:class", "library/typing.html#$"),
            ("enum.Enum", "py:class", "library/enum.html#$"),
            ("str", "py:class", "library/stdtypes.html#$"),
            ("bytes", "py:class", "library/stdtypes.html#$"),
            ("dict", "py:class", "library/stdtypes.html#$"),
            ("list", "py:class", "library/stdtypes.html#$"),
            ("tuple", "py:class", "library/stdtypes.html#$"),
            ("int", "py:class", "library/functions.html#$"),
            ("float", "py:class", "library/functions.html#$"),
            ("bool", "py:class", "library/functions.html#$"),
            ("object", "py:class", "library/functions.html#$"),
            ("None", "py:data", "library/constants.html#$"),
            ("Exception", "py:exception", "library/exceptions.html#$"),
            ("OSError", "py:exception", "library/exceptions.html#$"),
            ("TimeoutError", "py:exception", "library/exceptions.html#$"),
            ("ValueError", "py:exception", "library/exceptions.html#$"),
            ("RuntimeError", "py:exception", "library/exceptions.html#$"),
            ("ImportError", "py:exception", "library/exceptions.html#$"),
            ("DeprecationWarning", "py:exception", "library/exceptions.html#$"),
            ("ResourceWarning", "py:exception", "library/exceptions.html#$"),
        ],
    ),
    "aiohttp": (
        "aiohttp",
        "3",
        [
            ("aiohttp.ClientSession", "py:class", "client_reference.html#$"),
            ("aiohttp.ClientTimeout", "py:class", "client_reference.html#$"),
            ("aiohttp.ClientResponse", "py:class", "client_reference.html#$"),
            ("aiohttp.ClientRequest", "py:class", "client_reference.html#$"),
            ("aiohttp.ClientError", "py:exception", "client_reference.html#$"),
            ("aiohttp.web.Application", "py:class", "web_reference.html#$"),
        ],
    ),
    # httpx's site is built by MkDocs: these are the real pages and anchors.
    "httpx": (
        "HTTPX",
        "0",
        [
            ("httpx.AsyncClient", "py:class", "api/#asyncclient"),
            ("httpx.Client", "py:class", "api/#client"),
            ("httpx.Request", "py:class", "api/#request"),
            ("httpx.Response", "py:class", "api/#response"),
            ("httpx.Auth", "py:class", "advanced/authentication/#custom-authentication-schemes"),
        ],
    ),
    "attrs": (
        "attrs",
        "25",
        [
            ("attrs.frozen", "py:function", "api.html#$"),
            ("attrs.define", "py:function", "api.html#$"),
            ("attrs.field", "py:function", "api.html#$"),
            ("attrs.evolve", "py:function", "api.html#$"),
        ],
    ),
}


def render(project: str, version: str, entries: list[tuple[str, str, str]]) -> bytes:
    """One inventory in Sphinx's version 2 format: four header lines, then zlib lines of
    `name domain:role priority uri display-name` ("-" displays the name itself)."""
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        f"# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in sorted(entries))
    return header.encode() + zlib.compress(body.encode(), 9)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for stem, (project, version, entries) in INVENTORIES.items():
        path = HERE / f"{stem}.inv"
        data = render(project, version, entries)
        if check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(path.name)
        else:
            path.write_bytes(data)
    if stale:
        print(f"stale inventories (run {Path(__file__).name}): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
