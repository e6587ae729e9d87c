"""OpenTelemetry against the local server, read with the SDK's in-memory reader and exporter.

The SDK's providers are set once per process (`sdk()`), as an application would; each test
names its manager after itself and reads only the points and spans of that name.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

import aiohttp
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpCounter, NoOpHistogram, NoOpMeter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, SpanKind

from aioica_auth import ApiKey, FileTokenStore, PsToken, SyncTokenManager, TokenManager
from aioica_auth._lifecycle import otel
from aioica_auth.testing import LocalIcaServer

from ..manager.test_manager import ps_token
from ..support import find_secret, wait_until

FAST = {"retry_initial": 0.05, "retry_max": 0.2}
_SDK: tuple[InMemoryMetricReader, InMemorySpanExporter] | None = None


def sdk() -> tuple[InMemoryMetricReader, InMemorySpanExporter]:
    """The process's SDK providers with an in-memory reader and span exporter, set once."""
    global _SDK
    if _SDK is None:
        reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        _SDK = reader, exporter
    return _SDK


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    sdk()
    return request.node.name


def points(name: str, manager: str) -> list[Any]:
    """The data points of instrument `name` for `manager`, collected now."""
    reader, _ = sdk()
    found = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != "aioica_auth":
                continue
            for metric in scope.metrics:
                if metric.name == name:
                    found += [
                        p
                        for p in metric.data.data_points
                        if p.attributes.get("aioica_auth.manager") == manager
                    ]
    return found


def spans(manager: str) -> list[ReadableSpan]:
    _, exporter = sdk()
    return [
        s
        for s in exporter.get_finished_spans()
        if s.attributes.get("aioica_auth.manager") == manager
    ]


def state(manager: str) -> str | None:
    """The state whose `aioica_auth.token.state` point reads 1, or None (no point)."""
    current = [p for p in points("aioica_auth.token.state", manager) if p.value == 1]
    assert len(current) <= 1
    return current[0].attributes["aioica_auth.state"] if current else None


def requests_by(manager: str, *keys: str) -> collections.Counter[tuple[Any, ...]]:
    found: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for p in points("aioica_auth.token.requests", manager):
        found[tuple(p.attributes[f"aioica_auth.{k}"] for k in keys)] += p.value
    return found


OUTCOME = {
    200: "ok",
    201: "ok",
    204: "ok",
    429: "rate_limited",
    401: "refused",
    503: "server_error",
}


def served(server: LocalIcaServer) -> collections.Counter[tuple[str, str]]:
    """The server's own count of token requests, by endpoint and outcome."""
    found: collections.Counter[tuple[str, str]] = collections.Counter()
    for (endpoint, status), n in server.statuses.items():
        if endpoint.startswith(("ica.", "console.")) and endpoint != "console.details":
            found[endpoint, OUTCOME[status]] += n
    return found


# -- counted right ----------------------------------------------------------------------------


async def test_requests_over_three_lifetimes_are_counted_as_the_server_counts_them(
    name: str,
) -> None:
    """503s, 429s and a revocation over three token lifetimes: per endpoint and outcome, the
    counter's totals equal the server's own; the reasons say why each renewal ran."""
    async with LocalIcaServer(lifetime=1.5) as server:
        server.inject("ica.create", status=503, times=2)
        server.inject("ica.create", status=429, times=1, retry_after="0")
        manager = TokenManager.for_ica(
            ApiKey(server.api_key), base_url=server.ica_base_url, name=name, **FAST
        )
        async with manager as m, aiohttp.ClientSession(middlewares=(m.middleware,)) as session:
            async with session.get(server.resource_url) as response:
                assert response.status == 200  # the token is accepted ...
            server.revoke((await m.token()).value)  # ... then revoked
            async with session.get(server.resource_url) as response:
                assert response.status == 200  # through a renewal after the 401
            (invalidations,) = points("aioica_auth.invalidations", name)  # while it is open
            assert invalidations.value == 1
            end = time.monotonic() + 3 * 1.5
            while time.monotonic() < end:
                await m.headers()
                await asyncio.sleep(0.05)
        assert requests_by(name, "endpoint", "outcome") == served(server)
        reasons = requests_by(name, "reason")
        assert reasons[("initial",)] >= 4  # 2 x 503 and a 429 before the first token
        assert reasons[("invalidated",)] == 1
        assert reasons[("proactive",)] >= 2
        durations = points("aioica_auth.token.request.duration", name)
        assert sum(p.count for p in durations) == sum(served(server).values())


