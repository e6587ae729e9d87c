"""The client against the vendored spec extracts: every parameter, property and status.

`tests/data/iap_console_v1_tokens_extract.json` (Swagger 2, console v1) and
`tests/data/ica_v2_tokens_extract.yaml` (OpenAPI 3, ICA v2) are read here and every query
parameter, header parameter and security scheme of the token operations is driven through the
client and looked for on the wire. PyYAML is not a dependency, so the YAML is read with the
small block-YAML reader below (it fails loudly on anything it does not understand, and its own
tests pin what it reads).
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import importlib.util
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
import yarl

from aioica_auth import (
    CONSOLE_BASE_URL,
    ICA_BASE_URL,
    ApiKey,
    BasicAuth,
    ConsoleTokenApi,
    Domain,
    ErrorResponse,
    IcaTokenApi,
    Jwt,
    Problem,
    PsToken,
    TokenDetailResponse,
    TokenResponse,
    Workgroup,
)
from aioica_auth._models import AccessTokenRequest, IcaTokenBody, converter

from ..support import unsigned_jwt as make_jwt

DATA = Path(__file__).parents[1] / "data"
ANY_URL = re.compile(r".*")


# --------------------------------------------------------------------------- a small YAML reader


class YamlSubsetError(ValueError):
    """The YAML uses something this reader does not support."""


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "0": "\0"}


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _split_key(content: str) -> tuple[str, str] | None:
    """`key: rest` → (key, rest); None when the line is not a mapping entry."""
    if content[0] in "'\"":
        end = content.find(content[0], 1)
        if end < 0:
            return None
        after = content[end + 1 :]
        if after == ":" or after.startswith(": "):
            return content[1:end], after[1:]
        return None
    match = re.match(r"^(.+?):(?: |$)", content)
    if match is None or match.group(1)[0] in "[{#&*!|>%@`":
        return None
    return match.group(1).rstrip(), content[match.end() :]


def _resolve(text: str) -> Any:
    if text in {"true", "True"}:
        return True
    if text in {"false", "False"}:
        return False
    if text in {"null", "~", ""}:
        return None
    if re.fullmatch(r"[-+]?[0-9]+", text):
        return int(text)
    return text


def _fold(lines: list[str]) -> str:
    """Fold a multi-line flow scalar: a line break is a space, each blank line a newline."""
    text = lines[0].rstrip() if len(lines) > 1 else lines[0]
    newlines = 0
    for k, raw in enumerate(lines[1:], 1):
        last = k == len(lines) - 1
        line = raw.lstrip() if last else raw.strip()
        if not line and not last:
            newlines += 1
            continue
        text += "\n" * newlines if newlines else " "
        text += line
        newlines = 0
    return text


class _Reader:
    def __init__(self, text: str) -> None:
        if "\t" in text.replace("\\t", ""):
            raise YamlSubsetError("tabs")
        self.lines = text.splitlines()
        self.i = 0

    def peek(self) -> tuple[int, str] | None:
        while self.i < len(self.lines):
            stripped = self.lines[self.i].strip()
            if stripped and not stripped.startswith("#"):
                break
            self.i += 1
        if self.i >= len(self.lines):
            return None
        line = self.lines[self.i].rstrip()
        content = line.lstrip(" ")
        if content in {"---", "..."}:
            raise YamlSubsetError("multiple documents")
        return len(line) - len(content), content

    def document(self) -> Any:
        nxt = self.peek()
        if nxt is None:
            return None
        value = self.block(nxt[0])
        if self.peek() is not None:
            raise YamlSubsetError(f"line {self.i + 1}: unexpected indentation")
        return value

    def block(self, indent: int) -> Any:
        nxt = self.peek()
        assert nxt is not None
        return self.sequence(indent) if _is_item(nxt[1]) else self.mapping(indent)

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while (nxt := self.peek()) is not None and nxt[0] == indent and not _is_item(nxt[1]):
            split = _split_key(nxt[1])
            if split is None:
                raise YamlSubsetError(f"line {self.i + 1}: not a mapping entry: {nxt[1]!r}")
            key, rest = split
            if key in out:
                raise YamlSubsetError(f"line {self.i + 1}: duplicate key {key!r}")
            self.i += 1
            out[key] = self.value(rest, indent)
        if nxt is not None and nxt[0] > indent:
            raise YamlSubsetError(f"line {self.i + 1}: unexpected indentation")
        return out

    def sequence(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (nxt := self.peek()) is not None and nxt[0] == indent and _is_item(nxt[1]):
            rest = nxt[1][1:].lstrip(" ")
            if not rest:
                self.i += 1
                out.append(self.value("", indent))
                continue
            column = indent + len(nxt[1]) - len(rest)
            if _split_key(rest) is not None:
                self.lines[self.i] = " " * column + rest
                out.append(self.mapping(column))
            else:
                self.i += 1
                out.append(self.value(rest, indent))
        return out

    def value(self, rest: str, indent: int) -> Any:
        rest = rest.strip()
        if not rest or rest.startswith("#"):
            nxt = self.peek()
            if nxt is not None and (nxt[0] > indent or (nxt[0] == indent and _is_item(nxt[1]))):
                return self.block(nxt[0])
            return None
        if rest[0] in "'\"":
            return self.quoted(rest)
        if rest[0] in "[{":
            return _flow(rest)
        if rest[0] in "|>&*!%@`":
            raise YamlSubsetError(f"line {self.i}: unsupported {rest[0]!r}")
        return self.plain(rest, indent)

    def quoted(self, first: str) -> str:
        quote = first[0]
        current = first[1:]
        pieces: list[str] = []
        while True:
            out: list[str] = []
            j = 0
            closed = False
            while j < len(current):
                c = current[j]
                if quote == "'" and c == "'":
                    if current[j + 1 : j + 2] == "'":
                        out.append("'")
                        j += 2
                        continue
                    closed = True
                    break
                if quote == '"' and c == "\\":
                    if current[j + 1 : j + 2] not in _ESCAPES:
                        raise YamlSubsetError(f"line {self.i}: escape {current[j : j + 2]!r}")
                    out.append(_ESCAPES[current[j + 1]])
                    j += 2
                    continue
                if quote == '"' and c == '"':
                    closed = True
                    break
                out.append(c)
                j += 1
            pieces.append("".join(out))
            if closed:
                tail = current[j + 1 :].strip()
                if tail and not tail.startswith("#"):
                    raise YamlSubsetError(f"line {self.i}: text after a quoted scalar")
                return _fold(pieces)
            if self.i >= len(self.lines):
                raise YamlSubsetError("unterminated quoted scalar")
            current = self.lines[self.i]
            self.i += 1

    def plain(self, first: str, indent: int) -> Any:
        parts = [re.sub(r"\s+#.*$", "", first)]
        while (nxt := self.peek()) is not None and nxt[0] > indent:
            line = nxt[1].strip()
            if ": " in line or line.endswith(":") or " #" in line:
                raise YamlSubsetError(f"line {self.i + 1}: ambiguous plain continuation")
            parts.append(line)
            self.i += 1
        return _resolve(parts[0]) if len(parts) == 1 else " ".join(parts)


def _flow(text: str) -> Any:
    text = re.sub(r"\s+#.*$", "", text).strip()
    if text in {"[]", "{}"}:
        return [] if text == "[]" else {}
    if text[0] == "[" and text[-1] == "]" and not re.search(r"[\[\]{}'\"]", text[1:-1]):
        return [_resolve(item.strip()) for item in text[1:-1].split(",")]
    raise YamlSubsetError(f"unsupported flow collection {text!r}")


def load_yaml(text: str) -> Any:
    """Read block-style YAML (mappings, sequences, plain and quoted scalars, simple flow lists)."""
    return _Reader(text).document()


# --------------------------------------------------------------------------- the reader's tests


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\nb: x\n", {"a": 1, "b": "x"}),
        ("a:\n  b:\n    c: true\n", {"a": {"b": {"c": True}}}),
        ("a:\n- x\n- y\nb: z\n", {"a": ["x", "y"], "b": "z"}),
        ("a:\n  - k: 1\n    l: 2\n  - k: 3\n", {"a": [{"k": 1, "l": 2}, {"k": 3}]}),
        ("'200':\n  d: ok\n", {"200": {"d": "ok"}}),
        ("/p:refresh:\n  post: {}\n", {"/p:refresh": {"post": {}}}),
        ("s: []\nt: [a, b]\n", {"s": [], "t": ["a", "b"]}),
        ("$ref: '#/x/y'\n", {"$ref": "#/x/y"}),
        ("d: plain text\n  continued here\nn: 1\n", {"d": "plain text continued here", "n": 1}),
        ("q: 'it''s\n\n  two\n  lines'\n", {"q": "it's\ntwo lines"}),
        ('q: "a\\tb: c"\n', {"q": "a\tb: c"}),
        ("# comment\na: null\nb: ~\n", {"a": None, "b": None}),
        ("k:\n  - a\n  - b\n", {"k": ["a", "b"]}),
    ],
)
def test_yaml_reader(text: str, expected: Any) -> None:
    """The YAML reader reads each supported construct as YAML defines it."""
    assert load_yaml(text) == expected


@pytest.mark.parametrize(
    "text", ["a: |\n  block\n", "a: &x 1\n", "a: 1\n  b: 2\n", "a: 1\na: 2\n", "a: [{b: 1}]\n"]
)
def test_yaml_reader_refuses_what_it_cannot_read(text: str) -> None:
    """Unsupported YAML is an error, never a silently wrong reading."""
    with pytest.raises(YamlSubsetError):
        load_yaml(text)


V1 = json.loads((DATA / "iap_console_v1_tokens_extract.json").read_text(encoding="utf-8"))
V2 = load_yaml((DATA / "ica_v2_tokens_extract.yaml").read_text(encoding="utf-8"))


def test_v2_extract_read_correctly() -> None:
    """The v2 extract reads into the shape the file shows (a check on the reader itself)."""
    assert V2["openapi"] == "3.0.1"
    assert V2["servers"] == [{"url": "/ica/rest"}]
    assert V2["security"] == [{"JwtAuth": []}, {"ApiKeyAuth": []}]
    assert set(V2["paths"]) == {"/api/tokens", "/api/tokens:refresh"}
    create = V2["paths"]["/api/tokens"]["post"]
    assert create["operationId"] == "createJwtToken"
    assert create["parameters"] == [
        {
            "name": "tenant",
            "in": "query",
            "description": "The name of your tenant in case you have access to multiple tenants.",
            "schema": {"type": "string", "nullable": True},
        }
    ]
    assert create["security"] == [{"ApiKeyAuth": []}, {"BasicAuth": []}, {"PsTokenAuth": []}]
    assert set(create["responses"]) == {"default", "200"}
    assert create["description"].startswith("Generate a JWT using an API-key, Basic")
    assert create["description"].endswith("enabled authentication.")
    schemas = V2["components"]["schemas"]
    assert schemas["Problem"]["required"] == ["parameters", "status", "timestamp", "title", "type"]
    assert V2["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey",
        "name": "X-API-Key",
        "in": "header",
    }
    assert "<h2>Authentication</h2>" in V2["info"]["description"]


def _libica_properties(model: str) -> set[str]:
    """`__properties` of a libica v3 generated model, read from source without importing libica."""
    spec = importlib.util.find_spec("libica")
    if spec is None or spec.origin is None:
        pytest.skip("libica is not installed")
    source = Path(spec.origin).parent / "openapi" / "v3" / "models" / f"{model}.py"
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "__properties"
            and node.value is not None
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"no __properties in {source}")


def test_v2_extract_agrees_with_libica() -> None:
    """An independent reading (libica's generated v3 models) has the same schema properties."""
    schemas = V2["components"]["schemas"]
    assert _libica_properties("problem") == set(schemas["Problem"]["properties"])
    assert _libica_properties("token") == set(schemas["Token"]["properties"])


# --------------------------------------------------------------------------- operations

API_KEY = "ak-spec-5566778899SECRET"
USER = "dave@example.org"
PASSWORD = "pw-spec-Tr0ub4dor&3"
PS_TOKEN = "ps-spec-token-SECRET-2718"


JWT = make_jwt({"sub": "spec", "exp": 2_000_000_000})

Call = Callable[[aiohttp.ClientSession], Awaitable[Any]]


def operations() -> dict[str, dict[str, Any]]:
    """Every token operation of both specs, by operationId, with method, path and definition."""
    out: dict[str, dict[str, Any]] = {}
    for api, spec in (("v1", V1), ("v2", V2)):
        for path, item in spec["paths"].items():
            for method, op in item.items():
                out[op["operationId"]] = {"api": api, "method": method.upper(), "path": path, **op}
    return out


OPERATIONS = operations()

# How our client performs each operation (plain call, credential chosen per security scheme).
PLAIN: dict[str, Call] = {
    "createToken": lambda s: ConsoleTokenApi(s).create_token(ApiKey(API_KEY)),
    "getTokenDetails": lambda s: ConsoleTokenApi(s).get_token_details(Jwt(JWT)),
    "refreshToken": lambda s: ConsoleTokenApi(s).refresh_token(PS_TOKEN),
    "revokeToken": lambda s: ConsoleTokenApi(s).revoke_token(PS_TOKEN),
    "createJwtToken": lambda s: IcaTokenApi(s).create_jwt_token(ApiKey(API_KEY)),
    "refreshJwtToken": lambda s: IcaTokenApi(s).refresh_jwt_token(JWT),
}

# Query and header parameters: how each one is driven.
PARAMETER_DRIVERS: dict[tuple[str, str, str], Call] = {
    ("createToken", "header", "X-API-Key"): PLAIN["createToken"],
    ("createToken", "query", "clientId"): lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY), client_id="app"
    ),
    ("createToken", "query", "domain"): lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY), domain="dom"
    ),
    ("createToken", "query", "data"): lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY), data="meta"
    ),
    ("createToken", "query", "scopes"): lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY), scopes=["A", "B"]
    ),
    ("createToken", "query", "cwid"): lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY), cwid="wg"
    ),
    ("createToken", "query", "cid"): lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY), cid="ctx"
    ),
    ("createToken", "query", "returnSessionToken"): lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY), return_session_token=True
    ),
    ("createJwtToken", "query", "tenant"): lambda s: IcaTokenApi(s).create_jwt_token(
        BasicAuth(USER, PASSWORD), tenant="acme"
    ),
}

