"""`TokenStore`: where the managers of a fleet share one token, and how its entries look.

A store knows nothing of tokens: it keeps one opaque entry (bytes) per key, and a short
exclusive lease per key that says "I am renewing this one". The managers do the rest
(`shared.SharedSource`): read the entry, adopt it if it passes their own validity rules, else
take the lease, read again, mint, publish, release. Waiters `wait` (a store pushes, or
polls) until the entry changes or the lease is free, within a bounded time.

Keys are derived here, never from a secret itself: a PBKDF2-HMAC-SHA256 of the platform, base
URL, credential and every option that changes the token, under a domain-separation label, so
a key names a credential without revealing it (a password included: the iterations make a
guess expensive). The entry is JSON: `{"v": 1, "key": ..., "token": <jwt>, "skew": ...,
"published": <wall time>}`; `decode_entry` checks every field before the manager looks at it.

Beside it, under `hold_key(key)`, a fleet keeps its *hold*: the last `Retry-After` the token
endpoint gave one of its managers, `{"v": 1, "key": ..., "hold": {"status": 429,
"retry_after": 2.0, "until": <wall time>}}`, published with the same call (fenced by `until`,
so a later hold replaces an earlier one). It needs nothing of a store but `read` and
`publish`, so a store of the user's own shares it too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import attrs

from .._credentials import ApiKey, BasicAuth, Credential, Jwt, PsToken
from .._errors import InvalidResponseError
from .._token import Token, decode_jwt

__all__ = [
    "MAX_ENTRY",
    "BadEntryError",
    "Hold",
    "StoreEntry",
    "TokenStore",
    "decode_entry",
    "decode_hold",
    "encode_entry",
    "encode_hold",
    "hold_key",
    "store_key",
]

MAX_ENTRY = 32 * 1024
"""Bytes: an entry larger than this is refused unread (a JWT is a few KiB at most)."""

_DOMAIN = b"aioica_auth token-store key v1"
_ITERATIONS = 20_000  # about 10 ms once per manager; a guessed password costs as much


class BadEntryError(ValueError):
    """A store entry that is not to be adopted; the message says why, never quoting it."""


@runtime_checkable
class TokenStore(Protocol):
    """Shared storage for the managers of a fleet: one entry and one renewal lease per key.

    Every method may raise; the manager bounds each call by its `request_timeout` and
    treats any failure as the store being unavailable.
    """

    async def read(self, key: str) -> bytes | None:
        """The entry published for `key`, or None."""

    async def acquire(self, key: str, ttl: float) -> object | None:
        """Take the renewal lease of `key` for at most `ttl` seconds without waiting.

        Returns a handle for `release`, or None when another holder has it. A holder that
        dies loses the lease when `ttl` runs out (or sooner, where the OS frees it).
        """

    async def release(self, key: str, handle: object) -> None:
        """Give back a lease `acquire` returned; a lease that ran out is left alone."""

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        """Store `entry` for `key` unless the stored one expires at or after `expires_at`
        (a Unix time: the JWT's `exp`, the fencing token). Returns whether it was stored."""

    async def wait(self, key: str, within: float) -> None:
        """Return once the entry of `key` may have changed or its lease may be free, and
        after `within` seconds at the latest (a poll interval, or a notification)."""

    async def aclose(self) -> None:
        """Release what the store holds (connections, files). Idempotent."""


def store_key(platform: str, base_url: str, credential: Credential, options: Iterable[str]) -> str:
    """The store key of a manager: 64 hex digits naming everything that changes its token.

    Raises:
        TypeError: a credential a store cannot share.
    """
    if isinstance(credential, ApiKey):
        parts = ["api-key", credential.key]
    elif isinstance(credential, BasicAuth):
        parts = ["basic", credential.username, credential.password]
    elif isinstance(credential, PsToken):
        parts = ["ps-token", credential.token]
    else:
        kind = "a Jwt" if isinstance(credential, Jwt) else type(credential).__name__
        msg = f"a token store shares tokens minted from a credential, not {kind}"
        raise TypeError(msg)
    fields = [platform, base_url, *parts, *options]
    # Length-prefixed, so no two different field lists can give the same input.
    material = b"".join(len(b := f.encode()).to_bytes(4, "big") + b for f in fields)
    return hashlib.pbkdf2_hmac("sha256", material, _DOMAIN, _ITERATIONS).hex()


@attrs.frozen(repr=False)
class StoreEntry:
    """A shared token as a manager published it.

    Attributes:
        token: The token (never in repr).
        skew: The publisher's reading of the token server's clock minus its own, or None.
        published: The publisher's wall time when it published.
    """

    token: Token
    skew: float | None
    published: float

    def __repr__(self) -> str:
        return f"StoreEntry(token={self.token!r}, published={self.published:.0f})"


def encode_entry(key: str, token: Token, skew: float | None, published: float) -> bytes:
    """The bytes to publish for `token` under `key`."""
    body = {"v": 1, "key": key, "token": token.value, "skew": skew, "published": published}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_entry(raw: bytes, key: str) -> StoreEntry:
    """An entry read from a store, checked field by field.

    Raises:
        BadEntryError: the entry is too large, not ours (another key), or malformed;
            the message says which, and never quotes the entry.
    """
    body = _document(raw, "entry", key)
    value, skew, published = body.get("token"), body.get("skew"), body.get("published")
    if not isinstance(value, str) or not value:
        msg = "store entry has no token"
        raise BadEntryError(msg)
    if skew is not None and not _finite(skew):
        msg = "store entry has a malformed skew"
        raise BadEntryError(msg)
    if not _finite(published):
        msg = "store entry has a malformed publication time"
        raise BadEntryError(msg)
    try:
        token = decode_jwt(value)
    except InvalidResponseError:
        msg = "store entry holds no decodable JWT"
        raise BadEntryError(msg) from None
    if token.expires_at is None:
        msg = "store entry holds a token without expiry"
        raise BadEntryError(msg)
    assert isinstance(published, int | float)
    return StoreEntry(token, None if skew is None else float(skew), float(published))


def hold_key(key: str) -> str:
    """The key under which the fleet of `key` keeps its hold (64 hex digits as well)."""
    return hashlib.sha256(b"aioica_auth hold v1 " + key.encode()).hexdigest()


@attrs.frozen
class Hold:
    """What the token endpoint asked one manager of a fleet: wait before asking again.

    Attributes:
        status: The answer's status (429, or a 5xx that gave `Retry-After`).
        retry_after: The seconds the server asked for.
        until: The publisher's wall time when the wait ends.
    """

    status: int
    retry_after: float
    until: float

    def left(self, wall: float) -> float:
        """Seconds of the hold left at `wall` (this host's time), never more than the server
        asked for: a host whose clock is behind does not wait longer for it."""
        return max(0.0, min(self.until - wall, self.retry_after))


def encode_hold(key: str, hold: Hold) -> bytes:
    """The bytes to publish under `hold_key(key)`."""
    body = {
        "v": 1,
        "key": hold_key(key),
        "hold": {"status": hold.status, "retry_after": hold.retry_after, "until": hold.until},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_hold(raw: bytes, key: str) -> Hold:
    """A hold read from a store, checked field by field.

    Raises:
        BadEntryError: not a hold of `key`'s fleet, or malformed (never quoted).
    """
    hold = _document(raw, "hold", hold_key(key)).get("hold")
    if not isinstance(hold, dict):
        msg = "store hold is malformed"
        raise BadEntryError(msg)
    status, retry_after, until = hold.get("status"), hold.get("retry_after"), hold.get("until")
    if not (
        isinstance(status, int)
        and 400 <= status <= 599
        and _finite(retry_after)
        and _finite(until)
        and isinstance(retry_after, int | float)
        and retry_after >= 0
    ):
        msg = "store hold is malformed"
        raise BadEntryError(msg)
    assert isinstance(until, int | float)
    return Hold(status, float(retry_after), float(until))


def _document(raw: bytes, what: str, key: str) -> dict[str, Any]:
    """The JSON object of a version-1 store `what` ("entry", "hold") written for `key`.

    Raises:
        BadEntryError: too large, not JSON, not version 1, or another key's (never quoted).
    """
    if len(raw) > MAX_ENTRY:
        msg = f"store {what} of {len(raw)} bytes is over the {MAX_ENTRY}-byte cap"
        raise BadEntryError(msg)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        msg = f"store {what} is not JSON"
        raise BadEntryError(msg) from None
    if not isinstance(body, dict) or body.get("v") != 1:
        msg = f"store {what} is not a version-1 {what}"
        raise BadEntryError(msg)
    if body.get("key") != key:
        msg = f"store {what} is for another key"
        raise BadEntryError(msg)
    return body


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