async def test_console_keepalive_and_revoke_on_close_are_counted(name: str) -> None:
    """A psToken session: its keep-alives (`keepalive`), its mints, and the revoke on close
    (`close`), per endpoint, as the server counts them."""
    async with LocalIcaServer(lifetime=3.0) as server:
        session_token = await ps_token(server)
        manager = TokenManager.for_console(
            PsToken(session_token),
            base_url=server.base_url,
            name=name,
            keepalive_interval=0.3,
            revoke_on_close=True,
        )
        async with manager as m:
            await m.headers()
            await wait_until(lambda: m.stats.keepalives >= 2)
        assert requests_by(name, "endpoint", "outcome") == served(server)
        reasons = requests_by(name, "endpoint", "reason")
        assert reasons[("console.refresh", "keepalive")] >= 2
        assert reasons[("console.revoke", "close")] == 1
        assert reasons[("console.create", "initial")] == 1


# -- alertable --------------------------------------------------------------------------------


async def test_an_outage_reads_degraded_at_once_and_the_alert_fires_before_expiry(
    name: str,
) -> None:
    """The endpoint goes down: the first failed renewal makes the state read `degraded`
    while the token is still valid, and the README's rule (expiry within a margin, and
    degraded) holds before the token expires; then `expired`."""
    async with LocalIcaServer(lifetime=2.0) as server:
        manager = TokenManager.for_ica(
            ApiKey(server.api_key), base_url=server.ica_base_url, name=name, **FAST
        )
        assert state(name) is None  # not started: not observed
        async with manager as m:
            await m.headers()
            assert state(name) == "fresh"
            server.outage("ica.create")
            await wait_until(lambda: m.stats.failures >= 1, 5)
            failed_at = time.time()
            assert state(name) == "degraded"
            (expiration,) = points("aioica_auth.token.expiration", name)
            read_at = time.time()
            assert read_at - failed_at < 1.0
            assert expiration.attributes["aioica_auth.token_id"] == (await m.token()).fingerprint
            # The alert: degraded, and the token expires within the margin (here a lifetime).
            assert expiration.value - read_at < 2.0
            assert expiration.value > read_at  # ... while it is still valid
            await wait_until(lambda: state(name) == "expired", 5)
        assert state(name) is None  # closed: no longer observed


async def test_the_state_reads_refresh_due_past_the_refresh_point(name: str) -> None:
    async with LocalIcaServer(lifetime=2.0, latency=0.5) as server:
        manager = TokenManager.for_ica(
            ApiKey(server.api_key), base_url=server.ica_base_url, name=name
        )
        async with manager as m:
            await m.headers()
            # The renewal at the refresh point takes 0.5 s: the state reads it meanwhile.
            await wait_until(lambda: state(name) == "refresh_due", 5)


# -- free when unobserved ---------------------------------------------------------------------


class _Calls:
    def __init__(self) -> None:
        self.count = 0


