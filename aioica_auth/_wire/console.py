"""Illumina platform console v1 token endpoints (`/v1/tokens*`)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .._checks import check_text
from .._credentials import (
    ApiKey,
    BasicAuth,
    Credential,
    Jwt,
    PsToken,
    auth_headers,
    fingerprint,
    secrets_of,
)
from .._errors import InvalidResponseError
from .._models import AccessTokenRequest, TokenDetailResponse, TokenResponse, converter
from .._token import Token
from .core import Reply, TokenEndpoints, decode_answer

__all__ = ["CONSOLE_BASE_URL", "ConsoleTokenApi", "MintOptions"]

CONSOLE_BASE_URL = "https://aps2.platform.illumina.com"
"""The console host of the default region; others are `https://<region>.platform.illumina.com`."""

_JSON = "application/json"


def _optional_text(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        check_text(value, attribute.name)


def _scopes(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        items = list(value)
    else:
        msg = f"scopes must be a str or an iterable of str, not {type(value).__name__}"
        raise TypeError(msg)
    for item in items:
        if "," in check_text(item, "scopes"):
            # Sent as one comma-separated value: a comma would split a scope in two.
            msg = "scopes must not contain ',' (pass several scopes as a list)"
            raise ValueError(msg)
    return tuple(items)


@attrs.frozen
class MintOptions:
    """The optional query parameters of console `POST /v1/tokens` (see `create_token`).

    Raises:
        TypeError: an option that is not a `str` (or, for `scopes`, an iterable of `str`).
        ValueError: a blank or padded option, or one with a control character.
    """

    client_id: str | None = attrs.field(default=None, validator=_optional_text)
    domain: str | None = attrs.field(default=None, validator=_optional_text)
    data: str | None = attrs.field(default=None, validator=_optional_text)
    scopes: tuple[str, ...] | None = attrs.field(default=None, converter=_scopes)
    cwid: str | None = attrs.field(default=None, validator=_optional_text)
    cid: str | None = attrs.field(default=None, validator=_optional_text)

    def params(self, *, return_session_token: bool) -> list[tuple[str, str]]:
        """The query, in the spec's order, with `scopes` as one comma-separated value."""
        pairs = [
            ("clientId", self.client_id),
            ("domain", self.domain),
            ("data", self.data),
            ("scopes", ",".join(self.scopes) if self.scopes else None),
            ("cwid", self.cwid),
            ("cid", self.cid),
        ]
        params = [(name, value) for name, value in pairs if value is not None]
        if return_session_token:
            params.append(("returnSessionToken", "true"))
        return params


