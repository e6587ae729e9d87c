"""Shared fixtures: exact wire mocks (aioresponses), a log scan for secrets, and the
event-loop switch: ``AIOICA_TEST_LOOP=uvloop`` runs every async test on uvloop."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import aioresponses

from .support import find_secret, requested_loop, suite_cache

pytest_plugins = ["aioica_auth.testing.pytest_plugin", "tests.redis_server"]

# PYTHONDONTWRITEBYTECODE=1 makes every process of the suite compile and assert-rewrite its
# modules from source: each pytest-xdist worker (3 s of CPU more to collect) and each of the
# hundred child processes (the CLI, fleet workers, examples). Its aim is no __pycache__ in
# source trees, so instead the bytecode goes to the suite's cache, outside the checkout, from
# here on and in every process started after (the workers inherit the environment).
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    os.environ["PYTHONPYCACHEPREFIX"] = str(suite_cache() / "pycache")
    sys.pycache_prefix = os.environ["PYTHONPYCACHEPREFIX"]
    sys.dont_write_bytecode = False


# An unknown AIOICA_TEST_LOOP fails here, at conftest import: a typo must not quietly run the
# default loop.
if requested_loop() == "uvloop":
    import uvloop

    # pytest-asyncio >= 1.4 builds each test's loop with the factory this hook returns (the
    # older override of the `event_loop_policy` fixture is deprecated there, and deprecation
    # warnings are errors here). Defined only when asked for: a hook that exists must return
    # a factory, and without one pytest-asyncio keeps its default loop.
    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Every async test runs on uvloop's event loop."""
        return {"uvloop": uvloop.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, import (so compile and assert-rewrite) every test module once, in
    the controller, before the workers start: each worker imports them all to collect, and with
    a cold bytecode cache (a new clone, or PYTHONDONTWRITEBYTECODE above) eight workers would
    each compile them and hypothesis, about 4 s of CPU apiece. Warm, this costs about 1 s."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    here = Path(__file__).parent
    for path in sorted(here.rglob("test_*.py")):
        try:
            importlib.import_module(
                ".".join((__package__, *path.relative_to(here).with_suffix("").parts))
            )
        except (Exception, pytest.skip.Exception):  # its worker collects and reports it
            continue


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `slow` run first (a stable sort: the rest keep their order), so pytest-xdist
    starts the long ones while the short ones fill the other workers, and none starts last.

    Under `--dist loadgroup`, xdist has by now named each `xdist_group` test's group in its node
    id (`...@libica`); a test without it would run on any worker (a version of pytest that
    xdist cannot rename nodes in), so that is an error here, not a silent slowdown.
    """
    if config.getoption("loadgroup", default=False):
        lost = [
            i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid
        ]
        if lost:
            raise pytest.UsageError(
                f"--dist loadgroup is not in effect (pytest {pytest.__version__}, see the pin in "
                f"pyproject.toml): {len(lost)} xdist_group tests have no group, such as {lost[0]}"
            )
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without `stream_writer`, which aiohttp 3.14 needs."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class WireMock(aioresponses):  # type: ignore[misc]
    """aioresponses that works with every supported aiohttp."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().add(url, method, *args, **kwargs)

    def calls(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every request seen, as (method, URL with query, kwargs), in order."""
        out = []
        for (method, url), calls in self.requests.items():
            out.extend((method, str(url), call.kwargs) for call in calls)
        return out


@pytest.fixture
def wire() -> Iterator[WireMock]:
    """Intercept aiohttp requests (lets loopback through for local-server tests)."""
    with WireMock(passthrough=["http://127.0.0.1"]) as mock:
        yield mock


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session, closed after the test."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with aioica_auth logging at DEBUG, and over the whole suite no log
    record (message, arguments or exception text) holds anything shaped like a secret."""
    caplog.set_level(logging.DEBUG, logger="aioica_auth")
    yield
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1]) + " " + str(record.exc_info[1])
        leak = find_secret(text)
        assert leak is None, (
            f"secret-shaped text in a {record.name} log record: "
            f"{text[: text.index(leak)][:200]}<here>"
        )


@pytest.fixture
def servers(ica_server_factory: Any) -> Any:
    """A factory of started `LocalIcaServer`s (the shipped plugin's fixture, dogfooded)."""
    return ica_server_factory


@pytest.fixture
def server(ica_server: Any) -> Any:
    """One started `LocalIcaServer` with hour-long tokens (the shipped plugin's fixture)."""
    return ica_server


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    if shutil.which("openssl") is None:  # pragma: no cover
        pytest.skip("the openssl CLI is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
async def hanging() -> AsyncIterator[str]:
    """A loopback server whose handler never answers until the test ends."""
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    release.set()
    await runner.cleanup()