# Spec parameters we deliberately never send, with the reason.
EXCLUDED: dict[tuple[str, str, str], str] = {
    ("createToken", "query", "api_key"): (
        "OBSOLETE in the spec itself; a key in a URL ends up in proxy and access logs, so the "
        "key always goes in the X-API-Key header"
    ),
}

# Security schemes: how each is driven, and what the Authorization / key header must look like.
SCHEME_DRIVERS: dict[tuple[str, str], Call] = {
    ("createToken", "Bearer"): lambda s: ConsoleTokenApi(s).create_token(PsToken(PS_TOKEN)),
    ("createToken", "Basic"): lambda s: ConsoleTokenApi(s).create_token(BasicAuth(USER, PASSWORD)),
    ("getTokenDetails", "Bearer"): PLAIN["getTokenDetails"],
    ("getTokenDetails", "Basic"): lambda s: ConsoleTokenApi(s).get_token_details(
        BasicAuth(USER, PASSWORD)
    ),
    ("refreshToken", "Bearer"): PLAIN["refreshToken"],
    ("refreshToken", "Basic"): lambda s: ConsoleTokenApi(s).refresh_token(
        PS_TOKEN, authorization=BasicAuth(USER, PASSWORD)
    ),
    ("revokeToken", "Bearer"): PLAIN["revokeToken"],
    ("revokeToken", "Basic"): lambda s: ConsoleTokenApi(s).revoke_token(
        PS_TOKEN, authorization=BasicAuth(USER, PASSWORD)
    ),
    ("createJwtToken", "ApiKeyAuth"): PLAIN["createJwtToken"],
    ("createJwtToken", "BasicAuth"): lambda s: IcaTokenApi(s).create_jwt_token(
        BasicAuth(USER, PASSWORD)
    ),
    ("createJwtToken", "PsTokenAuth"): lambda s: IcaTokenApi(s).create_jwt_token(PsToken(PS_TOKEN)),
    ("refreshJwtToken", "JwtAuth"): PLAIN["refreshJwtToken"],
}


