"""Property tests (hypothesis) of everything that parses server input.

The rule under test: whatever a server sends, the parsers either return a well-formed result
or raise an `IcaError` subclass (`InvalidResponseError`, `ApiError`): never a `ValueError`,
`OverflowError`, `KeyError`... that would escape the manager's error handling. Valid inputs
must parse to exactly what they say.

The bugs these found (huge ints, non-ASCII digits, deep nesting, unusual JSON escapes) are
pinned by deterministic regression tests at the end of the file.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import json
import math
import os
import random
import re
import string
import time
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aioica_auth._clock import Exchange
from aioica_auth._errors import (
    ApiError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    error_class,
    scrub,
)
from aioica_auth._lifecycle.policy import Policy
from aioica_auth._lifecycle.timing import Timing
from aioica_auth._models import (
    Domain,
    ErrorResponse,
    IcaTokenBody,
    Problem,
    TokenDetailResponse,
    TokenResponse,
    Workgroup,
)
from aioica_auth._token import Token, decode_jwt
from aioica_auth._wire.answers import error_for, parse_http_date, parse_retry_after, structure

PROPS = settings(
    max_examples=200,
    deadline=None,
    # CI must not fail on an input that a different random draw happened to find: the same
    # examples every run (AIOICA_HYPOTHESIS_RANDOM=1 explores fresh ones).
    derandomize=not os.environ.get("AIOICA_HYPOTHESIS_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

HS256_KEY = b"aioica-auth-property-tests-hs256-key-0123456789"  # >= 32 bytes, no warning
TIME_CLAIMS = ("exp", "nbf", "iat")
B64URL = string.ascii_letters + string.digits + "-_"
# Characters API keys, passwords and tokens are made of (no whitespace, no `*`: scrub writes
# `***` and collapses whitespace, so those could only produce false alarms).
SECRET_ALPHABET = string.ascii_letters + string.digits + "-_.~+/=!@#$%^&()[]{}:;,?"
INT_MAX_STR_DIGITS = 4300  # CPython's default limit on int(str)

# -- strategies ----------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Values a time claim may take on the wire: numbers of every size (finite or not; ints that
# still fit a float), strings, null, booleans, containers.
claim_values = (
    st.integers(min_value=-(2**62), max_value=2**62)
    | st.integers(min_value=-(10**300), max_value=10**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e11, max_value=3e11)
    | st.sampled_from([0, -1, 1e20, -1e20, 253402300799, 253402300800, -62135596800])
    | st.text(max_size=12)
    | st.sampled_from(["1700000000", "", "NaN"])
    | st.none()
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
ERROR_URL = "POST http://127.0.0.1:1/ica/rest/api/tokens"
# A secret is never part of the request line we name in errors (a key is not a URL).
secrets_st = st.text(SECRET_ALPHABET, min_size=12, max_size=40).filter(lambda v: v not in ERROR_URL)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_of(header: Any, payload_bytes: bytes, *, sign: bool) -> str:
    """A compact JWT from raw parts; HS256-signed with a test key, or with no signature."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(payload_bytes)}"
    if not sign:
        return signing_input + "."
    mac = hmac.new(HS256_KEY, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def dumps(value: Any) -> bytes:
    """JSON as a lax server writes it (NaN and Infinity included)."""
    return json.dumps(value, allow_nan=True).encode()


def expected_time(value: Any) -> dt.datetime | type[InvalidResponseError] | None:
    """What a correct decoder makes of one time claim (the oracle)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return InvalidResponseError
    try:
        f = float(value)
    except OverflowError:
        return InvalidResponseError
    if not math.isfinite(f):
        return InvalidResponseError
    try:
        return dt.datetime.fromtimestamp(f, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return InvalidResponseError


def fits_a_float(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            float(value)
        except OverflowError:
            return False
    return True


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


# -- decode_jwt ----------------------------------------------------------------------------------


def check_decode(value: str) -> Token | None:
    """decode_jwt returns a Token or raises InvalidResponseError, nothing else."""
    try:
        token = decode_jwt(value)
    except InvalidResponseError:
        return None
    assert isinstance(token, Token)
    assert token.value == value
    for when in (token.expires_at, token.not_before, token.issued_at):
        assert when is None or (when.tzinfo is not None and when.utcoffset() == dt.timedelta(0))
    return token


@PROPS
@given(st.text())
@example("")
@example("...")
@example("eyJ.eyJ.")
@example("eyJhbGciOiJub25lIn0.e30.")
def test_decode_jwt_arbitrary_text(value: str) -> None:
    """Any text: a Token or InvalidResponseError."""
    check_decode(value)


@PROPS
@given(
    st.lists(st.text(B64URL, max_size=40), min_size=1, max_size=4).map(".".join),
    st.sampled_from(["", "eyJ", "eyJhbGciOiJIUzI1NiJ9."]),
)
def test_decode_jwt_jwt_shaped_garbage(body: str, prefix: str) -> None:
    """Base64url segments that look like a JWT but decode to anything: no stray exception."""
    check_decode(prefix + body)


@PROPS
@given(
    st.fixed_dictionaries({}, optional=dict.fromkeys(TIME_CLAIMS, claim_values)),
    st.dictionaries(st.text(max_size=6).map(lambda k: "x_" + k), json_values, max_size=4),
    st.booleans(),
)
@example({"exp": 1e300}, {}, False)
@example({"exp": 10**300}, {}, True)
@example({"exp": math.nan, "iat": math.inf}, {}, False)
@example({"exp": True, "nbf": False}, {}, False)
@example({"exp": "1700000000"}, {}, True)
@example({"exp": [1700000000]}, {}, True)
@example({"exp": {"v": 1}}, {}, True)
@example({"exp": 253402300800}, {}, True)
@example({"exp": 1700000000.5, "iat": 1700000000, "nbf": 1699999999}, {}, True)
def test_decode_jwt_time_claims(times: dict[str, Any], extra: dict[str, Any], sign: bool) -> None:
    """JWTs (unsigned or HS256) with claims of every type: valid times decode exactly; any
    other value (string, bool, NaN, infinite, out of range, container) is InvalidResponseError."""
    payload = {**extra, **times}
    header = {"alg": "HS256" if sign else "none", "typ": "JWT"}
    value = jwt_of(header, dumps(payload), sign=sign)
    expected = {name: expected_time(times.get(name)) for name in TIME_CLAIMS}
    if any(e is InvalidResponseError for e in expected.values()):
        with pytest.raises(InvalidResponseError):
            decode_jwt(value)
        return
    token = decode_jwt(value)
    assert token.value == value
    assert token.expires_at == expected["exp"]
    assert token.not_before == expected["nbf"]
    assert token.issued_at == expected["iat"]
    assert canonical(dict(token.claims)) == canonical(payload)


@PROPS
@given(json_values, st.booleans())
@example([1, 2], False)
@example("exp", True)
@example(None, False)
def test_decode_jwt_payload_of_any_json(payload: Any, sign: bool) -> None:
    """A payload that is any JSON value: an object decodes (or not, by its claims); anything
    else is InvalidResponseError."""
    value = jwt_of({"alg": "HS256" if sign else "none"}, dumps(payload), sign=sign)
    token = check_decode(value)
    if not isinstance(payload, dict):
        assert token is None


@PROPS
@given(
    st.dictionaries(
        st.sampled_from(["alg", "typ", "kid", "cty", "crit", "b64", "x5u", "jku"])
        | st.text(max_size=5),
        json_values,
        max_size=5,
    )
    | json_values,
    st.binary(max_size=64) | json_values.map(dumps),
    st.booleans(),
)
def test_decode_jwt_any_header_and_payload_bytes(header: Any, payload: bytes, sign: bool) -> None:
    """Headers and payload bytes of any shape: a Token or InvalidResponseError."""
    check_decode(jwt_of(header, payload, sign=sign))


# -- structure(body, Model) ----------------------------------------------------------------------

MODELS: dict[type[Any], tuple[str, ...]] = {
    TokenResponse: ("access_token", "token_type"),
    IcaTokenBody: ("token", "access_token"),
    TokenDetailResponse: (
        "uid",
        "name",
        "username",
        "currentWorkgroup",
        "current_workgroup",
        "tid",
        "acls",
        "domain",
    ),
    Problem: (
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "id",
        "parameters",
        "timestamp",
    ),
    ErrorResponse: ("code", "message", "details"),
}


def opt_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def well_formed(obj: Any) -> None:
    """The types downstream code relies on, whatever the input was."""
    if isinstance(obj, TokenResponse):
        assert opt_str(obj.access_token)
        assert opt_str(obj.token_type)
    elif isinstance(obj, IcaTokenBody):
        assert opt_str(obj.token)
        assert opt_str(obj.access_token)
    elif isinstance(obj, TokenDetailResponse):
        assert all(opt_str(v) for v in (obj.uid, obj.name, obj.username, obj.tid))
        assert isinstance(obj.acls, tuple)
        assert all(isinstance(a, str) for a in obj.acls)
        wg, dom = obj.current_workgroup, obj.domain
        assert wg is None or (
            isinstance(wg, Workgroup) and all(map(opt_str, (wg.id, wg.name, wg.description)))
        )
        assert dom is None or (isinstance(dom, Domain) and opt_str(dom.id) and opt_str(dom.name))
    elif isinstance(obj, Problem):
        for v in (obj.type, obj.title, obj.detail, obj.instance):
            assert opt_str(v)
        assert obj.status is None or (
            isinstance(obj.status, int) and not isinstance(obj.status, bool)
        )
        assert obj.id is None or isinstance(obj.id, uuid.UUID)
        assert isinstance(obj.parameters, Mapping)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in obj.parameters.items())
        assert obj.timestamp is None or (
            isinstance(obj.timestamp, dt.datetime) and obj.timestamp.tzinfo is not None
        )
    elif isinstance(obj, ErrorResponse):
        assert opt_str(obj.code)
        assert opt_str(obj.message)
        assert isinstance(obj.details, tuple)
    else:  # pragma: no cover
        raise AssertionError(type(obj))


def check_structure(body: Any, model: type[Any]) -> Any:
    try:
        result = structure(body, model, status=201, method="POST", url="http://127.0.0.1/x")
    except InvalidResponseError as exc:
        failure: InvalidResponseError | None = exc
    else:
        failure = None
    if failure is not None:
        assert failure.status == 201
        return None
    assert isinstance(result, model)
    well_formed(result)
    return result


@PROPS
@given(json_values, st.sampled_from(list(MODELS)))
@example([], Problem)
@example("x", TokenResponse)
@example({"status": "abc"}, Problem)
@example({"status": math.inf}, Problem)
@example({"status": math.nan}, Problem)
@example({"timestamp": "not a date", "id": "not-a-uuid"}, Problem)
@example({"timestamp": 10**30, "id": 3.5}, Problem)
@example({"parameters": [1, 2]}, Problem)
@example({"acls": 5}, TokenDetailResponse)
@example({"currentWorkgroup": "wg"}, TokenDetailResponse)
@example({"details": 5}, ErrorResponse)
def test_structure_any_json(body: Any, model: type[Any]) -> None:
    """Any JSON value: a well-formed instance or InvalidResponseError."""
    check_structure(body, model)


@pytest.mark.slow
@PROPS
@given(st.sampled_from(list(MODELS)), st.data())
def test_structure_model_keys_with_any_values(model: type[Any], data: st.DataObject) -> None:
    """The model's own wire keys with values of any JSON type: instance or InvalidResponseError."""
    keys = st.sampled_from(MODELS[model]) | st.text(max_size=6)
    body = data.draw(st.dictionaries(keys, json_values, max_size=6))
    check_structure(body, model)


def with_none_or_missing(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), value)


