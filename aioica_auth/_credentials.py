"""Credentials: what a caller proves itself with. Their repr and str never show the secret.

Each is checked on construction, and the message of a refusal names the field, never the
value: a `str` (else `TypeError`), not blank, no surrounding whitespace, no control character
anywhere, encodable as UTF-8 (else `ValueError`). What goes in a header as it is (`ApiKey.key`,
`PsToken.token`, `Jwt.token`) must be ASCII; a `BasicAuth.username` has no ':' (RFC 7617).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, ClassVar

import attrs

from ._checks import check_text

__all__ = ["ApiKey", "BasicAuth", "Credential", "Jwt", "PsToken", "fingerprint"]


def fingerprint(secret: str) -> str:
    """A short, stable, non-reversible name for a secret, fit for logs: 8 hex digits of SHA-256."""
    # surrogatepass: naming a secret must never fail, even one no validator has seen.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _where(instance: Any, attribute: attrs.Attribute[str]) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def _not_blank(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    """Usable text (see `check_text`), named `Class.field` in the message."""
    check_text(value, _where(instance, attribute))


def _header_value(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    """Usable text that can go in an HTTP header as it is: ASCII only."""
    _not_blank(instance, attribute, value)
    if not value.isascii():
        msg = (
            f"{_where(instance, attribute)} has a non-ASCII character; it is sent in an HTTP "
            "header, and Illumina keys and tokens are ASCII (a copy-paste slip?)"
        )
        raise ValueError(msg)


def _username(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    _not_blank(instance, attribute, value)
    if ":" in value:
        # RFC 7617 2: the user-id of Basic authentication cannot contain a colon.
        msg = f"{_where(instance, attribute)} must not contain ':' (HTTP Basic forbids it)"
        raise ValueError(msg)


def _secret_repr(cls_name: str, secret: str, extra: str = "") -> str:
    return f"{cls_name}({extra}fingerprint={fingerprint(secret)!r})"


class _OneSecret:
    """A credential that is one secret (the field `_secret` names): shown by its fingerprint."""

    __slots__ = ()
    _secret: ClassVar[str]

    def __repr__(self) -> str:
        return _secret_repr(type(self).__name__, getattr(self, self._secret))

    __str__ = __repr__


@attrs.frozen(repr=False)
class ApiKey(_OneSecret):
    """An Illumina API key, sent as `X-API-Key` to mint JWTs."""

    _secret = "key"
    key: str = attrs.field(validator=_header_value)


@attrs.frozen(repr=False)
class BasicAuth:
    """A username (e-mail address) and password, sent as HTTP Basic to mint JWTs.

    Basic authentication does not work for accounts with single sign-on.
    """

    username: str = attrs.field(validator=_username)
    password: str = attrs.field(validator=_not_blank)

    @property
    def authorization(self) -> str:
        """The `Authorization` header value."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:
        # The username is not a secret, but it is personal data: show its fingerprint too.
        return _secret_repr(
            "BasicAuth", self.password, f"username_fp={fingerprint(self.username)!r}, "
        )

    __str__ = __repr__


@attrs.frozen(repr=False)
class PsToken(_OneSecret):
    """An Illumina psToken (a platform session token), sent as `Bearer` to mint JWTs."""

    _secret = "token"
    token: str = attrs.field(validator=_header_value)


@attrs.frozen(repr=False)
class Jwt(_OneSecret):
    """A JWT you already hold; the manager refreshes it for as long as the server allows."""

    _secret = "token"
    token: str = attrs.field(validator=_header_value)


Credential = ApiKey | BasicAuth | PsToken | Jwt
"""Any credential."""


def auth_headers(credential: Credential) -> dict[str, str]:
    """The request headers that present `credential` to a token endpoint."""
    if isinstance(credential, ApiKey):
        return {"X-API-Key": credential.key}
    if isinstance(credential, BasicAuth):
        return {"Authorization": credential.authorization}
    if isinstance(credential, PsToken | Jwt):
        return {"Authorization": "Bearer " + credential.token}
    msg = f"expected ApiKey, BasicAuth, PsToken or Jwt, not {type(credential).__name__}"
    raise TypeError(msg)


def secrets_of(credential: Credential) -> tuple[str, ...]:
    """The secret strings of a credential, for scrubbing error excerpts."""
    if isinstance(credential, ApiKey):
        return (credential.key,)
    if isinstance(credential, BasicAuth):
        return (credential.password, credential.authorization.split(" ", 1)[1])
    return (credential.token,)
