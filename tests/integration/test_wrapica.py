"""wrapica kept fresh by a manager: the README's recipe, run with wrapica itself against the
local server over loopback HTTP, for more than three token lifetimes.

wrapica (umccr) keeps one libica v3 `Configuration` in a module global,
`wrapica.utils.configuration.ICAV2_CONFIGURATION`, built on first use from
`ICAV2_ACCESS_TOKEN` and never renewed: every wrapica call makes its `ApiClient` from that
global, so its token expires with the first one. The recipe puts a fresh configuration in the
global: a `FreshConfiguration` over a `SyncTokenManager` (test_libica_fresh.py), or, in async
code, a plain one whose `access_token` the manager's `on_token` keeps current. The control is
wrapica's own way, which gets a 401 once the token it read has expired.

wrapica needs Python 3.12 or later (its Requires-Python); elsewhere this module is skipped,
and says why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from aioica_auth import ApiKey, SyncTokenManager, Token, TokenManager
from aioica_auth.testing import LocalIcaServer

if sys.version_info < (3, 12):
    pytest.skip(
        "wrapica needs Python 3.12 or later (its Requires-Python); "
        f"this is {sys.version_info.major}.{sys.version_info.minor}",
        allow_module_level=True,
    )
if importlib.util.find_spec("wrapica") is None:  # pragma: no cover
    pytest.skip(
        "wrapica is not installed (the test extra installs it on Python >= 3.12)",
        allow_module_level=True,
    )
from ..support import LazyModule, calls_until_refused
from .test_libica_fresh import PACE, fresh_class

pytestmark = pytest.mark.xdist_group("libica")  # one worker imports libica, once
# wrapica and libica load on first use (LazyModule): every xdist worker collects this module.
v3 = LazyModule("libica.openapi.v3")
wrapica_configuration = LazyModule("wrapica.utils.configuration")
wrapica_analysis = LazyModule("wrapica.project_analysis")

LIFETIME = 2.5  # seconds, as in test_libica_fresh.py
LIFETIMES = 3.3
DEADLINE = 40.0
THREADS = 2


@pytest.fixture
def wrapica_global(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], None]:
    """Set wrapica's global configuration (and ICAV2_ACCESS_TOKEN away) for one test."""
    monkeypatch.delenv("ICAV2_ACCESS_TOKEN", raising=False)

    def install(configuration: Any) -> None:
        monkeypatch.setattr("wrapica.utils.configuration.ICAV2_CONFIGURATION", configuration)

    install(None)
    return install


def requests_of(server: LocalIcaServer) -> list[tuple[float, str]]:
    """(time, Authorization) of every request wrapica made to the protected route."""
    return [
        (r.at, r.headers.get("Authorization", ""))
        for r in list(server.requests)
        if r.endpoint == "resource"
    ]


def crossed(server: LocalIcaServer) -> bool:
    """wrapica's requests span more than LIFETIMES lifetimes and four tokens."""
    seen = requests_of(server)
    return bool(seen) and (
        seen[-1][0] - seen[0][0] > LIFETIMES * LIFETIME and len({b for _, b in seen}) >= 4
    )


async def run_wrapica(server: LocalIcaServer) -> dict[str, Any]:
    """THREADS threads call wrapica's get_analysis_usage until the run has crossed more than
    LIFETIMES lifetimes (or DEADLINE passed); then what they saw."""
    stop = threading.Event()
    lock = threading.Lock()
    seen: dict[str, Any] = {"ok": 0, "unauthorized": 0, "errors": []}

    def drive() -> None:
        try:
            while not stop.is_set():
                try:
                    wrapica_analysis.get_analysis_usage(project_id="p", analysis_id="a")
                except v3.ApiException as exc:
                    if exc.status != 401:
                        raise
                    with lock:
                        seen["unauthorized"] += 1
                else:
                    with lock:
                        seen["ok"] += 1
                stop.wait(PACE)
        except Exception as exc:  # reported by the test, not lost in a thread
            with lock:
                seen["errors"].append(exc)

    started = time.monotonic()
    workers = [asyncio.ensure_future(asyncio.to_thread(drive)) for _ in range(THREADS)]
    try:
        while not crossed(server) and time.monotonic() - started < DEADLINE:
            if any(w.done() for w in workers):
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    seen["elapsed"] = time.monotonic() - started
    seen["tokens"] = len({b for _, b in requests_of(server)})
    seen["mints"] = server.counts["ica.create"]
    return seen


def assert_fresh_all_along(server: LocalIcaServer, seen: dict[str, Any]) -> None:
    assert seen["errors"] == []
    assert seen["unauthorized"] == 0
    assert seen["ok"] > 0
    assert crossed(server), seen
    assert server.statuses["resource", 401] == 0
    assert seen["elapsed"] / LIFETIME <= seen["mints"] <= 2 + seen["elapsed"] / (0.45 * LIFETIME)


@pytest.mark.timeout(90)
async def test_sync_recipe_keeps_wrapica_fresh(
    servers: Callable[..., Any], wrapica_global: Callable[[Any], None]
) -> None:
    """wrapica's global set to a FreshConfiguration: two threads of wrapica calls, more than
    three 2.5 s lifetimes, 0 401s, about one mint per L/2."""
    server = await servers(lifetime=LIFETIME)
    manager = SyncTokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url)
    try:
        wrapica_global(fresh_class("v3")(manager, host=server.ica_base_url))
        seen = await run_wrapica(server)
    finally:
        await asyncio.to_thread(manager.close)
    assert_fresh_all_along(server, seen)


@pytest.mark.timeout(90)
async def test_async_on_token_recipe_keeps_wrapica_fresh(
    servers: Callable[..., Any], wrapica_global: Callable[[Any], None]
) -> None:
    """wrapica's global set to a configuration that on_token keeps current, wrapica run in
    worker threads: more than three lifetimes, 0 401s."""
    server = await servers(lifetime=LIFETIME)
    configuration = v3.Configuration(host=server.ica_base_url)
    wrapica_global(configuration)

    def fresh(token: Token) -> None:
        configuration.access_token = token.value

    manager = TokenManager.for_ica(
        ApiKey(server.api_key), base_url=server.ica_base_url, on_token=fresh
    )
    async with manager:
        fresh(await manager.token())
        seen = await run_wrapica(server)
    assert_fresh_all_along(server, seen)


@pytest.mark.timeout(30)
async def test_control_wrapicas_own_way_gets_a_401(
    servers: Callable[..., Any],
    wrapica_global: Callable[[Any], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: wrapica given ICAV2_ACCESS_TOKEN builds its global once and, when that
    token expires, its calls get 401s."""
    server = await servers(lifetime=1.0)
    with SyncTokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url) as m:
        token = await asyncio.to_thread(m.token)
        await asyncio.to_thread(m.close)
    monkeypatch.setenv("ICAV2_ACCESS_TOKEN", token.value)
    monkeypatch.setenv("ICAV2_BASE_URL", server.ica_base_url)

    def until_refused() -> tuple[int, Exception | None]:
        return calls_until_refused(
            lambda: wrapica_analysis.get_analysis_usage(project_id="p", analysis_id="a"),
            v3.ApiException,
        )

    accepted, refusal = await asyncio.to_thread(until_refused)
    assert accepted > 0
    assert refusal is not None
    assert refusal.status == 401
    assert wrapica_configuration.ICAV2_CONFIGURATION is not None  # built once, kept
    assert server.statuses["resource", 401] == 1
