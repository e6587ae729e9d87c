"""`Token`: a JWT (or an opaque psToken) with its times decoded, and nothing secret in its repr.

JWTs are decoded with PyJWT **without verifying the signature**: a client has no key to verify
Illumina's signature with, and does not need one. It only reads the times to know when to
refresh; the server judges the token.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._credentials import fingerprint
from ._errors import InvalidResponseError

__all__ = ["Token", "decode_jwt", "epoch"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@attrs.frozen(repr=False)
class Token:
    """A bearer token and what its claims say about it.

    Attributes:
        value: The token itself (a JWT, or an opaque psToken). Never in repr or str.
        expires_at: `exp` as an aware UTC datetime; None when the token has no `exp`
            (an opaque psToken, or a JWT without expiry: the manager then treats it as
            valid until the server refuses it).
        not_before: `nbf`, or None.
        issued_at: `iat`, or None.
        claims: All claims, read-only (empty for an opaque token).
    """

    value: str
    expires_at: dt.datetime | None = None
    not_before: dt.datetime | None = None
    issued_at: dt.datetime | None = None
    claims: Mapping[str, Any] = attrs.field(default=_EMPTY, eq=False)

    @classmethod
    def from_jwt(cls, value: str) -> Token:
        """Decode a JWT (no signature check).

        Raises:
            InvalidResponseError: `value` is not a decodable JWT, or its times are not numbers.
        """
        return decode_jwt(value)

    @classmethod
    def opaque(cls, value: str) -> Token:
        """A token the client cannot read, such as a psToken: no claims, no expiry."""
        return cls(value=value)

    @property
    def authorization(self) -> str:
        """`"Bearer <value>"`, the `Authorization` header value."""
        return "Bearer " + self.value

    @property
    def fingerprint(self) -> str:
        """A short, stable, non-reversible name for this token, fit for logs."""
        return fingerprint(self.value)

    @property
    def lifetime(self) -> float | None:
        """`exp - iat` in seconds, when both are known."""
        if self.expires_at is None or self.issued_at is None:
            return None
        return (self.expires_at - self.issued_at).total_seconds()

    def __repr__(self) -> str:
        exp = self.expires_at.isoformat() if self.expires_at else None
        return f"Token(fingerprint={self.fingerprint!r}, expires_at={exp!r})"

    __str__ = __repr__


def epoch(moment: dt.datetime | None) -> float | None:
    """A claim's time as seconds since the epoch (None stays None)."""
    return moment.timestamp() if moment is not None else None


def _is_number(value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _numeric_date(claims: Mapping[str, Any], name: str) -> dt.datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if not _is_number(value):
        msg = f"JWT claim {name!r} is not a number"
        raise InvalidResponseError(200, reason=msg)
    try:
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        msg = f"JWT claim {name!r} is out of range"
        raise InvalidResponseError(200, reason=msg) from exc


def decode_jwt(value: str) -> Token:
    """Decode a JWT into a `Token` without verifying its signature.

    Raises:
        InvalidResponseError: not a JWT, or a time claim that is not a number.
    """
    if not isinstance(value, str) or not value:
        msg = "the token is empty"
        raise InvalidResponseError(200, reason=msg)
    import jwt  # deferred: PyJWT's import is a few ms that a hot import need not pay

    failure = ""
    try:
        claims = jwt.decode(
            value,
            options={"verify_signature": False, "verify_exp": False, "verify_nbf": False},
            algorithms=None,
        )
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
        failure = type(exc).__name__
    if failure:
        # Raised outside the except, so neither chained nor in __context__: a third-party
        # message could quote part of the token.
        msg = f"the token is not a decodable JWT ({failure})"
        raise InvalidResponseError(200, reason=msg)
    if not isinstance(claims, dict):
        msg = "the JWT payload is not an object"
        raise InvalidResponseError(200, reason=msg)
    return Token(
        value=value,
        expires_at=_numeric_date(claims, "exp"),
        not_before=_numeric_date(claims, "nbf"),
        issued_at=_numeric_date(claims, "iat"),
        claims=MappingProxyType(claims),
    )
