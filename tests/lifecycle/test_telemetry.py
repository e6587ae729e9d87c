"""The two judgements of the telemetry (`Reason`, `Health`) and the outcome of a request,
each a table: every state of the token against what it must read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aioica_auth import (
    ApiError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    TransportError,
    UnauthorizedError,
)
from aioica_auth._lifecycle import engine, telemetry
from aioica_auth._lifecycle.lease import TokenState
from aioica_auth._lifecycle.telemetry import Health, Reason, health_of, reason_of


@pytest.mark.parametrize(
    ("state", "ever", "expected"),
    [
        (None, False, Reason.INITIAL),
        (None, True, Reason.EXPIRED),
        (TokenState.FRESH, True, Reason.MIN_VALIDITY),
        (TokenState.NOT_YET_VALID, True, Reason.MIN_VALIDITY),
        (TokenState.REFRESH_DUE, True, Reason.PROACTIVE),
        (TokenState.MUST_WAIT, True, Reason.EXPIRED),
        (TokenState.EXPIRED, True, Reason.EXPIRED),
    ],
)
def test_the_reason_of_an_attempt(state: TokenState | None, ever: bool, expected: Reason) -> None:
    assert reason_of(state, ever=ever) is expected


@pytest.mark.parametrize(
    ("state", "failures", "expected"),
    [
        (None, 0, Health.NONE),
        (None, 3, Health.NONE),
        (TokenState.FRESH, 0, Health.FRESH),
        (TokenState.NOT_YET_VALID, 0, Health.FRESH),
        (TokenState.REFRESH_DUE, 0, Health.REFRESH_DUE),
        (TokenState.MUST_WAIT, 0, Health.REFRESH_DUE),
        (TokenState.FRESH, 1, Health.DEGRADED),
        (TokenState.REFRESH_DUE, 2, Health.DEGRADED),
        (TokenState.MUST_WAIT, 1, Health.DEGRADED),
        (TokenState.EXPIRED, 0, Health.EXPIRED),
        (TokenState.EXPIRED, 5, Health.EXPIRED),
    ],
)
def test_the_health_of_a_token(state: TokenState | None, failures: int, expected: Health) -> None:
    """Degraded: renewals failing while the token is still valid; an expired one is expired."""
    assert health_of(state, failures) is expected


def test_the_names_are_the_documented_ones() -> None:
    assert [r.value for r in Reason] == [
        "initial",
        "proactive",
        "expired",
        "invalidated",
        "min_validity",
        "keepalive",
        "close",
    ]
    assert [h.value for h in Health] == ["none", "fresh", "refresh_due", "degraded", "expired"]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (RateLimitError(429), "rate_limited"),
        (ServerError(503), "server_error"),
        (ServerError(500), "server_error"),
        (UnauthorizedError(401), "refused"),
        (ApiError(409), "refused"),
        (InvalidResponseError(200, reason="no token"), "invalid"),
        (
            TransportError("POST https://x/api/tokens: connection refused", kind="refused"),
            "transport",
        ),
    ],
)
def test_the_outcome_of_a_request(error: Exception | None, outcome: str) -> None:
    pytest.importorskip("opentelemetry.metrics")
    otel = pytest.importorskip("aioica_auth._lifecycle.otel")
    assert otel.outcome_of(error) == outcome


def test_without_opentelemetry_a_manager_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """`opentelemetry-api` absent: the base telemetry, and nothing of it imported."""
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)  # import fails
    assert engine.telemetry_for("ica", "x") is telemetry.NO_TELEMETRY


def test_importing_the_package_imports_no_opentelemetry() -> None:
    """OpenTelemetry is imported when a manager is built, not by `import aioica_auth`."""
    code = "import sys, aioica_auth; print([m for m in sys.modules if 'opentelemetry' in m])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr
