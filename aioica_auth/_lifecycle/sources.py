"""Token sources: the rules of one platform and one credential, as small strategy objects.

The manager only ever asks a source to `renew` (given the current token, if it is still
valid), to `keep_alive` a session, or to `revoke`; each source decides what that means:

| platform | credential         | renew                                                        |
|----------|--------------------|--------------------------------------------------------------|
| ICA v2   | ApiKey             | mint (`POST /api/tokens`); never `:refresh` (it is refused)  |
| ICA v2   | BasicAuth, PsToken | `:refresh` the current JWT; mint when refused or expired     |
| ICA v2   | Jwt                | `:refresh`; when refused, the JWT is used until it expires   |
| console  | ApiKey, BasicAuth  | mint (`POST /v1/tokens` with the manager's query options)    |
| console  | PsToken            | extend the session (`/v1/tokens:refresh`), then mint with it |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar, Protocol

import aiohttp
import attrs
import yarl

from .._checks import check_text
from .._clock import Exchange
from .._credentials import ApiKey, BasicAuth, Jwt, PsToken, fingerprint
from .._errors import ApiError, InvalidResponseError, TokenUnavailableError
from .._events import Event, fields
from .._token import Token, decode_jwt
from .._wire.console import ConsoleTokenApi, MintOptions
from .._wire.ica import IcaTokenApi
from .backoff import is_refusal
from .policy import Policy

__all__ = [
    "ConsoleMintSource",
    "ConsoleSessionSource",
    "IcaJwtSource",
    "IcaMintSource",
    "IcaRefreshSource",
    "Issued",
    "SourceFactory",
    "SourceSpec",
    "TokenSource",
]

logger = logging.getLogger("aioica_auth")


@attrs.frozen
class Issued:
    """A token a source obtained, the exchange that carried it, and whether it was minted."""

    token: Token
    exchange: Exchange
    minted: bool
    shared: bool = False
    """Taken from a fleet's `TokenStore` (published by another manager), not fetched."""


class TokenSource(Protocol):
    """What the manager needs from the rules of one platform + credential."""

    @property
    def keeps_session(self) -> bool:
        """Whether `keep_alive` does anything (a console psToken session): a `ClassVar`, as
        it is a property of the kind of source."""

    extra_budget: float
    """Seconds a renewal may take beyond a keep-alive and a mint (a fleet store's lease)."""

    waiting_for: str | None
    """What the renewal under way waits for beyond the token endpoint (another process's
    renewal, through a fleet store), for the error of a caller whose bound passed; or None."""

    def initial(self) -> Token | None:
        """A token to use before any request (a `Jwt` given by the caller), or None."""

    async def renew(self, current: Token | None) -> Issued:
        """Obtain a new token; `current` is the token in use, if it is still valid."""

    async def keep_alive(self) -> None:
        """Extend the session the tokens come from, if there is one."""

    async def revoke(self, token: Token) -> None:
        """Revoke a token this source obtained, where the platform can."""

    def refused(self, token: Token) -> None:
        """A resource refused `token` (a 401): it is not to be used again."""


class _NoSession:
    keeps_session: ClassVar[bool] = False
    extra_budget = 0.0
    waiting_for: str | None = None

    def initial(self) -> Token | None:
        return None

    async def keep_alive(self) -> None:
        return None

    async def revoke(self, token: Token) -> None:
        return None

    def refused(self, token: Token) -> None:
        return None


@attrs.define
class IcaMintSource(_NoSession):
    """ICA v2 with an API key: every renewal is a fresh mint."""

    api: IcaTokenApi
    credential: ApiKey
    tenant: str | None = None

    async def renew(self, current: Token | None) -> Issued:
        token, reply = await self.api.create(self.credential, tenant=self.tenant)
        return Issued(token, reply.exchange, minted=True)


@attrs.define
class IcaRefreshSource(_NoSession):
    """ICA v2 with a username and password or a psToken: refresh, and mint when refused."""

    api: IcaTokenApi
    credential: BasicAuth | PsToken
    tenant: str | None = None

    async def renew(self, current: Token | None) -> Issued:
        if current is not None:
            try:
                token, reply = await self.api.refresh(current)
            except ApiError as exc:
                if not is_refusal(exc):
                    raise
                logger.info(
                    "refresh of token %s refused (HTTP %d): minting anew",
                    current.fingerprint,
                    exc.status,
                    extra=fields(
                        Event.TOKEN_REFRESH_REFUSED, token_id=current.fingerprint, status=exc.status
                    ),
                )
            else:
                return Issued(token, reply.exchange, minted=False)
        token, reply = await self.api.create(self.credential, tenant=self.tenant)
        return Issued(token, reply.exchange, minted=True)


@attrs.define
class IcaJwtSource(_NoSession):
    """ICA v2 with a JWT the caller already has: refresh it for as long as the server allows."""

    api: IcaTokenApi
    credential: Jwt
    token: Token

    def initial(self) -> Token | None:
        return self.token

    async def renew(self, current: Token | None) -> Issued:
        if current is None:
            msg = (
                "the JWT given to the manager has expired and a JWT cannot be renewed without "
                "a valid one: give the manager an ApiKey, BasicAuth or PsToken instead"
            )
            raise TokenUnavailableError(msg)
        try:
            token, reply = await self.api.refresh(current)
        except ApiError as exc:
            if not is_refusal(exc):
                raise
            msg = (
                f"the server refused to refresh the given JWT (HTTP {exc.status}; a JWT "
                "minted from an API key cannot be refreshed): it is used until it expires; "
                "give the manager the ApiKey itself to have tokens re-minted"
            )
            raise TokenUnavailableError(msg) from exc
        return Issued(token, reply.exchange, minted=False)


