"""What the local server knows: its user, tenants, issued JWTs and psToken sessions.

Both registries are bounded, since `aioica-auth serve` may run for days: JWTs are forgotten
`retention()` seconds after their `exp` and psToken sessions when they end (swept every time the
registries have doubled since the last sweep, so the cost per token stays constant), and each
registry keeps at most `max_tokens` entries, forgetting the oldest first. A forgotten JWT that
has not yet expired is refused as one this server never issued.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from ._jwt import decode_verified, make_jwt, tenant_tid

__all__ = ["PS_PREFIX", "Grant", "Identity", "Refusal", "Registry"]

PS_PREFIX = "ps."  #: How psTokens made here begin (JWTs never do).
_SWEEP_MIN = 1024  # no sweep below this many entries: small tests never see one
_Entry = TypeVar("_Entry")


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
class _Issued:
    grant: Grant
    expires_at: float
    revoked: bool = False


def _no_retention() -> float:
    return 0.0


@attrs.define
class Registry:
    """Credentials, issued JWTs (by `jti`, revocations marked there) and psToken sessions.

    `max_tokens` bounds each of `issued` and `sessions`; `retention()` is how long past its
    `exp` a JWT is remembered (so a resource whose clock lags still knows it).
    """

    clock: Callable[[], float]
    tenants: Sequence[str]
    max_tokens: int = 100_000
    retention: Callable[[], float] = _no_retention
    username: str = "user@example.org"
    api_key: str = attrs.field(factory=lambda: "test-apikey-" + secrets.token_hex(16))
    password: str = attrs.field(factory=lambda: secrets.token_urlsafe(18))
    user_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    workgroup_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    key: str = attrs.field(factory=lambda: secrets.token_urlsafe(48))
    tenant_ids: dict[str, str] = attrs.field(factory=dict)
    issued: dict[str, _Issued] = attrs.field(factory=dict)
    sessions: dict[str, _Session] = attrs.field(factory=dict)
    _sweep_at: int = attrs.field(default=_SWEEP_MIN, init=False)

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

    def check_basic(self, encoded: str, *, allow_key: bool = False) -> Grant:
        """The grant of ``Basic base64(username:password)``; the tenant is left open.

        With `allow_key` (the console's "Basic with apiKey"), ``Basic base64(<api key>:)``,
        the key as the user-id with an empty password, is the API key's grant.
        """
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Refusal(401, "The Basic credentials are malformed.") from None
        good_user = hmac.compare_digest(user.encode(), self.username.encode())
        good_password = hmac.compare_digest(password.encode(), self.password.encode())
        if sep and good_user and good_password:
            return Grant(Identity(self.user_id, ""), refreshable=True)
        if allow_key and sep and not password:
            return self.check_api_key(user)
        raise Refusal(401, "The username or password is not valid.")

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
        if claims is None:
            raise Refusal(401, "The JWT was not issued by this server.")
        entry = self.issued.get(str(claims.get("jti")))
        if entry is not None and entry.revoked:
            raise Refusal(401, "The JWT has been revoked.")
        at = self.clock() - lag
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if check_nbf and isinstance(nbf, int | float) and at < nbf:
            raise Refusal(401, "The JWT is not valid yet (nbf).")
        if isinstance(exp, int | float) and at >= exp:
            raise Refusal(401, "The JWT has expired.")
        if entry is None:  # signed here, but forgotten (see the module docstring)
            raise Refusal(401, "The JWT was not issued by this server.")
        return entry.grant

    def check_bearer(self, token: str, *, allow_jwt: bool, allow_ps: bool) -> Grant:
        """The grant of a bearer token of the allowed kinds."""
        if allow_ps and token.startswith(PS_PREFIX):
            return self.check_session(token)
        if allow_jwt and token.count(".") == 2 and not token.startswith(PS_PREFIX):
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
        self._remember(self.issued, jti, _Issued(attrs.evolve(grant, extra=extra), iat + lifetime))
        return token

    def open_session(self, grant: Grant, lifetime: float) -> str:
        """Start a psToken session for `grant` lasting `lifetime` seconds."""
        token = PS_PREFIX + secrets.token_urlsafe(32)
        self._remember(self.sessions, token, _Session(grant.identity, self.clock() + lifetime))
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
        del self.sessions[ps_token]  # re-inserted last: the oldest are forgotten first
        new = PS_PREFIX + secrets.token_urlsafe(32) if rotate else ps_token
        self._remember(self.sessions, new, session)
        return new

    def revoke(self, token: str) -> None:
        """End a psToken session, or revoke a JWT issued here; anything else is ignored."""
        if self.sessions.pop(token, None) is not None:
            return
        claims = decode_verified(token, self.key)
        entry = None if claims is None else self.issued.get(str(claims.get("jti")))
        if entry is not None:
            entry.revoked = True  # remembered until the JWT is forgotten, after its exp

    def expire_session(self, ps_token: str) -> None:
        """End a psToken session as if its time had run out."""
        self.sessions.pop(ps_token, None)

    # -- bounds ----------------------------------------------------------------------------

    def _remember(self, registry: dict[str, _Entry], name: str, entry: _Entry) -> None:
        registry[name] = entry
        while len(registry) > self.max_tokens:
            del registry[next(iter(registry))]  # insertion order: the oldest first
        if len(self.issued) + len(self.sessions) >= self._sweep_at:
            self.sweep()

    def sweep(self) -> None:
        """Forget JWTs `retention()` seconds past their `exp`, and psToken sessions that ended."""
        now = self.clock()
        cutoff = now - max(0.0, self.retention())
        self.issued = {k: v for k, v in self.issued.items() if v.expires_at > cutoff}
        self.sessions = {k: v for k, v in self.sessions.items() if v.expires_at > now}
        self._sweep_at = max(_SWEEP_MIN, 2 * (len(self.issued) + len(self.sessions)))
