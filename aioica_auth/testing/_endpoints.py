"""The endpoints of the local server: routing, authentication, and one handler each."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
from aiohttp import web
from yarl import URL

from ._state import PS_PREFIX, Grant, Identity, Refusal, Registry
from ._wire import (
    JSON,
    V2_SUCCESS,
    empty_response,
    error_response,
    json_response,
    problem_response,
)

__all__ = ["MALFORMED", "Endpoints", "Settings", "family", "refusal_response", "route"]

_ROUTES: Mapping[tuple[str, str], str] = {
    ("POST", "/ica/rest/api/tokens"): "ica.create",
    ("POST", "/ica/rest/api/tokens:refresh"): "ica.refresh",
    ("POST", "/v1/tokens"): "console.create",
    ("DELETE", "/v1/tokens"): "console.revoke",
    ("GET", "/v1/tokens/details"): "console.details",
    ("POST", "/v1/tokens:refresh"): "console.refresh",
    ("GET", "/redirect"): "redirect",
}
_ALLOWED: Mapping[str, str] = {
    path: ", ".join(sorted(m for m, p in _ROUTES if p == path)) for _, path in _ROUTES
}
_RESOURCE_PREFIXES = ("/ica/rest/api/", "/v1/")
_API_KEY_REFRESH = "Refreshing the JWT is not possible if it has been created using an API-key."
_NO_REFRESH = "The token is no longer able to be refreshed."  # the spec's 401 of console refresh
_BOOLEANS = frozenset({"true", "false"})  # read case-insensitively, as the console does
# Query parameters of POST /v1/tokens that become claims (scopes aside: a list).
_CONSOLE_CLAIMS = (("clientId", "azp"), ("data", "session"), ("cwid", "cwid"), ("cid", "cid"))
_JSON_BODY_TYPES = frozenset({"application/json", "text/json"})
#: A truncated success answer per endpoint (status, content type, body): the "malformed" fault.
MALFORMED: Mapping[str, tuple[int, str, bytes]] = {
    "ica.create": (200, V2_SUCCESS, b'{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ'),
    "ica.refresh": (200, V2_SUCCESS, b'{"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ'),
    "console.create": (201, JSON, b'{"access_token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9'),
    "console.refresh": (201, JSON, b'{"access_token":"ps.'),
    "console.details": (200, JSON, b'{"uid":"'),
    "console.revoke": (200, JSON, b'{"'),
}


class Settings(Protocol):
    """The server settings the handlers read on every request."""

    lifetime: float
    nbf_delay: float
    session_lifetime: float
    rotate_ps_tokens: bool
    resource_clock_lag: float
    tenants: tuple[str, ...]


def route(method: str, path: str) -> str:
    """The endpoint name of a request (``"other"`` for unknown paths and wrong methods)."""
    name = _ROUTES.get((method, path))
    if name is not None:
        return name
    if path not in _ALLOWED and path.startswith(_RESOURCE_PREFIXES):
        return "resource"
    return "other"


def family(endpoint: str, path: str) -> str:
    """``"console"`` (v1 ErrorResponse errors) or ``"ica"`` (v2 Problem errors)."""
    if endpoint.startswith("console.") or path.startswith("/v1/"):
        return "console"
    return "ica"


def refusal_response(
    endpoint: str,
    request: web.Request,
    refusal: Refusal,
    *,
    now: float,
    retry_after: str | None = None,
) -> web.Response:
    """The error answer of `refusal` in the format of the endpoint's API."""
    if endpoint == "console.details" and refusal.status == 401:
        response = empty_response(401)  # the spec gives this answer no schema
    elif family(endpoint, request.path) == "console":
        response = error_response(refusal.status, refusal.message, retry_after=retry_after)
    else:
        instance = str(request.url.with_query(None))
        response = problem_response(
            refusal.status, refusal.message, instance=instance, now=now, retry_after=retry_after
        )
    if refusal.allow is not None:
        response.headers["Allow"] = refusal.allow
    return response


def _authorization(request: web.Request) -> tuple[str, str] | None:
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def _bearer(request: web.Request) -> str:
    auth = _authorization(request)
    if auth is None or auth[0] != "bearer" or not auth[1]:
        raise Refusal(401, "A bearer token is required.")
    return auth[1]