def success_body(op: dict[str, Any]) -> Any:
    """A valid success body for an operation."""
    if op["operationId"] == "getTokenDetails":
        return {"uid": "u"}
    if op["api"] == "v2":
        return {"token": JWT}
    return {"access_token": JWT}


def success_status(op: dict[str, Any]) -> int:
    """The first success status the spec defines."""
    return int(min(code for code in op["responses"] if str(code).startswith("2")))


async def drive(wire: Any, session: aiohttp.ClientSession, op_id: str, call: Call) -> Any:
    """Answer the operation as the spec says it succeeds, run `call`, return the one request."""
    op = OPERATIONS[op_id]
    status = success_status(op)
    body = None if status == 204 else json.dumps(success_body(op))
    wire.add(ANY_URL, op["method"], status=status, body=body or b"")
    await call(session)
    calls = wire.calls()
    assert len(calls) == 1
    method, url, kwargs = calls[0]
    return method, yarl.URL(url), kwargs


def spec_parameters() -> list[tuple[str, str, str]]:
    """(operationId, in, name) of every query and header parameter in both specs."""
    out = []
    for op_id, op in OPERATIONS.items():
        for param in op.get("parameters", []):
            if param["in"] in {"query", "header"}:
                out.append((op_id, param["in"], param["name"]))
    return out


