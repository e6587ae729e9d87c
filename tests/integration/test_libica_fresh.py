"""libica kept fresh by a manager: the README's recipes, run with libica 3.3's generated ICA v2
clients `v2` and `v3` (both synchronous, on urllib3) against the local server over loopback
HTTP, for more than three token lifetimes.

libica builds a request's `Authorization` from `Configuration.access_token`, read again for
every request (`Configuration.auth_settings()`), so a fresh value there is all it needs:

- synchronous code: `FreshConfiguration`, whose `access_token` is the `SyncTokenManager`'s
  current token, read as each request is built;
- async code that runs libica in threads: the `TokenManager`'s `on_token` sets
  `configuration.access_token` to each new token.

Each runs v2 and v3 clients side by side (two threads each, one shared `Configuration` per
client) against a protected route that answers 401 to an expired token: 0 401s, and about one
mint per refresh interval (L/2). The control: a token read once, the way libica's own
examples write it, gets a 401 from the same route once it expires, so that 0 means something.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib.util
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from aioica_auth import ApiKey, SyncTokenManager, Token, TokenManager, TokenUnavailableError
from aioica_auth.testing import LocalIcaServer

from ..support import LazyModule, calls_until_refused, wait_until

if importlib.util.find_spec("libica.openapi.v3") is None:  # pragma: no cover
    pytest.skip("libica is not installed (the test extra installs it)", allow_module_level=True)
pytestmark = pytest.mark.xdist_group("libica")  # one worker imports libica, once

# seconds: the manager renews at L/2, with L/10 + L/20 in hand when it must wait. 3.5 s, not
# 2.5 s: under coverage on a busy 2-core machine a libica thread could be held for over a
# second between reading the token and sending it (3 401s seen with 2.5 s).
LIFETIME = 3.5
LIFETIMES = 3.3  # how many lifetimes each run lasts, at least
DEADLINE = 40.0  # seconds a run may take before the test gives up on it
THREADS = 2  # per client
# Seconds each thread waits between its calls: ~100 calls a second per thread samples every
# moment of the run for a stale token, without spending the suite's CPU on a busy loop.
PACE = 0.01

#: Per generated client: its package and the module of a route's API class every client has
#: (libica's modules are imported on first use: LazyModule).
CLIENTS: dict[str, tuple[Any, Any]] = {
    name: (
        LazyModule(f"libica.openapi.{name}"),
        LazyModule(f"libica.openapi.{name}.api.project_analysis_api"),
    )
    for name in ("v2", "v3")
}


def client_classes(client: str) -> tuple[Any, Any]:
    """One generated client's package and its `ProjectAnalysisApi` class."""
    package, api_module = CLIENTS[client]
    return package, api_module.ProjectAnalysisApi


def fresh_configuration(base: type) -> type:
    """The README's `FreshConfiguration`, over either client's `Configuration`."""

    class FreshConfiguration(base):  # type: ignore[misc,valid-type]
        """A libica `Configuration` whose `access_token` is the manager's current token.

        libica reads `access_token` for every request, so each request gets a fresh token.
        """

        def __init__(self, manager: SyncTokenManager, **kwargs: Any) -> None:
            self.manager = manager
            super().__init__(**kwargs)

        @property
        def access_token(self) -> str:
            return self.manager.token().value

        @access_token.setter
        def access_token(self, value: str | None) -> None:
            if value is not None:  # libica's own __init__ sets None
                raise AttributeError("access_token comes from the manager")

    return FreshConfiguration


@functools.cache
def fresh_class(client: str) -> type:
    """`FreshConfiguration` over `client`'s `Configuration` (made once, on first use)."""
    return fresh_configuration(CLIENTS[client][0].Configuration)


class Tally:
    """What one client's threads saw: successes and 401s (any other error fails the run)."""

    def __init__(self) -> None:
        self.ok = 0
        self.unauthorized = 0
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()


def drive(client: str, configuration: Any, stop: threading.Event, tally: Tally) -> None:
    """Call a protected route with `client` until `stop`, counting the answers."""
    package, api_class = client_classes(client)
    try:
        with package.ApiClient(configuration) as api_client:
            api = api_class(api_client)
            while not stop.is_set():
                try:
                    api.get_analysis_usage_details(project_id=client, analysis_id="a")
                except package.ApiException as exc:
                    if exc.status != 401:
                        raise
                    with tally.lock:
                        tally.unauthorized += 1
                else:
                    with tally.lock:
                        tally.ok += 1
                stop.wait(PACE)
    except Exception as exc:  # reported by the test, not lost in a thread
        with tally.lock:
            tally.errors.append(exc)


