"""Store entries: any bytes at all are either a checked entry or a `BadEntryError`."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioica_auth._fleet.store import MAX_ENTRY, BadEntryError, decode_entry, encode_entry
from aioica_auth._token import Token

from ..support import unsigned_jwt

KEY = "ab" * 32
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(st.binary(max_size=2000))
def test_any_bytes_are_an_entry_or_refused_by_name(raw: bytes) -> None:
    message = "store entry"
    try:
        decode_entry(raw, KEY)
    except BadEntryError as exc:
        message = str(exc)
    assert message.startswith("store entry")


@given(JSON, st.sampled_from(["v", "key", "token", "skew", "published"]))
def test_any_field_replaced_by_any_json_is_handled(value: object, field: str) -> None:
    now = time.time()
    body = json.loads(
        encode_entry(KEY, Token.from_jwt(unsigned_jwt({"iat": now, "exp": now + 60})), 0.5, now)
    )
    body[field] = value
    try:
        entry = decode_entry(json.dumps(body).encode(), KEY)
    except BadEntryError:
        return
    assert entry.token.expires_at is not None


def test_a_round_trip_keeps_token_skew_and_time() -> None:
    now = time.time()
    token = Token.from_jwt(unsigned_jwt({"iat": now, "exp": now + 60}))
    entry = decode_entry(encode_entry(KEY, token, -3.0, now), KEY)
    assert (entry.token.value, entry.skew, entry.published) == (token.value, -3.0, now)


def test_the_cap_is_checked_before_parsing() -> None:
    with pytest.raises(BadEntryError, match="cap"):
        decode_entry(b"[" * (MAX_ENTRY + 1), KEY)
    with pytest.raises(BadEntryError, match="not JSON"):
        decode_entry(b"[" * 10_000, KEY)  # nested past the recursion limit