def spec_security() -> list[tuple[str, str]]:
    """(operationId, scheme) for every security scheme an operation accepts."""
    out: list[tuple[str, str]] = []
    for op_id, op in OPERATIONS.items():
        spec = V1 if op["api"] == "v1" else V2
        for requirement in op.get("security", spec["security"]):
            out.extend((op_id, scheme) for scheme in requirement)
    return out


def schemes_of(api: str) -> dict[str, dict[str, Any]]:
    """The security schemes of one spec."""
    schemes: dict[str, dict[str, Any]]
    schemes = V1["securityDefinitions"] if api == "v1" else V2["components"]["securitySchemes"]
    return schemes


def test_the_specs_define_what_we_expect_to_drive() -> None:
    """Every parameter and scheme the specs define is driven or excluded, and nothing else is."""
    params = set(spec_parameters())
    assert params == set(PARAMETER_DRIVERS) | set(EXCLUDED)
    assert not set(PARAMETER_DRIVERS) & set(EXCLUDED)
    assert set(spec_security()) == set(SCHEME_DRIVERS)
    assert set(OPERATIONS) == set(PLAIN)


@pytest.mark.parametrize(("op_id", "where", "name"), spec_parameters())
async def test_every_spec_parameter_is_sent_or_excluded(
    wire: Any, session: aiohttp.ClientSession, op_id: str, where: str, name: str
) -> None:
    """Each query/header parameter the spec defines appears on the wire under its exact name."""
    key = (op_id, where, name)
    if key in EXCLUDED:
        method, url, kwargs = await drive(wire, session, op_id, PARAMETER_DRIVERS_ALL[op_id])
        assert name not in url.query
        assert name not in kwargs["headers"]
        assert API_KEY not in str(url)
        return
    assert key in PARAMETER_DRIVERS, f"{key} is neither sent nor on the exclusion list"
    method, url, kwargs = await drive(wire, session, op_id, PARAMETER_DRIVERS[key])
    assert method == OPERATIONS[op_id]["method"]
    if where == "query":
        assert url.query.getall(name)
        assert len(url.query.getall(name)) == 1
    else:
        assert name in kwargs["headers"]