def bearers(server: LocalIcaServer, client: str) -> list[tuple[float, str]]:
    """(time, Authorization) of every request `client` made to the protected route."""
    marker = f"/api/projects/{client}/"
    return [
        (r.at, r.headers.get("Authorization", ""))
        for r in list(server.requests)
        if r.endpoint == "resource" and marker in r.path
    ]


def crossed(server: LocalIcaServer) -> bool:
    """Each client's requests span more than LIFETIMES lifetimes and four tokens."""
    for client in CLIENTS:
        seen = bearers(server, client)
        if not seen or seen[-1][0] - seen[0][0] < LIFETIMES * LIFETIME:
            return False
        if len({bearer for _, bearer in seen}) < 4:
            return False
    return True


async def run_clients(server: LocalIcaServer, configurations: dict[str, Any]) -> dict[str, Any]:
    """THREADS threads per client, each on its client's shared configuration, until every
    client has crossed more than LIFETIMES lifetimes (or DEADLINE passed); then the figures."""
    stop = threading.Event()
    tallies = {client: Tally() for client in CLIENTS}
    started = time.monotonic()
    workers = [
        asyncio.ensure_future(
            asyncio.to_thread(drive, client, configurations[client], stop, tallies[client])
        )
        for client in CLIENTS
        for _ in range(THREADS)
    ]
    try:
        while not crossed(server) and time.monotonic() - started < DEADLINE:
            if any(w.done() for w in workers):
                break  # a worker died: its error is in its tally
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    elapsed = time.monotonic() - started
    return {
        "elapsed": elapsed,
        "tallies": tallies,
        "tokens": {c: len({b for _, b in bearers(server, c)}) for c in CLIENTS},
        "mints": server.counts["ica.create"],
        "ideal_mints": 1 + elapsed / (LIFETIME / 2),
    }