class _CountingCounter(NoOpCounter):
    def __init__(self, calls: _Calls) -> None:
        super().__init__("counting")
        self._calls = calls

    def add(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        self._calls.count += 1


class _CountingHistogram(NoOpHistogram):
    def __init__(self, calls: _Calls) -> None:
        super().__init__("counting")
        self._calls = calls

    def record(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        self._calls.count += 1


class _CountingMeter(NoOpMeter):
    """A meter whose instruments count every call made on them."""

    def __init__(self, calls: _Calls) -> None:
        super().__init__("counting")
        self._calls = calls

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return _CountingCounter(self._calls)

    def create_histogram(self, name: str, unit: str = "", description: str = "", **kw: Any) -> Any:
        return _CountingHistogram(self._calls)


class _CountingTracer(NoOpTracer):
    def __init__(self, calls: _Calls) -> None:
        self._calls = calls

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        self._calls.count += 1
        return super().start_span(*args, **kwargs)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> _Calls:
    calls = _Calls()
    instruments = otel._Instruments(_CountingMeter(calls), _CountingTracer(calls))
    monkeypatch.setattr(otel, "_instruments", instruments)
    return calls


async def test_a_cache_hit_calls_no_instrument(counted: _Calls) -> None:
    async with LocalIcaServer() as server:
        manager = TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url)
        async with manager as m:
            await m.headers()  # the mint: one span, one count, one duration
            after_mint = counted.count
            assert after_mint == 3
            for _ in range(10_000):
                await m.headers()
                await m.token()
            assert counted.count == after_mint


# -- no secret --------------------------------------------------------------------------------


async def test_no_secret_in_ten_thousand_points_spans_and_log_records(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Short tokens, faults and a revocation; then every metric point, span attribute,
    span event and log record is scanned for the key, the password and any token."""
    caplog.set_level(logging.DEBUG, logger="aioica_auth")
    issued: list[str] = []
    async with LocalIcaServer(lifetime=1.0) as server:
        server.inject("ica.create", status=503, times=2, retry_after="0")
        manager = TokenManager.for_ica(
            ApiKey(server.api_key),
            base_url=server.ica_base_url,
            name=name,
            on_token=lambda t: issued.append(t.value),
            **FAST,
        )
        scanned = 0
        async with manager as m:
            server.revoke((await m.token()).value)
            m.invalidate(await m.token())
            while scanned < 10_000:
                await m.headers()
                for metric in ("requests", "request.duration", "expiration", "state"):
                    for point in points(f"aioica_auth.token.{metric}", name):
                        assert find_secret(repr(point), [server.api_key, *issued]) is None
                        scanned += 1
                await asyncio.sleep(0)
        assert len(issued) >= 2
    secrets = [server.api_key, server.password, *issued]
    for span in spans(name):
        assert find_secret(repr(dict(span.attributes or {})), secrets) is None
        for event in span.events:
            assert find_secret(repr(dict(event.attributes or {})), secrets) is None
        assert span.kind is SpanKind.CLIENT
        assert span.parent is None  # a root, whatever ran when the renewal started
    for record in caplog.records:
        assert find_secret(record.getMessage() + repr(record.__dict__), secrets) is None


# -- the fleet, the sync facade, the httpx auth -----------------------------------------------


async def test_a_fleet_counts_its_store_operations_and_spans_its_lease(
    name: str, tmp_path: Any
) -> None:
    async with LocalIcaServer() as server:
        store = FileTokenStore(tmp_path)
        key = ApiKey(server.api_key)
        first = TokenManager.for_ica(key, base_url=server.ica_base_url, store=store, name=name)
        other = TokenManager.for_ica(
            key, base_url=server.ica_base_url, store=store, name=name + "-2"
        )
        async with first, other:
            await first.headers()
            await other.headers()  # adopted from the store
        assert server.counts["ica.create"] == 1
    operations = collections.Counter(
        (p.attributes["aioica_auth.operation"], p.attributes["aioica_auth.outcome"])
        for p in points("aioica_auth.store.operations", name)
        for _ in range(int(p.value))
    )
    assert operations[("lease", "ok")] == 1
    assert operations[("publish", "ok")] == 1
    assert operations[("adopt", "ok")] >= 1
    adopted = points("aioica_auth.store.operations", name + "-2")
    assert {p.attributes["aioica_auth.operation"] for p in adopted} == {"adopt"}
    leases = [s for s in spans(name) if s.name == "aioica_auth store lease"]
    assert len(leases) == 1
    assert leases[0].parent is None


async def test_the_sync_facade_is_observed(name: str) -> None:
    """`name=` passes through `SyncTokenManager.for_ica`; its loop thread records."""
    async with LocalIcaServer() as server:
        manager = SyncTokenManager.for_ica(
            ApiKey(server.api_key), base_url=server.ica_base_url, name=name
        )
        try:
            await asyncio.to_thread(manager.headers)
        finally:
            await asyncio.to_thread(manager.close)
        assert requests_by(name, "endpoint", "outcome") == served(server)


async def test_the_httpx_auth_counts_its_invalidations(name: str) -> None:
    httpx = pytest.importorskip("httpx")
    async with LocalIcaServer() as server:
        manager = TokenManager.for_ica(
            ApiKey(server.api_key), base_url=server.ica_base_url, name=name
        )
        async with manager as m, httpx.AsyncClient(auth=m.httpx_auth) as client:
            assert (await client.get(server.resource_url)).status_code == 200
            server.revoke((await m.token()).value)
            response = await client.get(server.resource_url)
            assert response.status_code == 200
            (invalidations,) = points("aioica_auth.invalidations", name)
            assert invalidations.value == 1
        assert requests_by(name, "reason")[("invalidated",)] == 1


def test_a_bad_name_is_refused() -> None:
    with pytest.raises(ValueError, match="name"):
        TokenManager.for_ica(ApiKey("k" * 20), name="  ")