# Every option of an operation at once (to show an excluded parameter is never among them).
PARAMETER_DRIVERS_ALL: dict[str, Call] = {
    "createToken": lambda s: ConsoleTokenApi(s).create_token(
        ApiKey(API_KEY),
        client_id="c",
        domain="d",
        data="x",
        scopes=["A"],
        cwid="w",
        cid="i",
        return_session_token=True,
        authorization=Jwt(JWT),
    ),
}


def test_array_query_parameters_use_csv() -> None:
    """The only array parameter, `scopes`, has no collectionFormat: Swagger 2's default, csv."""
    arrays = [
        (op_id, p)
        for op_id, op in OPERATIONS.items()
        for p in op.get("parameters", [])
        if p.get("type") == "array"
    ]
    assert [(op_id, p["name"]) for op_id, p in arrays] == [("createToken", "scopes")]
    assert arrays[0][1].get("collectionFormat", "csv") == "csv"


async def test_scopes_sent_as_csv(wire: Any, session: aiohttp.ClientSession) -> None:
    """`scopes` goes out as one csv value, as the spec's default collectionFormat says."""
    _, url, _ = await drive(
        wire, session, "createToken", PARAMETER_DRIVERS[("createToken", "query", "scopes")]
    )
    assert url.query.getall("scopes") == ["A,B"]


