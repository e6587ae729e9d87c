"""The suite's own support: `tests/support.py` helpers and the AIOICA_TEST_LOOP switch."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from .support import LOOP_ENV, find_secret, requested_loop, unsigned_jwt, wait_until

ON_UVLOOP = requested_loop() == "uvloop"


# --------------------------------------------------------------------------- unsigned_jwt


def test_unsigned_jwt_carries_the_claims_and_the_default_header() -> None:
    """unsigned_jwt decodes (signature unchecked) to exactly its claims, under an RS256 header."""
    value = unsigned_jwt({"sub": "s", "exp": 2_000_000_000})
    assert jwt.decode(value, options={"verify_signature": False}) == {
        "sub": "s",
        "exp": 2_000_000_000,
    }
    assert jwt.get_unverified_header(value) == {"alg": "RS256", "typ": "JWT"}
    assert value.count(".") == 2
    assert "=" not in value


def test_unsigned_jwt_takes_any_header_and_any_json_payload() -> None:
    """A given header is used as is, and a non-object payload is encoded as given."""
    value = unsigned_jwt([1, 2], header={"alg": "none"})
    assert jwt.get_unverified_header(value) == {"alg": "none"}
    with pytest.raises(jwt.DecodeError):
        jwt.decode(value, options={"verify_signature": False})


# --------------------------------------------------------------------------- find_secret


def test_find_secret_finds_a_listed_secret() -> None:
    """A listed secret anywhere in the text is returned; a clean text gives None."""
    assert find_secret("key=ak-123 sent", ["nope", "ak-123"]) == "ak-123"
    assert find_secret("nothing to see", ["ak-123"]) is None


@pytest.mark.parametrize(
    "shape",
    [
        unsigned_jwt({"sub": "someone", "exp": 1}),
        "test-apikey-0123abcd",
        "ps." + "A" * 20,
    ],
)
def test_find_secret_finds_secret_shapes_unlisted(shape: str) -> None:
    """A JWT, a local-server API key or psToken is found even when not listed."""
    assert find_secret(f"header Bearer {shape} here") is not None


def test_find_secret_refuses_an_empty_secret() -> None:
    """An empty secret is a broken test (it is in every text), not a clean result."""
    with pytest.raises(ValueError, match="empty secret"):
        find_secret("text", ["ok", ""])


# --------------------------------------------------------------------------- wait_until


async def test_wait_until_returns_once_true() -> None:
    """wait_until returns as soon as the predicate holds."""
    flag: list[bool] = []
    asyncio.get_running_loop().call_later(0.05, flag.append, True)
    started = time.monotonic()
    await wait_until(lambda: flag, limit=5.0)
    assert time.monotonic() - started < 2.0


async def test_wait_until_is_bounded() -> None:
    """wait_until fails with AssertionError when the predicate never holds."""
    with pytest.raises(AssertionError, match="not reached in time"):
        await wait_until(lambda: False, limit=0.1)


# --------------------------------------------------------------------------- the loop switch


def test_requested_loop_refuses_an_unknown_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt AIOICA_TEST_LOOP is an error, never a silent fall back to asyncio."""
    monkeypatch.setenv(LOOP_ENV, "uvlop")
    with pytest.raises(ValueError, match="uvlop"):
        requested_loop()
    monkeypatch.setenv(LOOP_ENV, "")
    assert requested_loop() == "asyncio"


@pytest.mark.skipif(not ON_UVLOOP, reason=f"{LOOP_ENV}=uvloop is not set")
async def test_uvloop_switch_runs_tests_on_uvloop() -> None:
    """With AIOICA_TEST_LOOP=uvloop, async tests really run on uvloop's event loop."""
    import uvloop

    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


@pytest.mark.skipif(ON_UVLOOP, reason=f"{LOOP_ENV}=uvloop is set")
async def test_default_loop_is_asyncio() -> None:
    """Without the switch, async tests run on the standard library's event loop."""
    assert type(asyncio.get_running_loop()).__module__.startswith("asyncio")