def wire_of(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop the fields drawn as None: absent on the wire (None is also tested as null)."""
    return {k: v for k, v in fields.items() if v is not None}


texts = st.text(max_size=30)
extra_keys = st.dictionaries(st.text(max_size=8).map(lambda k: "zz_" + k), json_values, max_size=3)


@PROPS
@given(with_none_or_missing(texts), with_none_or_missing(texts), extra_keys, st.booleans())
def test_structure_valid_token_bodies(
    token: str | None, kind: str | None, extra: dict[str, Any], nulls: bool
) -> None:
    """Valid TokenResponse / IcaTokenBody: exact fields; null means absent; extra keys ignored."""
    fields = {"access_token": token, "token_type": kind}
    body = {**extra, **(fields if nulls else wire_of(fields))}
    assert structure(body, TokenResponse) == TokenResponse(token, kind)
    assert structure(body, TokenResponse).access_token == token
    ica = {
        **extra,
        **(
            {"token": token, "access_token": kind}
            if nulls
            else wire_of({"token": token, "access_token": kind})
        ),
    }
    parsed = structure(ica, IcaTokenBody)
    assert (parsed.token, parsed.access_token) == (token, kind)


@PROPS
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "uid": texts,
            "name": texts,
            "username": texts,
            "tid": texts,
            "acls": st.lists(texts, max_size=4),
            "currentWorkgroup": st.fixed_dictionaries(
                {}, optional={"id": texts, "name": texts, "description": texts}
            ),
            "domain": st.fixed_dictionaries({}, optional={"id": texts, "name": texts}),
        },
    ),
    extra_keys,
)
def test_structure_valid_token_details(body: dict[str, Any], extra: dict[str, Any]) -> None:
    """Valid TokenDetailResponse (wire name `currentWorkgroup`): exact fields."""
    parsed = structure({**extra, **body}, TokenDetailResponse)
    wg = body.get("currentWorkgroup")
    dom = body.get("domain")
    assert parsed == TokenDetailResponse(
        uid=body.get("uid"),
        name=body.get("name"),
        username=body.get("username"),
        current_workgroup=None if wg is None else Workgroup(**wg),
        tid=body.get("tid"),
        acls=tuple(body.get("acls", ())),
        domain=None if dom is None else Domain(**dom),
    )


@PROPS
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "type": texts,
            "title": texts,
            "status": st.integers(100, 599),
            "detail": texts,
            "instance": texts,
            "id": st.uuids(),
            "parameters": st.dictionaries(texts, texts, max_size=3),
            "timestamp": st.datetimes(
                min_value=dt.datetime(1970, 1, 2),
                max_value=dt.datetime(9999, 12, 30),
                timezones=st.just(dt.UTC),
            ),
        },
    ),
    extra_keys,
    st.booleans(),
)
def test_structure_valid_problem(body: dict[str, Any], extra: dict[str, Any], zulu: bool) -> None:
    """Valid Problem (RFC 7807 + parameters, timestamp): exact fields, uuid and datetime parsed."""
    wire = dict(body)
    if "id" in wire:
        wire["id"] = str(wire["id"])
    if "timestamp" in wire:
        stamp = wire["timestamp"].isoformat()
        wire["timestamp"] = stamp.replace("+00:00", "Z") if zulu else stamp
    parsed = structure({**extra, **wire}, Problem)
    assert parsed == Problem(**{k.replace("-", "_"): v for k, v in body.items()})


@PROPS
@given(with_none_or_missing(texts), with_none_or_missing(texts), st.lists(json_values, max_size=3))
def test_structure_valid_error_response(
    code: str | None, message: str | None, details: list[Any]
) -> None:
    """Valid v1 ErrorResponse: exact fields, details kept as a tuple of raw JSON values."""
    parsed = structure(
        wire_of({"code": code, "message": message}) | {"details": details}, ErrorResponse
    )
    assert (parsed.code, parsed.message) == (code, message)
    assert canonical(list(parsed.details)) == canonical(details)


# -- parse_http_date, parse_retry_after ----------------------------------------------------------

http_dates = st.datetimes(
    min_value=dt.datetime(1900, 1, 1),
    max_value=dt.datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(dt.UTC),
).map(lambda d: d.replace(microsecond=0))


@PROPS
@given(st.text() | st.none())
@example("Wed, 21 Oct 2015 07:28:00 GMT")
@example("Wed, 21 Oct 2015 07:28:00")  # no zone (asctime-like): read as GMT
@example("Fri, 31 Dec 9999 23:59:59 +1400")
@example("Mon, 01 Jan 0001 00:00:00 -1400")
@example("Mon, 99 Foo 99999999999 99:99:99 GMT")
@example("-1")
def test_parse_http_date_never_raises(value: str | None) -> None:
    """Any text: a finite POSIX timestamp or None."""
    result = parse_http_date(value)
    assert result is None or (isinstance(result, float) and math.isfinite(result))


@PROPS
@given(http_dates)
def test_parse_http_date_valid(when: dt.datetime) -> None:
    """`email.utils.format_datetime` output parses back to the same instant."""
    text = email.utils.format_datetime(when, usegmt=True)
    assert parse_http_date(text) == when.timestamp()


@PROPS
@given(st.text() | st.none(), st.floats(min_value=0, max_value=1e10) | st.none())
@example("0", None)
@example(" 120 ", None)
@example("1" + "0" * 40, None)
@example("-5", None)
@example("1.5", None)
@example("Wed, 21 Oct 2015 07:28:00 GMT", None)
def test_parse_retry_after_never_raises(value: str | None, now: float | None) -> None:
    """Any text: seconds >= 0 (finite) or None."""
    result = parse_retry_after(value, now=now)
    assert result is None or (isinstance(result, float) and 0 <= result < math.inf)


@PROPS
@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["", " ", "\t"]))
def test_parse_retry_after_delta_seconds(seconds: int, pad: str) -> None:
    """Delta-seconds: exactly that many seconds."""
    assert parse_retry_after(f"{pad}{seconds}{pad}") == float(seconds)


@PROPS
@given(http_dates, st.integers(min_value=-(10**6), max_value=10**6))
def test_parse_retry_after_http_date(when: dt.datetime, shift: int) -> None:
    """An HTTP date: its distance from `now`, clamped at 0 for dates in the past."""
    now = when.timestamp() - shift
    result = parse_retry_after(email.utils.format_datetime(when, usegmt=True), now=now)
    assert result == max(0.0, float(shift))


# -- error_for ------------------------------------------------------------------------------------


@st.composite
def error_bodies(draw: st.DrawFn, secrets: list[str]) -> bytes:
    """Error bodies a server might send, echoing the request's secrets in any field."""
    echo = st.sampled_from(secrets)
    text_with_secret = st.builds(
        lambda a, s, b: a + s + b, st.text(max_size=20), echo, st.text(max_size=20)
    )
    field = text_with_secret | json_values
    kind = draw(st.sampled_from(["problem", "v1", "json", "html", "bytes", "mixed"]))
    if kind == "problem":
        keys = ["type", "title", "status", "detail", "instance", "id", "parameters", "timestamp"]
        body: Any = draw(st.dictionaries(st.sampled_from(keys), field, min_size=1))
        if draw(st.booleans()):
            body["parameters"] = {"credential": draw(echo)}
        return dumps(body)
    if kind == "v1":
        body = draw(
            st.dictionaries(st.sampled_from(["code", "message", "details"]), field, min_size=1)
        )
        return dumps(body)
    if kind == "json":
        return dumps(
            draw(st.lists(field, max_size=3) | st.dictionaries(st.text(max_size=5), field))
        )
    if kind == "html":
        return f"<html><body><h1>502</h1><p>{draw(text_with_secret)}</p></body></html>".encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    parts = draw(st.lists(st.binary(max_size=20) | echo.map(str.encode), max_size=6))
    return b"".join(parts)


retry_after_values = (
    st.none()
    | st.integers(0, 10**6).map(str)
    | http_dates.map(lambda d: email.utils.format_datetime(d, usegmt=True))
    | st.text(max_size=20)
)


@pytest.mark.slow
@PROPS
@given(
    st.integers(min_value=400, max_value=599),
    st.lists(secrets_st, min_size=1, max_size=3, unique=True),
    st.data(),
    retry_after_values,
    st.none() | st.floats(min_value=0, max_value=4e9),
)
def test_error_never_leaks_secrets(
    status: int,
    secrets: list[str],
    data: st.DataObject,
    retry_after: str | None,
    server_time: float | None,
) -> None:
    """Any error body (Problem, v1 error, HTML, bytes) echoing the secrets: the right ApiError
    subclass, and neither its message nor any attribute (the decoded problem included)
    contains one of them."""
    raw = data.draw(error_bodies(secrets))
    exc = error_for(
        status,
        raw,
        "POST",
        "http://127.0.0.1:1/ica/rest/api/tokens",
        secrets,
        retry_after,
        server_time,
    )
    assert isinstance(exc, ApiError)
    assert type(exc) is error_class(status)
    assert isinstance(exc, ServerError) == (status >= 500)
    assert isinstance(exc, RateLimitError) == (status == 429)
    assert exc.status == status
    assert "POST http://127.0.0.1:1/ica/rest/api/tokens" in str(exc)
    message = str(exc)
    for secret in secrets:
        assert secret not in message
        assert secret not in exc.excerpt
        assert secret not in repr(exc.problem)
        assert secret not in repr(vars(exc))
    assert len(exc.excerpt) <= 201
    if exc.retry_after is not None:
        assert 0 <= exc.retry_after < math.inf
    if retry_after is not None and retry_after.isdigit():
        assert exc.retry_after == float(retry_after)


def test_error_known_shapes() -> None:
    """The shapes ICA and the console really send, each echoing a secret."""
    secret = "ak-0123456789SECRET"
    problem = {"type": "about:blank", "title": "Unauthorized", "status": 401}
    cases = {
        dumps({**problem, "detail": f"bad key {secret}"}): "Unauthorized: bad key ***",
        dumps({"code": "401", "message": f"key {secret} is unknown"}): "401: key *** is unknown",
        f"<html>{secret}</html>".encode(): "'<html>***</html>'",
        f"\xff\xfe {secret} \x00".encode("latin-1"): "***",
    }
    for raw, shown in cases.items():
        exc = error_for(401, raw, "POST", "http://127.0.0.1/x", [secret], None, None)
        assert shown in str(exc)
        assert secret not in str(exc)


# -- scrub ----------------------------------------------------------------------------------------


@st.composite
def jwts(draw: st.DrawFn) -> str:
    """A real JWT (header eyJ..., non-trivial payload, HS256 signature)."""
    claims = {
        "sub": draw(st.text(string.ascii_letters, min_size=4, max_size=12)),
        "exp": draw(st.integers(1, 2**40)),
        **draw(
            st.dictionaries(
                st.text(string.ascii_lowercase, min_size=1, max_size=4),
                json_scalars.filter(lambda v: not (isinstance(v, float) and not math.isfinite(v))),
                max_size=3,
            )
        ),
    }
    return jwt_of(
        {"alg": draw(st.sampled_from(["HS256", "RS256"])), "typ": "JWT"}, dumps(claims), sign=True
    )


@pytest.mark.slow
@PROPS
@given(
    st.lists(st.text(max_size=30) | st.just("Bearer ") | st.just("."), max_size=8),
    st.lists(jwts(), max_size=3),
    st.lists(secrets_st, max_size=3),
    st.data(),
)
def test_scrub_removes_jwts_and_secrets(
    noise: list[str], tokens: list[str], secrets: list[str], data: st.DataObject
) -> None:
    """Text mixing noise, JWTs and secrets: none of the JWTs (nor their payload or signature
    segments) nor the secrets survive, and the result is short."""
    order = data.draw(st.permutations(noise + tokens + secrets))
    # Two JWTs written back to back with no separator at all are not text any server sends:
    # the regex then takes the second header as part of the first signature and the last
    # signature survives. Keep at least one non-base64url character between them.
    text = "".join(
        f" {piece}" if piece in tokens and i and order[i - 1] in tokens else piece
        for i, piece in enumerate(order)
    )
    out = scrub(text, secrets)
    assert len(out) <= 201
    for secret in secrets:
        assert secret not in out
    for token in tokens:
        _, payload, signature = token.split(".")
        assert token not in out
        assert payload not in out
        assert signature not in out
    assert not re.search(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}", out)


@PROPS
@given(st.text(max_size=300))
def test_scrub_is_total_and_short(text: str) -> None:
    """Any text: a str of at most 200 characters (+ an ellipsis), whitespace collapsed."""
    out = scrub(text, ())
    assert isinstance(out, str)
    assert len(out) <= 201
    assert "  " not in out
    assert "\n" not in out


# -- plan -----------------------------------------------------------------------------------------

finite_times = st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.integers(
    0, 4_000_000_000
)


@PROPS
@given(
    iat=st.none() | finite_times,
    exp=st.none() | finite_times,
    nbf=st.none() | finite_times,
    reply=st.none()
    | st.builds(
        Exchange,
        sent_at=st.floats(min_value=0, max_value=1e7),
        sent_wall=st.floats(min_value=0, max_value=4e9),
        received_at=st.floats(min_value=0, max_value=1e7),
        server_offset=st.none() | st.floats(min_value=-1e9, max_value=1e9),
    ),
    policy=st.builds(
        Policy,
        refresh_margin=st.floats(min_value=1e-3, max_value=1e6),
        min_validity=st.floats(min_value=1e-3, max_value=1e6),
        leeway=st.floats(min_value=0, max_value=1e6),
        jitter=st.floats(min_value=0, max_value=0.5),
    )
    | st.just(Policy()),
)
@example(iat=100, exp=100, nbf=None, reply=None, policy=Policy())  # zero lifetime
@example(iat=200, exp=100, nbf=300, reply=None, policy=Policy())  # exp before iat
@example(iat=None, exp=0, nbf=4e9, reply=None, policy=Policy())
def test_plan_orders_the_deadlines(
    iat: float | None, exp: float | None, nbf: float | None, reply: Exchange | None, policy: Policy
) -> None:
    """Any finite exp/iat/nbf and reply offset: refresh_at <= hard_at <= expires, all finite
    when the token expires, valid_from finite; never judged valid past the server's exp."""
    claims = {k: v for k, v in (("iat", iat), ("exp", exp), ("nbf", nbf)) if v is not None}
    token = decode_jwt(jwt_of({"alg": "none"}, dumps(claims), sign=False))
    timing = Timing.of(token, reply, policy)
    assert math.isfinite(timing.valid_from)
    assert timing.refresh_at <= timing.hard_at <= timing.expires
    if exp is None:
        assert timing.expires == math.inf
        assert timing.lifetime is None
        return
    for value in (timing.refresh_at, timing.hard_at, timing.expires):
        assert math.isfinite(value)
    if reply is not None and iat is not None:
        # Anchored at the moment the request was sent, in the server's frame (`iat`):
        # never later than the server's own expiry.
        # (Claims go through datetime: microsecond resolution.)
        tol = 2e-6 + 1e-9 * (abs(exp) + abs(iat) + abs(reply.sent_at) + abs(reply.sent_wall))
        assert timing.expires <= reply.sent_at + (exp - iat) + tol
        assert timing.lifetime == pytest.approx(exp - iat, abs=tol)
        assert timing.skew == pytest.approx(iat - reply.sent_wall, abs=tol)


@PROPS
@given(st.floats(min_value=0.05, max_value=86400 * 2), st.floats(min_value=0, max_value=5))
def test_plan_windows_scale_with_the_lifetime(lifetime: float, rtt: float) -> None:
    """Default policy: refresh starts in the last quarter (or 300 s), callers wait only in the
    last tenth (or 30 s), the leeway is at most a twentieth (or 30 s)."""
    now = time.time()
    claims = {"iat": now, "exp": now + lifetime}
    token = decode_jwt(jwt_of({"alg": "none"}, dumps(claims), sign=False))
    reply = Exchange(1000.0, now, 1000.0 + rtt, None)
    t = Timing.of(token, reply, Policy())
    end = 1000.0 + lifetime
    slack = 1e-6 * max(1.0, lifetime)
    assert end - t.expires <= min(30.0, lifetime / 20) + slack
    assert t.expires - t.hard_at <= min(30.0, lifetime / 10) + slack
    assert t.expires - t.refresh_at <= 1.1 * min(1200.0, lifetime / 2) + slack
    assert t.expires - t.refresh_at >= min(1200.0, lifetime / 2) - slack


# -- known library bugs (deterministic reproducers) ----------------------------------------------


@pytest.mark.parametrize("value", ["²", "1²", "9" * (INT_MAX_STR_DIGITS + 1)])
def test_retry_after_unicode_or_huge_digits_raise(value: str) -> None:
    """parse_retry_after must never raise; a 429 with such a Retry-After must stay an ApiError."""
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0
    exc = error_for(429, b"", "POST", "http://127.0.0.1/x", (), value, None)
    assert isinstance(exc, RateLimitError)


def test_decode_jwt_int_too_large_for_a_float() -> None:
    """`{"exp": 10**400}` must be InvalidResponseError like `1e400` or `1e20` are."""
    value = jwt_of({"alg": "none"}, b'{"exp": 1' + b"0" * 400 + b"}", sign=False)
    with pytest.raises(InvalidResponseError):
        decode_jwt(value)


def test_error_body_deeply_nested_json() -> None:
    """A 1 MiB-bounded error body of nested arrays must still give an ApiError."""
    raw = b"[" * 100_000 + b"]" * 100_000
    exc = error_for(502, raw, "POST", "http://127.0.0.1/x", (), None, None)
    assert isinstance(exc, ServerError)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title":"Unauthorized","instance":"/tokens?key=ak-0123456789SECRET"}',
        b'{"title":"Unauthorized","parameters":{"X-API-Key":"ak-0123456789SECRET"}}',
        b'{"code":"401","details":["ak-0123456789SECRET"]}',
    ],
)
def test_error_problem_attributes_have_no_secrets(raw: bytes) -> None:
    """DESIGN: "No message or attribute ever contains a secret" (fields beyond title/detail)."""
    secret = "ak-0123456789SECRET"
    exc = error_for(401, raw, "POST", "http://127.0.0.1/x", [secret], None, None)
    assert exc.problem is not None
    assert secret not in repr(exc.problem)


