"""OpenTelemetry for the managers of a process: metrics and spans (the `otel` extra).

Imported only when `opentelemetry-api` is installed (`telemetry.telemetry_for`). The
instruments are made once per process, under the instrumentation scope `aioica_auth` with the
package's version, through the global `MeterProvider` and `TracerProvider`: no-ops until the
application configures an SDK (and the API's proxies pick that up later too). Observable
instruments read every live manager at collection time, so a cache hit costs no call at all.

| instrument                            | kind              | unit          |
|---------------------------------------|-------------------|---------------|
| `aioica_auth.token.requests`          | counter           | `{request}`   |
| `aioica_auth.token.request.duration`  | histogram         | `s`           |
| `aioica_auth.token.expiration`        | observable gauge  | `s`           |
| `aioica_auth.token.state`             | observable gauge  | `1`           |
| `aioica_auth.waits`                   | observable counter| `{call}`      |
| `aioica_auth.invalidations`           | observable counter| `{token}`     |
| `aioica_auth.store.operations`        | counter           | `{operation}` |

Every point carries `aioica_auth.platform` and `aioica_auth.manager`. One span per token
request (`aioica_auth token request`, kind CLIENT) and one per store lease held (`aioica_auth
store lease`): roots, never children of whatever request happened to start a renewal. Nothing
recorded holds a secret: paths without queries, tokens by fingerprint, our errors' messages
(which never hold one).
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._errors import ApiError, InvalidResponseError, TransportError
from .._observe import OBSERVER, Answered, StoreOperation
from .._version import __version__
from .telemetry import Health, Reason, Telemetry, health_of

if TYPE_CHECKING:
    from .._clock import Clock
    from .backoff import Backoff
    from .lease import Lease
    from .slot import Slot
    from .stats import Counters

__all__ = ["SCOPE", "OtelTelemetry", "outcome_of"]

SCOPE = "aioica_auth"
_REQUEST_SPAN = "aioica_auth token request"
_LEASE_SPAN = "aioica_auth store lease"
# Token requests take tens of milliseconds to a few seconds; bounded by request_timeout.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30)


def outcome_of(error: BaseException | None) -> str:
    """The `aioica_auth.outcome` of a token request: `ok` (a usable token or a 2xx), 429
    `rate_limited`, another 4xx `refused`, 5xx `server_error`, no answer `transport`, an
    answer that is no usable token `invalid`."""
    if error is None:
        return "ok"
    if isinstance(error, InvalidResponseError):
        return "invalid"
    if isinstance(error, ApiError):
        if error.status == 429:
            return "rate_limited"
        return "server_error" if error.status >= 500 else "refused"
    if isinstance(error, TransportError):
        return "transport"
    return "invalid"


class _Instruments:
    """The process's instruments, and the managers the observable ones read."""

    def __init__(self, meter: metrics.Meter, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        # Managers add and drop themselves on their loops; a reader collects on its own thread.
        self._live: weakref.WeakSet[OtelTelemetry] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.requests = meter.create_counter(
            "aioica_auth.token.requests", "{request}", "Token-endpoint requests"
        )
        self.duration = meter.create_histogram(
            "aioica_auth.token.request.duration",
            "s",
            "Duration of token-endpoint requests",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self.store_operations = meter.create_counter(
            "aioica_auth.store.operations", "{operation}", "Operations on a fleet's token store"
        )
        meter.create_observable_gauge(
            "aioica_auth.token.expiration",
            [self._expiration],
            "s",
            "The current token's expiry, as Unix seconds",
        )
        meter.create_observable_gauge(
            "aioica_auth.token.state", [self._state], "1", "1 for the token's current state"
        )
        meter.create_observable_counter(
            "aioica_auth.waits", [self._waits], "{call}", "Calls that had to wait for a token"
        )
        meter.create_observable_counter(
            "aioica_auth.invalidations",
            [self._invalidations],
            "{token}",
            "Tokens dropped after a resource's 401",
        )

    def watch(self, telemetry: OtelTelemetry, *, live: bool) -> None:
        """Start or stop reading `telemetry` in the observable instruments."""
        with self._lock:
            if live:
                self._live.add(telemetry)
            else:
                self._live.discard(telemetry)

    def live(self) -> list[OtelTelemetry]:
        """The managers read now (a copy: it may change while a reader iterates)."""
        with self._lock:
            return list(self._live)

    def _expiration(self, options: CallbackOptions) -> Iterable[Observation]:
        for telemetry in self.live():
            lease = telemetry.lease()
            if lease is not None and lease.token.expires_at is not None:
                token_id = {"aioica_auth.token_id": lease.token.fingerprint}
                value = lease.token.expires_at.timestamp()
                yield Observation(value, {**telemetry.attributes, **token_id})

    def _state(self, options: CallbackOptions) -> Iterable[Observation]:
        for telemetry in self.live():
            now = telemetry.health()
            for state in Health:
                attributes = {**telemetry.attributes, "aioica_auth.state": state.value}
                yield Observation(int(state is now), attributes)

    def _waits(self, options: CallbackOptions) -> Iterable[Observation]:
        for telemetry in self.live():
            if (counters := telemetry.counters) is not None:
                yield Observation(counters.waits, telemetry.attributes)

    def _invalidations(self, options: CallbackOptions) -> Iterable[Observation]:
        for telemetry in self.live():
            if (counters := telemetry.counters) is not None:
                yield Observation(counters.invalidations, telemetry.attributes)


_instruments: _Instruments | None = None


def instruments() -> _Instruments:
    """The process's instruments, made at the first manager."""
    global _instruments
    if _instruments is None:
        meter = metrics.get_meter(SCOPE, __version__)
        _instruments = _Instruments(meter, trace.get_tracer(SCOPE, __version__))
    return _instruments


class OtelTelemetry(Telemetry):
    """One manager's telemetry through OpenTelemetry."""

    def __init__(self, platform: str, name: str) -> None:
        self.attributes: dict[str, Any] = {
            "aioica_auth.platform": platform,
            "aioica_auth.manager": name,
        }
        self.counters: Counters | None = None
        self.instruments = instruments()
        self._slot: Slot | None = None
        self._backoff: Backoff | None = None
        self._clock: Clock | None = None

    def bind(self, slot: Slot, backoff: Backoff, counters: Counters, clock: Clock) -> None:
        self._slot, self._backoff, self.counters, self._clock = slot, backoff, counters, clock
        self.instruments.watch(self, live=True)

    def close(self) -> None:
        self.instruments.watch(self, live=False)

    @contextlib.contextmanager
    def attempt(self, reason: Reason) -> Iterator[None]:
        reset = OBSERVER.set(_Recorder(self, reason))
        try:
            yield
        finally:
            OBSERVER.reset(reset)

    def lease(self) -> Lease | None:
        """The newest lease (read from the collecting thread: one attribute load)."""
        return None if self._slot is None else self._slot.lease

    def health(self) -> Health:
        """The token's state now, judged by `health_of`."""
        lease, clock, backoff = self.lease(), self._clock, self._backoff
        if lease is None or clock is None or backoff is None:
            return Health.NONE
        return health_of(lease.state(lease.now(clock)), backoff.failures)


class _Recorder:
    """The `Observer` of one attempt (`_observe`): its requests, store operations and lease."""

    __slots__ = ("_owner", "_reason")

    def __init__(self, owner: OtelTelemetry, reason: Reason) -> None:
        self._owner = owner
        self._reason = reason

    @contextlib.contextmanager
    def request(self, endpoint: str, method: str, path: str) -> Iterator[Answered]:
        owner, instruments = self._owner, self._owner.instruments
        labels = {**owner.attributes, "aioica_auth.endpoint": endpoint}
        span = instruments.tracer.start_span(
            _REQUEST_SPAN,
            context=otel_context.Context(),  # a root: not the child of a caller's request
            kind=SpanKind.CLIENT,
            attributes={
                **labels,
                "aioica_auth.reason": self._reason.value,
                "http.request.method": method,
                "url.path": path,
            },
        )
        answer: list[tuple[int, str | None]] = []
        started = time.perf_counter()

        def answered(status: int, token_id: str | None = None) -> None:
            answer.append((status, token_id))

        error: BaseException | None = None
        try:
            yield answered
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            self._end(span, labels, elapsed, answer, error)

    def _end(
        self,
        span: trace.Span,
        labels: dict[str, Any],
        elapsed: float,
        answer: list[tuple[int, str | None]],
        error: BaseException | None,
    ) -> None:
        instruments = self._owner.instruments
        if error is not None and not isinstance(error, Exception):
            span.set_status(Status(StatusCode.ERROR, "cancelled"))  # no answer to count
            span.end()
            return
        outcome = outcome_of(error)
        labelled = {**labels, "aioica_auth.outcome": outcome}
        instruments.requests.add(1, {**labelled, "aioica_auth.reason": self._reason.value})
        instruments.duration.record(elapsed, labelled)
        span.set_attribute("aioica_auth.outcome", outcome)
        status = answer[-1][0] if answer else getattr(error, "status", None)
        if isinstance(status, int) and not isinstance(error, TransportError):
            span.set_attribute("http.response.status_code", status)
        if answer and answer[-1][1] is not None:
            span.set_attribute("aioica_auth.token_id", answer[-1][1] or "")
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def store(self, operation: StoreOperation, *, ok: bool) -> None:
        owner = self._owner
        attributes = {
            **owner.attributes,
            "aioica_auth.operation": operation,
            "aioica_auth.outcome": "ok" if ok else "failed",
        }
        owner.instruments.store_operations.add(1, attributes)

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        owner = self._owner
        span = owner.instruments.tracer.start_span(
            _LEASE_SPAN,
            context=otel_context.Context(),
            kind=SpanKind.INTERNAL,
            attributes={**owner.attributes, "aioica_auth.reason": self._reason.value},
        )
        try:
            yield
        finally:
            span.end()