@attrs.define
class ConsoleMintSource(_NoSession):
    """Console v1 with an API key or a username and password: every renewal is a mint."""

    api: ConsoleTokenApi
    credential: ApiKey | BasicAuth
    options: MintOptions

    async def renew(self, current: Token | None) -> Issued:
        response, reply = await self.api.create(self.credential, self.options)
        return Issued(self.api.decode(response, reply), reply.exchange, minted=True)

    async def revoke(self, token: Token) -> None:
        await self.api.revoke_token(token)


@attrs.define
class ConsoleSessionSource:
    """Console v1 with a psToken: keep its session alive, mint JWTs with it."""

    api: ConsoleTokenApi
    ps_token: PsToken
    options: MintOptions
    keeps_session: ClassVar[bool] = True
    extra_budget: float = 0.0
    waiting_for: str | None = attrs.field(default=None, init=False)

    def initial(self) -> Token | None:
        return None

    def refused(self, token: Token) -> None:
        return None

    async def renew(self, current: Token | None) -> Issued:
        # The client cannot learn how long a session lasts: extend it whenever a JWT is due.
        await self.keep_alive()
        response, reply = await self.api.create(self.ps_token, self.options)
        return Issued(self.api.decode(response, reply), reply.exchange, minted=True)

    async def keep_alive(self) -> None:
        try:
            response, _ = await self.api.refresh(self.ps_token)
        except ApiError as exc:
            if not is_refusal(exc):
                raise
            msg = (
                f"the psToken session is over (HTTP {exc.status} from /v1/tokens:refresh): "
                "sign in again for a new psToken"
            )
            raise TokenUnavailableError(msg) from exc
        new = response.access_token
        if new and new != self.ps_token.token:
            self.ps_token = PsToken(new)
            logger.info(
                "psToken session renewed with a new psToken %s",
                self.ps_token,
                extra=fields(Event.SESSION_RENEWED, ps_token_id=fingerprint(new)),
            )

    async def revoke(self, token: Token) -> None:
        await self.api.revoke_token(token)


SourceFactory = Callable[[aiohttp.ClientSession, Policy], TokenSource]
"""Builds a manager's source once its session exists (in the running loop)."""


@attrs.frozen
class SourceSpec:
    """What a manager's token source is made of: checked when the manager is built, made into
    a `TokenSource` once its session exists (`spec(session, policy)`, in the running loop).

    A value: it prints (credentials show no secret), compares and is tested without a
    session. Build one with `SourceSpec.ica(...)` or `SourceSpec.console(...)`.
    """

    platform: str  # "ica" or "console"
    credential: ApiKey | BasicAuth | PsToken | Jwt
    base_url: yarl.URL
    tenant: str | None = None
    options: MintOptions = attrs.field(factory=MintOptions)
    given: Token | None = attrs.field(default=None, repr=False, eq=False)  # a Jwt's, decoded

    @classmethod
    def ica(
        cls, credential: ApiKey | BasicAuth | PsToken | Jwt, base_url: yarl.URL, tenant: str | None
    ) -> SourceSpec:
        """ICA v2 for `credential`.

        Raises:
            TypeError: not a credential ICA takes. ValueError: a blank tenant, or a `Jwt` that
                does not decode.
        """
        _check_credential(credential, (ApiKey, BasicAuth, PsToken, Jwt))
        if tenant is not None:
            check_text(tenant, "tenant")
        given = _decode_given(credential) if isinstance(credential, Jwt) else None
        return cls("ica", credential, base_url, tenant, given=given)

    @classmethod
    def console(
        cls, credential: ApiKey | BasicAuth | PsToken, base_url: yarl.URL, options: MintOptions
    ) -> SourceSpec:
        """The console v1 for `credential`, minting with `options`.

        Raises:
            TypeError: not a credential the console takes.
        """
        _check_credential(credential, (ApiKey, BasicAuth, PsToken))
        return cls("console", credential, base_url, options=options)

    @property
    def store_options(self) -> list[str]:
        """The options that tell this spec's tokens apart in a fleet's store key."""
        if self.platform == "ica":
            return [f"tenant={self.tenant or ''}"]
        return [f"{k}={v}" for k, v in self.options.params(return_session_token=False)]

    def __call__(self, session: aiohttp.ClientSession, policy: Policy) -> TokenSource:
        """The source, over `session`."""
        credential, url, timeout = self.credential, str(self.base_url), policy.request_timeout
        if self.platform == "console":
            console = ConsoleTokenApi(session, url, timeout=timeout)
            if isinstance(credential, PsToken):
                return ConsoleSessionSource(console, credential, self.options)
            assert isinstance(credential, ApiKey | BasicAuth)
            return ConsoleMintSource(console, credential, self.options)
        api = IcaTokenApi(session, url, timeout=timeout)
        if isinstance(credential, ApiKey):
            return IcaMintSource(api, credential, self.tenant)
        if isinstance(credential, BasicAuth | PsToken):
            return IcaRefreshSource(api, credential, self.tenant)
        assert self.given is not None
        return IcaJwtSource(api, credential, self.given)


def _check_credential(credential: object, kinds: tuple[type, ...]) -> None:
    if not isinstance(credential, kinds):
        names = ", ".join(k.__name__ for k in kinds)
        msg = f"credential must be one of {names}, not {type(credential).__name__}"
        raise TypeError(msg)


def _decode_given(credential: Jwt) -> Token:
    try:
        return decode_jwt(credential.token)
    except InvalidResponseError:
        msg = "the Jwt credential is not a decodable JWT"
        raise ValueError(msg) from None
