"""Drive libica 2.5.0's generated `libconsole` TokensApi against a running LocalIcaServer.

Run by tests/integration/test_libconsole.py inside a side virtual environment that has libica
2.5.0 (the last release that ships `libconsole`; it cannot share an environment with libica 3.3),
never imported by the suite itself. Reads the server's settings as JSON on stdin
(``base_url``, ``api_key``, ``username``, ``password``), runs every case below in order, and
writes one JSON document to stdout: ``{"libica": version, "cases": [{"name", ...}]}``.

Each case reports what libconsole made of the answer: for a success the HTTP status, the
model's class and fields (a JWT as its claims, a psToken as its kind), for an
`ApiException` its status, content type and body parsed by libconsole's own deserializer
into `ErrorResponse`. Tokens, the API key and the password are never written out: the
output can end up in a failing test's message.
"""

from __future__ import annotations

import base64
import json
import sys
import types
from importlib.metadata import version
from typing import Any

from libica.openapi import libconsole
from libica.openapi.libconsole.api.tokens_api import TokensApi
from libica.openapi.libconsole.exceptions import ApiException

SCOPES = ["GDS.FILES.READ", "BSSH.RUNS.READ"]


def claims(token: str) -> dict[str, Any]:
    """The unverified claims of a JWT."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def describe(value: Any) -> dict[str, Any]:
    """What a libconsole answer holds, secrets left out."""
    if value is None:
        return {"model": None}
    facts: dict[str, Any] = {"model": type(value).__name__}
    if isinstance(value, libconsole.TokenResponse):
        token = value.access_token or ""
        facts["token_type"] = value.token_type
        if token.count(".") == 2:
            facts["kind"], facts["claims"] = "jwt", claims(token)
        else:
            facts["kind"] = "ps" if token.startswith("ps.") else "other"
    else:
        facts["fields"] = value.to_dict()
    return facts


class Driver:
    """The server's settings, the tokens gathered so far, and the report."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.host = settings["base_url"]
        self.key = settings["api_key"]
        self.username = settings["username"]
        self.password = settings["password"]
        self.cases: list[dict[str, Any]] = []

    def api(self, auth: tuple[str, str] | None = None) -> Any:
        """A TokensApi whose configuration presents `auth`: ("bearer", token),
        ("basic", "user") for username:password, ("basic", "key") for Basic with apiKey."""
        configuration = libconsole.Configuration(host=self.host)
        if auth is not None and auth[0] == "bearer":
            configuration.api_key = {"Authorization": auth[1]}
            configuration.api_key_prefix = {"Authorization": "Bearer"}
        elif auth == ("basic", "user"):
            configuration.username, configuration.password = self.username, self.password
        elif auth == ("basic", "key"):
            configuration.username, configuration.password = self.key, ""
        elif auth == ("basic", "wrong"):
            configuration.username, configuration.password = self.username, "wrong-pw-3"
        return TokensApi(libconsole.ApiClient(configuration))

    def run(
        self, name: str, method: str, auth: tuple[str, str] | None = None, **kwargs: Any
    ) -> Any:
        """Call `method` of TokensApi; record the outcome; return the model (None on error)."""
        client = self.api(auth)
        try:
            data, status, headers = getattr(client, method + "_with_http_info")(**kwargs)
        except ApiException as exc:
            self.cases.append({"name": name, **self.refusal(client, exc)})
            return None
        finally:
            client.api_client.close()
        self.cases.append(
            {
                "name": name,
                "status": status,
                "content_type": headers.get("Content-Type"),
                **describe(data),
            }
        )
        return data

    @staticmethod
    def refusal(client: Any, exc: Any) -> dict[str, Any]:
        """An ApiException's status, content type and body, parsed by libconsole itself."""
        body = exc.body or b""
        facts: dict[str, Any] = {
            "error": type(exc).__name__,
            "status": exc.status,
            "content_type": exc.headers.get("Content-Type"),
            "body_bytes": len(body),
        }
        if body:
            raw = json.loads(body)
            parsed = client.api_client.deserialize(
                types.SimpleNamespace(data=body), "ErrorResponse"
            )
            facts["body"] = parsed.to_dict()
            facts["unknown_keys"] = sorted(
                set(raw) - set(libconsole.ErrorResponse.attribute_map.values())
            )
        return facts

    def token(self, answer: Any) -> str:
        """The access token of an answer that must have succeeded."""
        if answer is None:
            msg = "an earlier case failed that later ones need (see the report)"
            raise RuntimeError(msg)
        token: str = answer.access_token
        return token