def assert_fresh_all_along(server: LocalIcaServer, figures: dict[str, Any]) -> None:
    """The run crossed the lifetimes with 0 401s, and minted about once per L/2."""
    for client, tally in figures["tallies"].items():
        assert tally.errors == [], client
        assert tally.unauthorized == 0, client
        assert tally.ok > 0, client
        assert figures["tokens"][client] >= 4, client
    assert crossed(server), figures
    assert server.statuses["resource", 401] == 0
    # One mint per refresh interval (L/2, brought forward by at most 10 % jitter), plus the
    # first: a manager shared by every thread, never a mint per thread or per request.
    assert figures["mints"] <= 2 + figures["elapsed"] / (0.45 * LIFETIME), figures
    assert figures["mints"] >= figures["elapsed"] / LIFETIME, figures


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_sync_recipe_keeps_v2_and_v3_fresh(servers: Callable[..., Any]) -> None:
    """FreshConfiguration over a SyncTokenManager: v2 and v3 clients in four threads, more
    than three 2.5 s lifetimes, 0 401s, about one mint per L/2."""
    server = await servers(lifetime=LIFETIME)
    manager = SyncTokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url)
    try:
        configurations = {
            client: fresh_class(client)(manager, host=server.ica_base_url) for client in CLIENTS
        }
        figures = await run_clients(server, configurations)
    finally:
        await asyncio.to_thread(manager.close)
    assert_fresh_all_along(server, figures)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_async_on_token_recipe_keeps_v2_and_v3_fresh(servers: Callable[..., Any]) -> None:
    """A TokenManager on the loop whose on_token sets configuration.access_token, libica in
    worker threads (asyncio.to_thread): more than three lifetimes, 0 401s, one mint per L/2."""
    server = await servers(lifetime=LIFETIME)
    configurations = {
        client: package.Configuration(host=server.ica_base_url)
        for client, (package, _) in CLIENTS.items()
    }

    def fresh(token: Token) -> None:
        for configuration in configurations.values():
            configuration.access_token = token.value

    manager = TokenManager.for_ica(
        ApiKey(server.api_key), base_url=server.ica_base_url, on_token=fresh
    )
    async with manager:
        fresh(await manager.token())  # the first token, before any call
        figures = await run_clients(server, configurations)
        # Every mint the server saw is the manager's. Compared once any renewal in flight has
        # landed: the server counts a mint as it answers, the manager once it has the token.
        await wait_until(lambda: manager.stats.mints == server.counts["ica.create"], limit=5.0)
    assert_fresh_all_along(server, figures)


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.timeout(30)
async def test_control_a_token_read_once_gets_a_401(
    client: str, servers: Callable[..., Any]
) -> None:
    """The control: a Configuration given one token (libica's own examples) is accepted
    until that token expires, then the same route answers 401."""
    # 3 s: a busy machine may take a second between the token and the first call.
    server = await servers(lifetime=3.0)
    package, api_class = client_classes(client)
    with SyncTokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url) as m:
        token = await asyncio.to_thread(m.token)
        await asyncio.to_thread(m.close)
    assert token.expires_at is not None
    configuration = package.Configuration(host=server.ica_base_url, access_token=token.value)

    def until_refused() -> tuple[int, Exception | None]:
        with package.ApiClient(configuration) as api_client:
            api = api_class(api_client)
            return calls_until_refused(
                lambda: api.get_analysis_usage_details(project_id=client, analysis_id="a"),
                package.ApiException,
            )

    accepted, refusal = await asyncio.to_thread(until_refused)
    assert accepted > 0
    assert refusal is not None
    assert refusal.status == 401
    assert "expired" in refusal.body
    assert server.statuses["resource", 401] == 1
    refused_at = next(r.at for r in reversed(server.requests) if r.endpoint == "resource")
    # `at` is the request's arrival; the server judges the token a moment later.
    assert refused_at >= token.expires_at.timestamp() - 0.05


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.timeout(30)
async def test_fresh_configuration_reads_the_manager_per_request(
    client: str, servers: Callable[..., Any]
) -> None:
    """FreshConfiguration's access_token is the manager's current token at each read (a new
    one once the manager has renewed), setting one is refused, and a deep copy (libica v2's
    Configuration.set_default and get_default_copy make them) shares the one manager."""
    # 3 s: a busy machine may take a second between the token and the first call.
    server = await servers(lifetime=3.0)
    manager = SyncTokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url)
    try:
        configuration = fresh_class(client)(manager, host=server.ica_base_url)
        first = await asyncio.to_thread(lambda: configuration.access_token)
        assert first == (await asyncio.to_thread(manager.token)).value
        settings = await asyncio.to_thread(configuration.auth_settings)
        assert settings["JwtAuth"]["value"] == "Bearer " + first
        with pytest.raises(AttributeError, match="from the manager"):
            configuration.access_token = "a-token"
        duplicate = copy.deepcopy(configuration)
        assert duplicate.manager is manager
        assert copy.copy(configuration).manager is manager
        assert copy.copy(manager) is manager
        assert duplicate.host == server.ica_base_url
        deadline = time.monotonic() + 10
        while (second := await asyncio.to_thread(lambda: duplicate.access_token)) == first:
            assert time.monotonic() < deadline, "the manager never renewed"
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(lambda: configuration.access_token) == second
    finally:
        await asyncio.to_thread(manager.close)


@pytest.mark.timeout(45)
async def test_fresh_configuration_without_a_valid_token_sends_nothing(
    servers: Callable[..., Any],
) -> None:
    """When the manager cannot renew (the mint refused) and its token has expired, a libica
    call through FreshConfiguration raises TokenUnavailableError and sends no request: no
    401 from the resource, ever."""
    # 16 s: a token is handed out until `leeway` (L/20 = 0.8 s) before it expires, and a busy
    # machine can hold libica for half a second between getting it and sending the request.
    server = await servers(lifetime=16.0)
    manager = SyncTokenManager.for_ica(
        ApiKey(server.api_key), base_url=server.ica_base_url, acquire_timeout=1.0
    )
    package, api_class = client_classes("v3")

    def until_unavailable() -> tuple[int, BaseException | None]:
        accepted = 0
        configuration = fresh_class("v3")(manager, host=server.ica_base_url)
        with package.ApiClient(configuration) as api_client:
            api = api_class(api_client)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    api.get_analysis_usage_details(project_id="v3", analysis_id="a")
                except TokenUnavailableError as exc:
                    return accepted, exc
                accepted += 1
                time.sleep(0.02)
        return accepted, None

    try:
        await asyncio.to_thread(manager.token)
        server.outage("ica.create", status=401)  # every renewal refused from now on
        accepted, error = await asyncio.to_thread(until_unavailable)
    finally:
        await asyncio.to_thread(manager.close)
    assert accepted > 0
    assert isinstance(error, TokenUnavailableError)
    assert server.statuses["resource", 401] == 0
    assert server.counts["resource"] == accepted