class ConsoleTokenApi(TokenEndpoints):
    """Raw calls to the console v1 token endpoints, over the caller's `aiohttp.ClientSession`.

    The obsolete `api_key` query parameter of `POST /v1/tokens` is deliberately never sent: a
    key in a URL ends up in proxy and access logs. The key always goes in `X-API-Key`.

    Args:
        session: The session to send with; not closed by this object.
        base_url: `https://<region>.platform.illumina.com`, `CONSOLE_BASE_URL` by default.
        timeout: Seconds (or an `aiohttp.ClientTimeout` with a total) for each request.

    Raises:
        ValueError: `base_url` is not https (plain http is allowed on loopback only).
    """

    default_base_url = CONSOLE_BASE_URL

    async def create_token(
        self,
        credential: Credential,
        *,
        client_id: str | None = None,
        domain: str | None = None,
        data: str | None = None,
        scopes: str | Iterable[str] | None = None,
        cwid: str | None = None,
        cid: str | None = None,
        return_session_token: bool = False,
        authorization: BasicAuth | PsToken | Jwt | None = None,
    ) -> TokenResponse:
        """`POST /v1/tokens`: mint a JWT, or a psToken with `return_session_token=True`.

        Args:
            credential: `ApiKey` (`X-API-Key`), `BasicAuth`, or a `PsToken` / `Jwt` (`Bearer`).
            client_id: Sets the JWT's authorized party (`clientId`).
            domain: The domain you are logging into.
            data: Custom metadata for the JWT's session field.
            scopes: Limit the token to these scopes; sent as one comma-separated value.
            cwid: The current workgroup to set on the token.
            cid: The current context (project) to set on the token.
            return_session_token: Ask for a psToken instead of a JWT.
            authorization: With an `ApiKey` credential, an `Authorization` to send beside it
                (for example a personal JWT when minting a project-scoped one).

        Raises:
            TypeError: an option of the wrong type (`return_session_token` must be a bool).
            ValueError: a blank or padded option, or one with a control character.
            ApiError: the server refused. TransportError: no answer.
        """
        options = MintOptions(client_id, domain, data, scopes, cwid, cid)
        response, _ = await self.create(
            credential,
            options,
            return_session_token=return_session_token,
            authorization=authorization,
        )
        return response

    async def get_token_details(self, credential: Credential) -> TokenDetailResponse:
        """`GET /v1/tokens/details`: who a bearer token, or Basic credentials, speak for.

        Args:
            credential: A `Jwt` or `PsToken` (`Bearer`), or `BasicAuth`: the schemes the spec
                lists here. An `ApiKey` (`X-API-Key`) is not one of them: the server answers
                401 (`UnauthorizedError`).

        Raises:
            ApiError: the server refused. TransportError: no answer.
        """
        reply = await self._http.request(
            "GET",
            "/v1/tokens/details",
            headers={"Accept": _JSON, **auth_headers(credential)},
            ok=(200,),
            secrets=secrets_of(credential),
            model=TokenDetailResponse,
        )
        details: TokenDetailResponse = reply.body
        return details

    async def refresh_token(
        self, access_token: str | PsToken, *, authorization: Credential | None = None
    ) -> TokenResponse:
        """`POST /v1/tokens:refresh`: extend a psToken session.

        Args:
            access_token: The psToken whose session to extend (sent in the body).
            authorization: Who asks; by default the psToken itself, as `Bearer`.

        Returns:
            The answer; its `access_token` is the psToken to use from now on (it may differ).

        Raises:
            ApiError: refused (`UnauthorizedError` once the session can no longer be
                refreshed). TransportError: no answer.
        """
        response, _ = await self.refresh(access_token, authorization=authorization)
        return response

    async def revoke_token(
        self, access_token: str | PsToken | Jwt | Token, *, authorization: Credential | None = None
    ) -> None:
        """`DELETE /v1/tokens`: revoke a psToken or a JWT.

        Args:
            access_token: The token to revoke (sent in the body).
            authorization: Who asks; by default the token itself, as `Bearer`.

        Raises:
            ApiError: the server refused. TransportError: no answer.
        """
        await self._about(access_token, authorization, "DELETE", "/v1/tokens", ok=(200, 204))

    async def create(
        self,
        credential: Credential,
        options: MintOptions,
        *,
        return_session_token: bool = False,
        authorization: BasicAuth | PsToken | Jwt | None = None,
    ) -> tuple[TokenResponse, Reply]:
        """`create_token` with its options in one object, also returning the reply's timing."""
        if not isinstance(return_session_token, bool):
            msg = f"return_session_token must be a bool, not {type(return_session_token).__name__}"
            raise TypeError(msg)
        headers = {"Accept": _JSON, **auth_headers(credential)}
        secrets = secrets_of(credential)
        if authorization is not None:
            if not isinstance(credential, ApiKey):
                msg = "authorization= goes beside an ApiKey credential only"
                raise ValueError(msg)
            headers.update(auth_headers(authorization))
            secrets += secrets_of(authorization)
        with self._observed("console.create", "POST", "/v1/tokens") as answered:
            reply = await self._http.request(
                "POST",
                "/v1/tokens",
                headers=headers,
                params=options.params(return_session_token=return_session_token),
                ok=(200, 201),
                secrets=secrets,
                model=TokenResponse,
            )
            response = _with_token(reply)
            answered(reply.status, fingerprint(response.access_token or ""))
        return response, reply

    async def refresh(
        self, access_token: str | PsToken, *, authorization: Credential | None = None
    ) -> tuple[TokenResponse, Reply]:
        """`refresh_token`, also returning the reply's timing (for the manager)."""
        reply = await self._about(
            access_token,
            authorization,
            "POST",
            "/v1/tokens:refresh",
            ok=(200, 201),
            model=TokenResponse,
        )
        return _with_token(reply), reply

    async def _about(
        self,
        access_token: str | PsToken | Jwt | Token,
        authorization: Credential | None,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...],
        model: type[TokenResponse] | None = None,
    ) -> Reply:
        """A request about one token (sent in the body), asked by `authorization`, by default
        the token itself as `Bearer`."""
        token = _bearer(access_token)
        who = authorization or token
        endpoint = "console.revoke" if method == "DELETE" else "console.refresh"
        with self._observed(endpoint, method, path) as answered:
            reply = await self._http.request(
                method,
                path,
                headers={"Accept": _JSON, **auth_headers(who)},
                json_body=converter.unstructure(AccessTokenRequest(token.token)),
                ok=ok,
                secrets=secrets_of(token) + secrets_of(who),
                model=model,
            )
            answered(reply.status)
        return reply

    @staticmethod
    def decode(response: TokenResponse, reply: Reply) -> Token:
        """The JWT of a create answer, decoded."""
        return decode_answer(response.access_token or "", reply)


def _bearer(token: str | PsToken | Jwt | Token) -> PsToken | Jwt:
    """Any token-like argument as a credential that presents it as `Bearer`."""
    if isinstance(token, PsToken | Jwt):
        return token
    if isinstance(token, Token):
        return Jwt(token.value)
    return PsToken(check_text(token, "access_token"))


def _with_token(reply: Reply) -> TokenResponse:
    response: TokenResponse = reply.body
    if not response.access_token:
        msg = "the answer has no access_token"
        raise InvalidResponseError(reply.status, method="POST", url=reply.url, reason=msg)
    return response
