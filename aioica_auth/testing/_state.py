"""What the local server knows: its user, tenants, issued JWTs and psToken sessions."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from ._jwt import decode_verified, make_jwt, tenant_tid

__all__ = ["Grant", "Identity", "Refusal", "Registry"]

_PS_PREFIX = "ps."


class Refusal(Exception):
    """An HTTP refusal raised inside a handler: the status and a message free of secrets."""

    def __init__(self, status: int, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow


@attrs.frozen
class Identity:
    """Who a token speaks for: the user id and the tenant name."""

    sub: str
    tenant: str


@attrs.frozen
class Grant:
    """An authenticated request: who, whether JWTs it yields may be refreshed, extra claims.

    `identity.tenant` is empty when the credential (Basic) leaves the tenant to choose.
    """

    identity: Identity
    refreshable: bool
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.define
class _Session:
    identity: Identity
    expires_at: float


@attrs.define
class Registry:
    """Credentials, issued JWTs (by `jti`), revocations and psToken sessions."""

    clock: Callable[[], float]
    tenants: Sequence[str]
    username: str = "user@example.org"
    api_key: str = attrs.field(factory=lambda: "test-apikey-" + secrets.token_hex(16))
    password: str = attrs.field(factory=lambda: secrets.token_urlsafe(18))
    user_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    workgroup_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    key: str = attrs.field(factory=lambda: secrets.token_urlsafe(48))
    tenant_ids: dict[str, str] = attrs.field(factory=dict)
    issued: dict[str, Grant] = attrs.field(factory=dict)
    revoked: set[str] = attrs.field(factory=set)
    sessions: dict[str, _Session] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self.tenant_ids = {name: str(uuid.uuid4()) for name in self.tenants}

    def __repr__(self) -> str:
        return f"Registry(tenants={list(self.tenants)!r})"

    # -- credentials -----------------------------------------------------------------------

    def check_api_key(self, presented: str) -> Grant:
        """The grant of an API key; the key belongs to the first tenant."""
        if not hmac.compare_digest(presented.encode(), self.api_key.encode()):
            raise Refusal(401, "The API key is not valid.")
        return Grant(Identity(self.user_id, self.tenants[0]), refreshable=False)

    def check_basic(self, encoded: str) -> Grant:
        """The grant of ``Basic base64(username:password)``; the tenant is left open."""
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Refusal(401, "The Basic credentials are malformed.") from None
        good_user = hmac.compare_digest(user.encode(), self.username.encode())
        good_password = hmac.compare_digest(password.encode(), self.password.encode())
        if not (sep and good_user and good_password):
            raise Refusal(401, "The username or password is not valid.")
        return Grant(Identity(self.user_id, ""), refreshable=True)

    def check_session(self, ps_token: str) -> Grant:
        """The grant of a live psToken."""
        session = self.live_session(ps_token)
        if session is None:
            raise Refusal(401, "The psToken is not valid or its session has ended.")
        return Grant(session.identity, refreshable=True)

    def check_jwt(self, token: str, *, lag: float = 0.0, check_nbf: bool = True) -> Grant:
        """The grant a JWT issued here carries, if valid at ``clock() - lag`` (no leeway).

        Raises:
            Refusal: 401 when the token is foreign, forged, revoked, expired or not yet valid.
        """
        claims = decode_verified(token, self.key)
        grant = None if claims is None else self.issued.get(str(claims.get("jti")))
        if claims is None or grant is None:
            raise Refusal(401, "The JWT was not issued by this server.")
        if claims["jti"] in self.revoked:
            raise Refusal(401, "The JWT has been revoked.")
        at = self.clock() - lag
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if check_nbf and isinstance(nbf, int | float) and at < nbf:
            raise Refusal(401, "The JWT is not valid yet (nbf).")
        if isinstance(exp, int | float) and at >= exp:
            raise Refusal(401, "The JWT has expired.")
        return grant

    def check_bearer(self, token: str, *, allow_jwt: bool, allow_ps: bool) -> Grant:
        """The grant of a bearer token of the allowed kinds."""
        if allow_ps and token.startswith(_PS_PREFIX):
            return self.check_session(token)
        if allow_jwt and token.count(".") == 2 and not token.startswith(_PS_PREFIX):
            # The token service judges its own JWTs without nbf: it issued them on its own
            # clock. Expiry and revocation still count.
            return self.check_jwt(token, check_nbf=False)
        kinds = " or ".join(k for k, ok in (("a JWT", allow_jwt), ("a psToken", allow_ps)) if ok)
        raise Refusal(401, f"The bearer token must be {kinds} issued by this server.")

    # -- tokens ----------------------------------------------------------------------------

    def tid(self, tenant: str) -> str:
        """The `tid` claim of a tenant."""
        return tenant_tid(self.tenant_ids[tenant])

    def mint(
        self,
        grant: Grant,
        *,
        lifetime: float,
        nbf_delay: float,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """Issue a JWT for `grant` now; remember it by `jti`."""
        iat = round(self.clock(), 3)  # so that exp - iat is the lifetime, to the millisecond
        jti = str(uuid.uuid4())
        extra = dict(grant.extra if extra is None else extra)
        claims = {
            **extra,
            "sub": grant.identity.sub,
            "tid": self.tid(grant.identity.tenant),
            "tns": grant.identity.tenant,
            "jti": jti,
        }
        token = make_jwt(
            issued_at=iat,
            not_before=iat + nbf_delay,
            expires_at=iat + lifetime,
            claims=claims,
            key=self.key,
        )
        self.issued[jti] = attrs.evolve(grant, extra=extra)
        return token

    def open_session(self, grant: Grant, lifetime: float) -> str:
        """Start a psToken session for `grant` lasting `lifetime` seconds."""
        token = _PS_PREFIX + secrets.token_urlsafe(32)
        self.sessions[token] = _Session(grant.identity, self.clock() + lifetime)
        return token

    def live_session(self, ps_token: str) -> _Session | None:
        """The session of `ps_token` if it is live, else None (and an expired one is dropped)."""
        session = self.sessions.get(ps_token)
        if session is not None and session.expires_at <= self.clock():
            del self.sessions[ps_token]
            return None
        return session

    def extend_session(self, ps_token: str, lifetime: float, *, rotate: bool) -> str:
        """Extend a live session; with `rotate`, move it to a new psToken (the old one dies).

        Raises:
            Refusal: 401 when the session is not live.
        """
        session = self.live_session(ps_token)
        if session is None:
            raise Refusal(401, "The token is no longer able to be refreshed.")
        session.expires_at = self.clock() + lifetime
        if not rotate:
            return ps_token
        del self.sessions[ps_token]
        new = _PS_PREFIX + secrets.token_urlsafe(32)
        self.sessions[new] = session
        return new

    def revoke(self, token: str) -> None:
        """End a psToken session, or revoke a JWT issued here; anything else is ignored."""
        if self.sessions.pop(token, None) is not None:
            return
        claims = decode_verified(token, self.key)
        if claims is not None and "jti" in claims:
            self.revoked.add(str(claims["jti"]))

    def expire_session(self, ps_token: str) -> None:
        """End a psToken session as if its time had run out."""
        self.sessions.pop(ps_token, None)