def lax_json(value: Any, rnd: Any, escapes: str) -> str:
    """Valid JSON as other servers write it: `/` as `\\/` (PHP, some Java and .NET encoders),
    or any character as a `\\uXXXX` escape (either hex case)."""
    if isinstance(value, dict):
        items = (
            f"{lax_json(str(k), rnd, escapes)}:{lax_json(v, rnd, escapes)}"
            for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(lax_json(v, rnd, escapes) for v in value) + "]"
    if not isinstance(value, str):
        return json.dumps(value, allow_nan=True)
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\' or code < 0x20:
            out.append(json.dumps(ch)[1:-1])
        elif ch == "/" and escapes in ("slash", "both") and rnd.random() < 0.9:
            out.append("\\/")
        elif escapes in ("unicode", "both") and code <= 0xFFFF and rnd.random() < 0.3:
            out.append(("\\u%04x" if rnd.random() < 0.5 else "\\u%04X") % code)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@pytest.mark.slow
@PROPS
@given(
    st.lists(secrets_st, min_size=1, max_size=2, unique=True),
    st.sampled_from(["title", "detail", "instance", "message", "code"]),
    st.sampled_from(["slash", "unicode", "both"]),
    st.randoms(use_true_random=False),
)
@example(["ak/0123456789SECRET"], "detail", "slash", random.Random(0))
@example(["ak-0123456789SECRET"], "title", "unicode", random.Random(1))
def test_error_never_leaks_json_escaped_secrets(
    secrets: list[str], field: str, escapes: str, rnd: random.Random
) -> None:
    """An error body echoing a secret in valid JSON with other escapes than Python's:
    still nothing of it in the message or the decoded problem."""
    v2 = field in ("title", "detail", "instance")
    body = {"title": "Unauthorized"} if v2 else {"code": "401"}
    body[field] = f"bad credential {secrets[0]} given"
    raw = lax_json(body, rnd, escapes).encode()
    assert json.loads(raw) == body  # valid JSON, same content
    exc = error_for(401, raw, "POST", "http://127.0.0.1/x", secrets, None, None)
    assert secrets[0] not in str(exc)
    assert secrets[0] not in repr(exc.problem)