def _access_token(request: web.Request, body: bytes) -> str:
    """The `access_token` of an AccessTokenRequest body (console refresh and revoke)."""
    ctype = request.content_type
    if ctype not in _JSON_BODY_TYPES and not (
        ctype.startswith("application/") and ctype.endswith("+json")
    ):
        raise Refusal(415, "The request body must be JSON (application/json).")
    try:
        payload = json.loads(body)
    except ValueError:
        raise Refusal(400, "The request body is not valid JSON.") from None
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise Refusal(400, 'The request body must be {"access_token": "<token>"}.')
    return token


_Handler = Callable[[web.Request, bytes], Awaitable[web.Response]]


class Endpoints:
    """The handlers; each answers or raises `Refusal`."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self._settings = settings
        self._registry = registry
        self._handlers: Mapping[str, _Handler] = {
            "ica.create": self._ica_create,
            "ica.refresh": self._ica_refresh,
            "console.create": self._console_create,
            "console.details": self._console_details,
            "console.refresh": self._console_refresh,
            "console.revoke": self._console_revoke,
            "resource": self._resource,
            "redirect": self._redirect,
            "other": self._other,
        }

    async def handle(self, endpoint: str, request: web.Request, body: bytes) -> web.Response:
        """Answer a request of `endpoint` whose body was `body`.

        Raises:
            Refusal: For any error answer.
        """
        return await self._handlers[endpoint](request, body)

    def _authenticate(
        self,
        request: web.Request,
        *,
        jwt: bool = True,
        ps: bool = True,
        header_key: bool = False,
        query_key: bool = False,
        basic_key: bool = True,
    ) -> Grant:
        """Every credential presented must be valid; Authorization wins over an API key.

        Args:
            request: The request.
            jwt: Whether a bearer JWT is accepted.
            ps: Whether a bearer psToken is accepted.
            header_key: Whether an ``X-API-Key`` header is read (elsewhere it is ignored).
            query_key: Whether the obsolete ``api_key`` query parameter of v1 is read.
            basic_key: Whether Basic may carry the API key (the console's "Basic with apiKey").
        """
        grants: list[Grant] = []
        key = request.headers.get("X-API-Key") if header_key else None
        if key is None and query_key:
            key = request.query.get("api_key")
        if key is not None:
            grants.append(self._registry.check_api_key(key))
        auth = _authorization(request)
        if auth is not None:
            scheme, credentials = auth
            if scheme == "basic":
                grants.append(self._registry.check_basic(credentials, allow_key=basic_key))
            elif scheme == "bearer":
                check = self._registry.check_bearer
                grants.append(check(credentials, allow_jwt=jwt, allow_ps=ps))
            else:
                raise Refusal(401, "The Authorization scheme is not supported.")
        if not grants:
            raise Refusal(401, "No credentials were presented.")
        return grants[-1]

    def _with_tenant(self, grant: Grant, tenant: str) -> Grant:
        return attrs.evolve(grant, identity=Identity(grant.identity.sub, tenant))

    def _mint(self, grant: Grant, extra: Mapping[str, Any] | None = None) -> str:
        return self._registry.mint(
            grant, lifetime=self._settings.lifetime, nbf_delay=self._settings.nbf_delay, extra=extra
        )

    async def _ica_create(self, request: web.Request, body: bytes) -> web.Response:
        grant = self._authenticate(request, jwt=False, header_key=True, basic_key=False)
        tenant = request.query.get("tenant")
        if tenant is not None and tenant not in self._settings.tenants:
            raise Refusal(400, "The user is not a member of the given tenant.")
        if grant.identity.tenant:  # an API key or a psToken: bound to one tenant
            if tenant is not None and tenant != grant.identity.tenant:
                raise Refusal(403, "The credential belongs to another tenant than the one given.")
        else:  # Basic: the user chooses among their tenants
            if tenant is None and len(self._settings.tenants) > 1:
                raise Refusal(400, "The user has several tenants: give the tenant parameter.")
            grant = self._with_tenant(grant, tenant or self._settings.tenants[0])
        return json_response(200, {"token": self._mint(grant, {})}, V2_SUCCESS)

    async def _ica_refresh(self, request: web.Request, body: bytes) -> web.Response:
        grant = self._registry.check_bearer(_bearer(request), allow_jwt=True, allow_ps=False)
        if not grant.refreshable:
            raise Refusal(400, _API_KEY_REFRESH)
        return json_response(200, {"token": self._mint(grant)}, V2_SUCCESS)

    async def _console_create(self, request: web.Request, body: bytes) -> web.Response:
        grant = self._authenticate(request, header_key=True, query_key=True)
        query = request.query
        session = [v.lower() for v in query.getall("returnSessionToken", [])]
        if len(session) > 1 or any(v not in _BOOLEANS for v in session):
            raise Refusal(400, "returnSessionToken must be true or false.")
        scopes = query.getall("scopes", [])
        if len(scopes) > 1:
            raise Refusal(400, "scopes must be sent once, as one comma-separated value.")
        domain = query.get("domain")
        if domain is not None and domain not in self._settings.tenants:
            raise Refusal(403, "The user is not a member of the given domain.")
        grant = self._with_tenant(
            grant, domain or grant.identity.tenant or self._settings.tenants[0]
        )
        if session == ["true"]:
            ps_token = self._registry.open_session(grant, self._settings.session_lifetime)
            return json_response(201, {"access_token": ps_token, "token_type": "psToken"}, JSON)
        extra: dict[str, Any] = {}
        for param, claim in _CONSOLE_CLAIMS:
            if param in query:
                extra[claim] = query[param]
        if scopes:
            extra["scopes"] = [s.strip() for s in scopes[0].split(",") if s.strip()]
        token = self._mint(grant, extra)
        return json_response(201, {"access_token": token, "token_type": "Bearer"}, JSON)

    async def _console_details(self, request: web.Request, body: bytes) -> web.Response:
        grant = self._authenticate(request)
        tenant = grant.identity.tenant or self._settings.tenants[0]  # Basic: the home tenant
        tenant_id = self._registry.tenant_ids[tenant]
        workgroup = str(grant.extra.get("cwid", self._registry.workgroup_id))
        acls = [f"tid:{tenant_id}", f"wid:{workgroup}"]
        if "cid" in grant.extra:
            acls.append(f"cid:{grant.extra['cid']}")
        details = {
            "uid": grant.identity.sub,
            "name": "Test User",
            "username": self._registry.username,
            "currentWorkgroup": {
                "id": workgroup,
                "name": "test-workgroup",
                "description": "The workgroup of the local ICA test server",
            },
            "tid": self._registry.tid(tenant),
            "acls": acls,
            "domain": {"id": tenant_id, "name": tenant},
        }
        return json_response(200, details, JSON)

    async def _console_refresh(self, request: web.Request, body: bytes) -> web.Response:
        try:
            self._authenticate(request)
        except Refusal:
            auth = _authorization(request)
            if auth is not None and auth[0] == "bearer" and auth[1].startswith(PS_PREFIX):
                raise Refusal(401, _NO_REFRESH) from None  # a psToken that has had its day
            raise
        token = _access_token(request, body)
        new = self._registry.extend_session(
            token, self._settings.session_lifetime, rotate=self._settings.rotate_ps_tokens
        )
        return json_response(201, {"access_token": new, "token_type": "psToken"}, JSON)

    async def _console_revoke(self, request: web.Request, body: bytes) -> web.Response:
        self._authenticate(request)
        self._registry.revoke(_access_token(request, body))
        return empty_response(204)

    async def _resource(self, request: web.Request, body: bytes) -> web.Response:
        self._registry.check_jwt(_bearer(request), lag=self._settings.resource_clock_lag)
        answer = {"ok": True, "path": request.path, "method": request.method, "read": len(body)}
        return json_response(200, answer, JSON)

    async def _redirect(self, request: web.Request, body: bytes) -> web.Response:
        target = request.query.get("to", "")
        try:
            absolute = URL(target).is_absolute()
        except ValueError:
            absolute = False
        if not absolute:
            raise Refusal(400, "Give an absolute URL in the 'to' query parameter.")
        return web.Response(status=302, headers={"Location": target})

    async def _other(self, request: web.Request, body: bytes) -> web.Response:
        allowed = _ALLOWED.get(request.path)
        if allowed is None:
            raise Refusal(404, "No such endpoint.")
        raise Refusal(405, "Method not allowed.", allow=allowed)
