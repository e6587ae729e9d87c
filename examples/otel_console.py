"""OpenTelemetry metrics and spans of a TokenManager, printed by the SDK's console exporters.

    pip install 'aioica_auth[otel]' opentelemetry-sdk
    python examples/otel_console.py

The library depends on `opentelemetry-api` only and records through the global providers; the
application (this script) owns the SDK: it sets a `MeterProvider` and a `TracerProvider` with
their exporters before it builds a manager. To need no ICA account, and to show a renewal and a
degraded state within seconds, the script runs the package's local token server with
2-second tokens; point `for_ica` at ICA and it records the same instruments.

It prints one line per span as each token request ends (`ConsoleSpanExporter`), then one line
per metric point, read once (`ConsoleMetricExporter`): the token requests by endpoint, outcome
and reason, their durations, the token's expiry and state (`degraded`: renewals are failing
while the token is still valid, what an alert should catch), and the waits. Nothing printed
holds a secret: tokens appear as fingerprints.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from aioica_auth import ApiKey, Token, TokenManager
from aioica_auth.testing import LocalIcaServer

PREFIX = "aioica_auth."


def short(attributes: Mapping[str, Any] | None) -> str:
    """`key=value` pairs without the common prefix, for one readable line."""
    pairs = sorted((attributes or {}).items())
    return " ".join(f"{key.removeprefix(PREFIX)}={value}" for key, value in pairs)


def span_line(span: ReadableSpan) -> str:
    return f"span   {span.name}: {short(span.attributes)}\n"


def metric_lines(data: MetricsData) -> str:
    lines = []
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, NumberDataPoint):
                        value = str(point.value)
                    else:  # a histogram: its count and sum
                        value = f"count={point.count} sum={point.sum:.3f}"
                    name = f"{metric.name} [{metric.unit}]"
                    lines.append(f"metric {name} {short(point.attributes)} = {value}\n")
    return "".join(lines)


def configure_opentelemetry() -> tuple[MeterProvider, TracerProvider]:
    """The application's part: the SDK, its exporters, the global providers."""
    tracer_provider = TracerProvider()
    spans = ConsoleSpanExporter(formatter=span_line)  # the default formatter prints JSON
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))  # Batch... in production
    trace.set_tracer_provider(tracer_provider)
    # A service exports every minute or so; here the points are read once, by force_flush().
    exporter = ConsoleMetricExporter(formatter=metric_lines)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    meter_provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    return meter_provider, tracer_provider


class Seen:
    """What the manager told the script: each new token (`on_token`) and each log event."""

    def __init__(self) -> None:
        self.tokens: list[Token] = []
        self.renewed, self.failed = asyncio.Event(), asyncio.Event()

    def on_token(self, token: Token) -> None:
        print(f"token  {token.fingerprint}, expires {token.expires_at:%H:%M:%S}")
        self.tokens.append(token)
        if len(self.tokens) > 1:
            self.renewed.set()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "event", None) == "token.renewal_failed":
            self.failed.set()
        return True


async def main() -> None:
    logging.basicConfig(format="log    %(levelname)s %(message)s", stream=sys.stdout)
    meter_provider, tracer_provider = configure_opentelemetry()
    seen = Seen()
    logging.getLogger("aioica_auth").addFilter(seen.filter)
    async with LocalIcaServer(lifetime=2.0) as server, asyncio.timeout(10):
        manager = TokenManager.for_ica(
            ApiKey(server.api_key),
            base_url=server.ica_base_url,
            on_token=seen.on_token,
            name="example",
        )
        async with manager:
            await manager.headers()
            # The background renewal replaces the token about halfway through its life.
            await seen.renewed.wait()
            # The token endpoint fails: the next renewal fails while the token is still valid.
            outage = server.outage("*", status=503)
            await seen.failed.wait()
            meter_provider.force_flush()  # read every instrument now, while the manager lives
            server.remove_fault(outage)
        print(f"manager stats: {manager.stats}")
    meter_provider.shutdown()
    tracer_provider.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