async def test_boolean_query_parameter_is_lowercase_true(
    wire: Any, session: aiohttp.ClientSession
) -> None:
    """The boolean `returnSessionToken` is serialised `true`."""
    key = ("createToken", "query", "returnSessionToken")
    _, url, _ = await drive(wire, session, "createToken", PARAMETER_DRIVERS[key])
    assert url.query["returnSessionToken"] == "true"


@pytest.mark.parametrize(("op_id", "scheme"), spec_security())
async def test_every_security_scheme_is_presented_as_specified(
    wire: Any, session: aiohttp.ClientSession, op_id: str, scheme: str
) -> None:
    """Each security scheme of each operation goes out in its header with its exact scheme word."""
    definition = schemes_of(OPERATIONS[op_id]["api"])[scheme]
    _, _, kwargs = await drive(wire, session, op_id, SCHEME_DRIVERS[(op_id, scheme)])
    headers = kwargs["headers"]
    kind = definition["type"]
    if kind == "apiKey":
        assert definition["in"] == "header"
        value = headers[definition["name"]]
        if definition["name"] == "Authorization":  # the v1 "Bearer" scheme, typed apiKey
            assert value.startswith("Bearer ")
        else:
            assert value == API_KEY
    elif kind == "basic" or (kind == "http" and definition["scheme"] == "basic"):
        expected = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert headers["Authorization"] == "Basic " + expected
    else:
        assert (kind, definition["scheme"]) == ("http", "bearer")
        assert headers["Authorization"] in {"Bearer " + JWT, "Bearer " + PS_TOKEN}
        token = headers["Authorization"].removeprefix("Bearer ")
        assert (token == JWT) == (definition["bearerFormat"] == "JWT")


