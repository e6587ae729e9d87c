"""ICA v2 token endpoints (`/ica/rest/api/tokens`, `/ica/rest/api/tokens:refresh`)."""

from __future__ import annotations

from .._checks import check_text
from .._credentials import ApiKey, BasicAuth, Jwt, PsToken, auth_headers, secrets_of
from .._errors import InvalidResponseError
from .._models import IcaTokenBody
from .._token import Token
from .core import Reply, TokenEndpoints, decode_answer

__all__ = ["ICA_BASE_URL", "IcaTokenApi"]

ICA_BASE_URL = "https://ica.illumina.com/ica/rest"
"""The one global ICA v2 API host (regions only change storage)."""

# The success type, then the error type. libica 3.3's generated v2 and v3 clients send only
# the success type (tests/integration/test_libica.py pins that); naming problem+json too is
# harmless, and says we read RFC 7807 errors.
_ACCEPT = "application/vnd.illumina.v3+json, application/problem+json"
_OK = (200, 201)  # the spec says 200; some deployments answered 201


class IcaTokenApi(TokenEndpoints):
    """Raw calls to the ICA v2 token endpoints, over the caller's `aiohttp.ClientSession`.

    Args:
        session: The session to send with; not closed by this object.
        base_url: The API root, `ICA_BASE_URL` by default. A trailing slash is fine.
        timeout: Seconds (or an `aiohttp.ClientTimeout` with a total) for each request.

    Raises:
        ValueError: `base_url` is not https (plain http is allowed on loopback only).
    """

    default_base_url = ICA_BASE_URL

    async def create_jwt_token(
        self, credential: ApiKey | BasicAuth | PsToken, *, tenant: str | None = None
    ) -> Token:
        """`POST /api/tokens`: mint a JWT from an API key, a username and password, or a psToken.

        Args:
            credential: `ApiKey` (sent as `X-API-Key`), `BasicAuth` or `PsToken` (`Bearer`).
            tenant: The tenant name, for a user who belongs to several (Basic auth).

        Returns:
            The JWT, decoded (a JWT minted from an API key cannot be refreshed: mint again).

        Raises:
            TypeError: `credential` is not one of those, or `tenant` is not a `str`.
            ValueError: `tenant` is blank, padded or has a control character.
            ApiError: the server refused (`UnauthorizedError` for a wrong credential, ...).
            TransportError: no answer.
        """
        token, _ = await self.create(credential, tenant=tenant)
        return token

    async def refresh_jwt_token(self, jwt: str | Token | Jwt) -> Token:
        """`POST /api/tokens:refresh`: extend a still-valid JWT not minted from an API key.

        Raises:
            ApiError: the server refused (expired, or minted from an API key).
            TransportError: no answer.
        """
        token, _ = await self.refresh(jwt)
        return token

    async def create(
        self, credential: ApiKey | BasicAuth | PsToken, *, tenant: str | None = None
    ) -> tuple[Token, Reply]:
        """`create_jwt_token`, also returning the reply's timing (for the manager)."""
        if isinstance(credential, Jwt) or not isinstance(credential, ApiKey | BasicAuth | PsToken):
            msg = (
                "create_jwt_token takes an ApiKey, BasicAuth or PsToken; "
                f"got {type(credential).__name__} (a Jwt is refreshed, not used to mint)"
            )
            raise TypeError(msg)
        params: list[tuple[str, str]] = []
        if tenant is not None:
            params.append(("tenant", check_text(tenant, "tenant")))
        return await self._token_call(
            "ica.create", "/api/tokens", auth_headers(credential), secrets_of(credential), params
        )

    async def refresh(self, jwt: str | Token | Jwt) -> tuple[Token, Reply]:
        """`refresh_jwt_token`, also returning the reply's timing (for the manager)."""
        if not isinstance(jwt, Jwt):
            jwt = Jwt(jwt.value if isinstance(jwt, Token) else jwt)
        credential = jwt
        return await self._token_call(
            "ica.refresh",
            "/api/tokens:refresh",
            auth_headers(credential),
            secrets_of(credential),
            [],
        )

    async def _token_call(
        self,
        endpoint: str,
        path: str,
        headers: dict[str, str],
        secrets: tuple[str, ...],
        params: list[tuple[str, str]],
    ) -> tuple[Token, Reply]:
        with self._observed(endpoint, "POST", path) as answered:
            reply = await self._http.request(
                "POST",
                path,
                headers={"Accept": _ACCEPT, **headers},
                params=params,
                ok=_OK,
                secrets=secrets,
                model=IcaTokenBody,
            )
            body: IcaTokenBody = reply.body
            value = body.token or body.access_token
            if not value:
                msg = "the answer has no token"
                raise InvalidResponseError(reply.status, method="POST", url=reply.url, reason=msg)
            token = decode_answer(value, reply)
            answered(reply.status, token.fingerprint)
        return token, reply