def drive(d: Driver) -> None:
    """Every console endpoint; each create_token parameter, True and False included."""
    key = {"x_api_key": d.key}
    # -- POST /v1/tokens: each of the nine parameters -----------------------------------------
    personal = d.token(d.run("create x_api_key", "create_token", **key))
    d.run("create api_key (obsolete query)", "create_token", api_key=d.key)
    d.run("create client_id", "create_token", client_id="my-app", **key)
    d.run("create domain", "create_token", domain="beta", **key)
    d.run("create data", "create_token", data="meta-1", **key)
    d.run("create scopes", "create_token", scopes=SCOPES, **key)
    d.run("create cwid", "create_token", cwid="wg-1", **key)
    d.run("create cid", "create_token", cid="project-9", **key)
    ps = d.token(
        d.run("create return_session_token=True", "create_token", return_session_token=True, **key)
    )
    d.run("create return_session_token=False", "create_token", return_session_token=False, **key)
    every = {
        "client_id": "my-app",
        "api_key": d.key,
        "domain": "beta",
        "data": "meta-2",
        "scopes": SCOPES,
        "cwid": "wg-2",
        "cid": "project-2",
    }
    d.run("create all nine, False", "create_token", return_session_token=False, **every, **key)
    d.run("create all nine, True", "create_token", return_session_token=True, **every, **key)
    # -- POST /v1/tokens: each credential --------------------------------------------------
    d.run("create Basic username:password", "create_token", ("basic", "user"))
    d.run("create Basic with apiKey", "create_token", ("basic", "key"))
    d.run(
        "create Basic, return_session_token=True",
        "create_token",
        ("basic", "user"),
        return_session_token=True,
    )
    d.run("create Bearer psToken", "create_token", ("bearer", ps))
    d.run(
        "create Bearer JWT + x_api_key + cid",
        "create_token",
        ("bearer", personal),
        cid="project-3",
        **key,
    )
    d.run("create wrong x_api_key", "create_token", x_api_key="test-apikey-wrong")
    d.run("create no credentials", "create_token")
    d.run("create unknown domain", "create_token", domain="elsewhere", **key)
    # -- GET /v1/tokens/details ------------------------------------------------------------
    d.run("details Bearer JWT", "get_token_details", ("bearer", personal))
    d.run("details Bearer psToken", "get_token_details", ("bearer", ps))
    d.run("details Basic username:password", "get_token_details", ("basic", "user"))
    d.run("details Basic with apiKey", "get_token_details", ("basic", "key"))
    d.run("details no credentials", "get_token_details")
    d.run("details Bearer garbage", "get_token_details", ("bearer", "garbage"))
    # -- POST /v1/tokens:refresh -----------------------------------------------------------
    body = libconsole.AccessTokenRequest(access_token=ps)
    d.run("refresh Bearer psToken", "refresh_token", ("bearer", ps), body=body)
    d.run("refresh Basic username:password", "refresh_token", ("basic", "user"), body=body)
    d.run("refresh Bearer JWT", "refresh_token", ("bearer", personal), body=body)
    d.run("refresh no credentials", "refresh_token", body=body)
    d.run("refresh Bearer garbage", "refresh_token", ("bearer", "garbage"), body=body)
    # -- DELETE /v1/tokens -----------------------------------------------------------------
    d.run("revoke no credentials", "revoke_token", body=body)
    d.run("revoke Bearer garbage", "revoke_token", ("bearer", "garbage"), body=body)
    d.run("revoke Basic wrong password", "revoke_token", ("basic", "wrong"), body=body)
    d.run("revoke psToken, Basic with apiKey", "revoke_token", ("basic", "key"), body=body)
    d.run("refresh revoked psToken, Bearer itself", "refresh_token", ("bearer", ps), body=body)
    jwt_body = libconsole.AccessTokenRequest(access_token=personal)
    d.run("revoke JWT, Bearer itself", "revoke_token", ("bearer", personal), body=jwt_body)
    d.run("details revoked JWT", "get_token_details", ("bearer", personal))


def main() -> int:
    """Read the settings, drive, print the report."""
    driver = Driver(json.load(sys.stdin))
    try:
        drive(driver)
    finally:
        json.dump({"libica": version("libica"), "cases": driver.cases}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