@pytest.mark.parametrize("op_id", list(OPERATIONS))
async def test_operation_method_path_and_success_status(
    wire: Any, session: aiohttp.ClientSession, op_id: str
) -> None:
    """Each operation goes to the spec's method and path and accepts its success status."""
    op = OPERATIONS[op_id]
    base = yarl.URL(ICA_BASE_URL if op["api"] == "v2" else CONSOLE_BASE_URL)
    method, url, _ = await drive(wire, session, op_id, PLAIN[op_id])
    assert method == op["method"]
    assert url.raw_path == base.path.rstrip("/") + op["path"]
    assert url.host == base.host


def test_spec_success_statuses_are_the_ones_we_pin() -> None:
    """The spec's success codes: 201 for v1 create/refresh, 204 revoke, 200 details and v2."""
    statuses = {
        op_id: sorted(str(code) for code in op["responses"] if str(code).startswith("2"))
        for op_id, op in OPERATIONS.items()
    }
    assert statuses == {
        "createToken": ["201"],
        "refreshToken": ["201"],
        "revokeToken": ["204"],
        "getTokenDetails": ["200"],
        "createJwtToken": ["200"],
        "refreshJwtToken": ["200"],
    }


def test_hosts_and_base_paths_match_the_specs() -> None:
    """The default base URLs are the specs' host/scheme (v1) and server path (v2)."""
    console = yarl.URL(CONSOLE_BASE_URL)
    assert console.scheme in V1["schemes"]
    assert console.host == V1["host"]
    assert console.path in {"", "/"}
    ica = yarl.URL(ICA_BASE_URL)
    assert ica.scheme == "https"
    assert ica.path == V2["servers"][0]["url"]


@pytest.mark.parametrize("op_id", list(OPERATIONS))
async def test_accept_covers_every_media_type_the_spec_answers_with(
    wire: Any, session: aiohttp.ClientSession, op_id: str
) -> None:
    """Our Accept lists every media type the operation produces (success and problem)."""
    op = OPERATIONS[op_id]
    if op["api"] == "v1":
        produced = set(op["produces"])
    else:
        produced = {media for r in op["responses"].values() for media in r.get("content", {})}
    _, _, kwargs = await drive(wire, session, op_id, PLAIN[op_id])
    accepted = {part.strip() for part in kwargs["headers"]["Accept"].split(",")}
    assert produced
    assert produced <= accepted


@pytest.mark.parametrize("op_id", [o for o, op in OPERATIONS.items() if "consumes" in op])
async def test_json_body_content_type_is_one_the_spec_consumes(
    wire: Any, session: aiohttp.ClientSession, op_id: str
) -> None:
    """A body goes out as a media type the operation consumes, shaped as its body schema."""
    op = OPERATIONS[op_id]
    (body_param,) = [p for p in op["parameters"] if p["in"] == "body"]
    schema = V1["definitions"][body_param["schema"]["$ref"].rsplit("/", 1)[1]]
    _, _, kwargs = await drive(wire, session, op_id, PLAIN[op_id])
    assert kwargs["headers"]["Content-Type"] in op["consumes"]
    assert set(json.loads(kwargs["data"])) == set(schema["properties"])


# --------------------------------------------------------------------------- models


MODELS: dict[tuple[str, str], type] = {
    ("v1", "TokenResponse"): TokenResponse,
    ("v1", "AccessTokenRequest"): AccessTokenRequest,
    ("v1", "TokenDetailResponse"): TokenDetailResponse,
    ("v1", "Workgroup"): Workgroup,
    ("v1", "Domain"): Domain,
    ("v1", "ErrorResponse"): ErrorResponse,
    ("v2", "Token"): IcaTokenBody,
    ("v2", "Problem"): Problem,
}

# Fields we read beyond a schema, with the reason.
EXTRA_FIELDS: dict[tuple[str, str], set[str]] = {
    # "some API versions use access_token" (icav2-cli-plugins); we accept either.
    ("v2", "Token"): {"access_token"},
}


def schemas_of(api: str) -> dict[str, Any]:
    """The schema definitions of one spec."""
    schemas: dict[str, Any] = V1["definitions"] if api == "v1" else V2["components"]["schemas"]
    return schemas


def resolve(api: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a `$ref` within one spec."""
    if "$ref" in schema:
        target: dict[str, Any] = schemas_of(api)[schema["$ref"].rsplit("/", 1)[1]]
        return target
    return schema


def sample(api: str, schema: dict[str, Any], name: str) -> Any:
    """A wire value for a schema, built from the spec's own property names and types."""
    schema = resolve(api, schema)
    kind = schema.get("type", "object" if "properties" in schema else None)
    fmt = str(schema.get("format"))
    if kind == "string":
        return {
            "uuid": "0b7a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
            "date-time": "2024-05-01T12:34:56+00:00",
            "uri": f"https://example.org/{name}",
        }.get(fmt, f"{name}-value")
    if kind == "integer":
        return 418
    if kind == "boolean":
        return True
    if kind == "array":
        items = schema.get("items") or {}
        if not items:
            return [{"free": "form"}, "item"]
        return [sample(api, items, f"{name}0"), sample(api, items, f"{name}1")]
    if kind == "object":
        if "properties" in schema:
            return {prop: sample(api, sub, prop) for prop, sub in schema["properties"].items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {"key1": sample(api, extra, "key1")}
    raise AssertionError(f"no sample for {name}: {schema}")


def normalise(value: Any) -> Any:
    """Wire-comparable form: UUIDs and datetimes as strings, tuples as lists."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def all_fields_set(obj: Any) -> None:
    """Every attrs field (recursively) differs from its default: each one was read."""
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        assert value != default, f"{type(obj).__name__}.{field.name} was not read"
        if attrs.has(type(value)):
            all_fields_set(value)


def test_every_schema_has_a_model() -> None:
    """Every schema in the extracts maps to one of our models."""
    defined = {("v1", n) for n in V1["definitions"]} | {
        ("v2", n) for n in V2["components"]["schemas"]
    }
    assert defined == set(MODELS)


@pytest.mark.parametrize(("api", "schema_name"), list(MODELS))
def test_model_round_trips_every_spec_property(api: str, schema_name: str) -> None:
    """A sample of every spec property structures into our model, nothing dropped, and back."""
    model = MODELS[(api, schema_name)]
    schema = schemas_of(api)[schema_name]
    wire_sample = sample(api, schema, schema_name)
    extra = EXTRA_FIELDS.get((api, schema_name), set())
    for name in extra:
        wire_sample[name] = f"{name}-value"

    obj = converter.structure(wire_sample, model)
    all_fields_set(obj)
    back = converter.unstructure(obj)
    assert set(back) == set(schema["properties"]) | extra
    assert normalise(back) == normalise(wire_sample)
    assert converter.structure(back, model) == obj


@pytest.mark.parametrize(("api", "schema_name"), list(MODELS))
def test_model_fields_have_no_wire_name_outside_the_spec(api: str, schema_name: str) -> None:
    """An empty model unstructures to exactly the spec's property names (plus documented extras)."""
    model = MODELS[(api, schema_name)]
    fields = attrs.fields(model)
    kwargs = {f.name: "x" for f in fields if f.default is attrs.NOTHING}
    names = set(converter.unstructure(model(**kwargs)))
    expected = set(schemas_of(api)[schema_name]["properties"])
    assert names == expected | EXTRA_FIELDS.get((api, schema_name), set())


def test_problem_required_fields_are_model_fields() -> None:
    """Every field the spec marks required on Problem is a field we decode."""
    required = set(V2["components"]["schemas"]["Problem"]["required"])
    assert required <= {f.name for f in attrs.fields(Problem)}
