"""Wire models (attrs + the one cattrs converter) and `Token`, the decoded JWT."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
import pytest

from aioica_auth import (
    Domain,
    ErrorResponse,
    InvalidResponseError,
    Problem,
    Token,
    TokenDetailResponse,
    TokenResponse,
    Workgroup,
)
from aioica_auth._models import AccessTokenRequest, IcaTokenBody, converter
from aioica_auth._wire.answers import structure

from ..support import unsigned_jwt as make_jwt

UTC = dt.UTC


# --------------------------------------------------------------------------- Token.from_jwt


def test_from_jwt_decodes_times_as_aware_utc() -> None:
    """exp, nbf and iat become aware UTC datetimes at exactly those instants."""
    value = make_jwt({"exp": 1_700_003_600, "nbf": 1_699_999_970, "iat": 1_700_000_000})
    token = Token.from_jwt(value)
    assert token.value == value
    assert token.expires_at == dt.datetime(2023, 11, 14, 23, 13, 20, tzinfo=UTC)
    assert token.issued_at == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert token.not_before == dt.datetime(2023, 11, 14, 22, 12, 50, tzinfo=UTC)
    for when in (token.expires_at, token.issued_at, token.not_before):
        assert when is not None
        assert when.utcoffset() == dt.timedelta(0)


def test_from_jwt_keeps_every_claim_read_only() -> None:
    """`claims` holds every claim, and is a read-only Mapping."""
    claims = {
        "sub": "2f1e",
        "aud": "ica",
        "tid": "dGVuYW50OjEyMw==",
        "tns": "lab",
        "exp": 1_700_003_600,
        "custom": {"nested": [1, 2]},
    }
    token = Token.from_jwt(make_jwt(claims))
    assert isinstance(token.claims, Mapping)
    assert dict(token.claims) == claims
    with pytest.raises(TypeError):
        token.claims["sub"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        del token.claims["sub"]  # type: ignore[attr-defined]


def test_token_is_frozen() -> None:
    """A Token cannot be changed in place."""
    token = Token.from_jwt(make_jwt({"exp": 1}))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        token.value = "other"  # type: ignore[misc]


def test_from_jwt_without_exp_has_no_expiry() -> None:
    """A JWT without exp has expires_at None (and no lifetime)."""
    token = Token.from_jwt(make_jwt({"sub": "x", "iat": 1_700_000_000}))
    assert token.expires_at is None
    assert token.not_before is None
    assert token.issued_at == dt.datetime.fromtimestamp(1_700_000_000, UTC)
    assert token.lifetime is None


def test_from_jwt_fractional_numeric_dates() -> None:
    """Fractional NumericDates keep their sub-second part."""
    token = Token.from_jwt(make_jwt({"exp": 1_700_000_000.25, "iat": 1_699_999_000.5}))
    assert token.expires_at == dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert token.issued_at == dt.datetime(2023, 11, 14, 21, 56, 40, 500000, tzinfo=UTC)
    assert token.lifetime == 999.75


def test_from_jwt_does_not_verify_signature_or_times() -> None:
    """No signature, expiry or nbf check: an expired, not-yet-valid, alg=none JWT still decodes."""
    value = make_jwt({"exp": 1, "nbf": 4_000_000_000, "iat": 0}, header={"alg": "none"})
    token = Token.from_jwt(value)
    assert token.expires_at == dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert token.not_before == dt.datetime.fromtimestamp(4_000_000_000, UTC)


def test_lifetime_is_exp_minus_iat() -> None:
    """`lifetime` is exp - iat in seconds."""
    token = Token.from_jwt(make_jwt({"iat": 1_700_000_000, "exp": 1_700_086_400}))
    assert token.lifetime == 86_400.0


def test_lifetime_needs_both_times() -> None:
    """`lifetime` is None when iat is missing."""
    assert Token.from_jwt(make_jwt({"exp": 1_700_000_000})).lifetime is None


@pytest.mark.parametrize(
    ("claims", "name"),
    [
        ({"exp": "1700000000"}, "exp"),
        ({"exp": "tomorrow"}, "exp"),
        ({"exp": True}, "exp"),
        ({"exp": None, "nbf": [1]}, "nbf"),
        ({"iat": {"t": 1}}, "iat"),
        ({"exp": float("nan")}, "exp"),
        ({"exp": float("inf")}, "exp"),
        ({"exp": 1e300}, "exp"),
    ],
)
def test_from_jwt_rejects_non_numeric_or_absurd_times(claims: dict[str, Any], name: str) -> None:
    """A time claim that is not a finite, representable number is InvalidResponseError naming it."""
    with pytest.raises(InvalidResponseError, match=repr(name)):
        Token.from_jwt(make_jwt(claims))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "opaque-pstoken",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.bm90anNvbg.",
        make_jwt([1, 2, 3]),
        make_jwt("a string payload"),
    ],
)
def test_from_jwt_rejects_non_jwt(value: str) -> None:
    """Anything but a JWT with an object payload is InvalidResponseError, not PyJWT's error."""
    with pytest.raises(InvalidResponseError) as info:
        Token.from_jwt(value)
    assert info.value.status == 200
    assert info.value.__cause__ is None
    if value:
        assert value not in str(info.value)


def test_authorization_property() -> None:
    """`authorization` is `Bearer <value>`."""
    value = make_jwt({"exp": 1})
    assert Token.from_jwt(value).authorization == "Bearer " + value


def test_opaque_pstoken() -> None:
    """An opaque psToken is a Token without times or claims, still usable as Bearer."""
    token = Token.opaque("ps-opaque-123")
    assert token.value == "ps-opaque-123"
    assert token.expires_at is None
    assert token.not_before is None
    assert token.issued_at is None
    assert dict(token.claims) == {}
    assert token.lifetime is None
    assert token.authorization == "Bearer ps-opaque-123"


def test_token_repr_shows_fingerprint_and_expiry_only() -> None:
    """repr/str show a SHA-256 fingerprint and expiry, never the value."""
    value = make_jwt({"exp": 1_700_000_000, "sub": "someone"})
    token = Token.from_jwt(value)
    fp = hashlib.sha256(value.encode()).hexdigest()[:8]
    assert token.fingerprint == fp
    assert repr(token) == f"Token(fingerprint='{fp}', expires_at='2023-11-14T22:13:20+00:00')"
    assert str(token) == repr(token)
    assert value not in f"{token} {token!r} {token!s}"
    assert repr(Token.opaque("abc-opaque")) == (
        f"Token(fingerprint='{hashlib.sha256(b'abc-opaque').hexdigest()[:8]}', expires_at=None)"
    )


def test_token_equality_is_by_value_and_times() -> None:
    """Two decodings of one JWT are equal; a different JWT is not."""
    value = make_jwt({"exp": 5})
    assert Token.from_jwt(value) == Token.from_jwt(value)
    assert Token.from_jwt(value) != Token.from_jwt(make_jwt({"exp": 6}))


# --------------------------------------------------------------------------- wire models


def test_token_response_structure_ignores_unknown_keys() -> None:
    """TokenResponse reads `access_token` and `token_type`, ignoring anything new."""
    got = converter.structure(
        {"access_token": "tok", "token_type": "Bearer", "expires_in": 3600, "x": {}}, TokenResponse
    )
    assert got == TokenResponse(access_token="tok", token_type="Bearer")


def test_token_detail_uses_camel_case_current_workgroup() -> None:
    """`currentWorkgroup` on the wire is `current_workgroup`; snake case on the wire is ignored."""
    got = converter.structure(
        {
            "currentWorkgroup": {"id": "wg", "name": "Lab", "description": "d", "extra": 1},
            "current_workgroup": {"id": "wrong"},
            "acls": ["a", "b"],
            "domain": {"id": "d1", "name": "dom", "region": "aps2"},
        },
        TokenDetailResponse,
    )
    assert got.current_workgroup == Workgroup(id="wg", name="Lab", description="d")
    assert got.acls == ("a", "b")
    assert got.domain == Domain(id="d1", name="dom")
    out = converter.unstructure(got)
    assert "currentWorkgroup" in out
    assert "current_workgroup" not in out


def test_all_fields_optional() -> None:
    """An empty object structures into every model with all defaults."""
    for model in (TokenResponse, TokenDetailResponse, Workgroup, Domain, Problem, ErrorResponse):
        assert converter.structure({}, model) == model()


def test_nulls_are_as_good_as_absent() -> None:
    """Top-level and nested JSON nulls become field defaults, never the string 'None'."""
    got = structure(
        {
            "uid": None,
            "acls": None,
            "currentWorkgroup": {"id": None, "name": "Lab"},
            "domain": None,
        },
        TokenDetailResponse,
    )
    assert got == TokenDetailResponse(current_workgroup=Workgroup(name="Lab"))
    assert structure({"parameters": None, "title": None, "id": None}, Problem) == Problem()
    assert structure({"details": None, "code": "C"}, ErrorResponse) == ErrorResponse(code="C")
    assert structure({"access_token": None}, TokenResponse) == TokenResponse()


def test_null_inside_acls_is_not_the_string_none() -> None:
    """A null inside `acls` never becomes the ACL 'None'."""
    got = structure({"acls": ["wid:1", None]}, TokenDetailResponse)
    assert "None" not in got.acls


@pytest.mark.parametrize("value", ["wg", [1]])
def test_non_object_for_nested_model_is_invalid(value: Any) -> None:
    """A non-object where a nested model belongs is InvalidResponseError, never a blank model."""
    with pytest.raises(InvalidResponseError):
        structure({"currentWorkgroup": value}, TokenDetailResponse)


@pytest.mark.parametrize(
    ("body", "model"),
    [
        ({"acls": 5}, TokenDetailResponse),
        ({"domain": 5}, TokenDetailResponse),
        ({"status": "not-int"}, Problem),
        ({"parameters": ["a"]}, Problem),
        ([], TokenResponse),
        ("text", TokenResponse),
        (None, TokenResponse),
    ],
)
def test_structure_ill_shaped_body_is_invalid_response(body: Any, model: type) -> None:
    """An ill-shaped body is InvalidResponseError naming the model, no cattrs detail chained."""
    with pytest.raises(InvalidResponseError, match=model.__name__) as info:
        structure(body, model)
    cause = info.value.__cause__
    assert cause is None or type(cause) is ValueError


def test_problem_decodes_id_and_timestamp() -> None:
    """Problem.id is a UUID and timestamp an aware datetime; a zone-less timestamp is UTC."""
    pid = "6f1c6a4e-8f2b-4c1e-9d7a-0123456789ab"
    got = converter.structure(
        {
            "id": pid,
            "type": "about:blank",
            "title": "T",
            "status": 400,
            "detail": "D",
            "instance": "/x",
            "parameters": {"a": "b"},
            "timestamp": "2024-05-01T12:34:56+02:00",
        },
        Problem,
    )
    assert got.id == uuid.UUID(pid)
    assert got.timestamp == dt.datetime(2024, 5, 1, 10, 34, 56, tzinfo=UTC)
    assert got.parameters == {"a": "b"}
    naive = converter.structure({"timestamp": "2024-05-01T12:34:56"}, Problem)
    assert naive.timestamp == dt.datetime(2024, 5, 1, 12, 34, 56, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", "not-a-uuid"), ("id", 12), ("timestamp", "yesterday"), ("timestamp", 1_700_000_000)],
)
def test_problem_lenient_on_informative_fields(field: str, value: Any) -> None:
    """A malformed Problem id or timestamp becomes None rather than losing the whole problem."""
    got = converter.structure({field: value, "title": "kept"}, Problem)
    assert getattr(got, field) is None
    assert got.title == "kept"


def test_error_response_details_any_items() -> None:
    """ErrorResponse.details keeps arbitrary JSON items, as a tuple."""
    got = converter.structure(
        {"code": "C", "message": "M", "details": [{"f": 1}, "s", 3, None]}, ErrorResponse
    )
    assert got == ErrorResponse(code="C", message="M", details=({"f": 1}, "s", 3, None))


def test_access_token_request_unstructures_to_wire_body() -> None:
    """AccessTokenRequest is sent as exactly `{"access_token": ...}`."""
    assert converter.unstructure(AccessTokenRequest("tok")) == {"access_token": "tok"}


def test_ica_token_body_reads_both_keys() -> None:
    """The v2 token body reads `token` and the `access_token` some versions send."""
    assert converter.structure({"token": "a"}, IcaTokenBody) == IcaTokenBody(token="a")
    assert converter.structure({"access_token": "b"}, IcaTokenBody) == IcaTokenBody(
        access_token="b"
    )


@pytest.mark.parametrize(
    "model",
    [TokenResponse, TokenDetailResponse, Workgroup, Domain, Problem, ErrorResponse, IcaTokenBody],
)
def test_models_are_frozen(model: type) -> None:
    """Wire models cannot be changed in place."""
    instance = model()
    name = attrs.fields(model)[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(instance, name, "changed")


def test_token_bearing_models_hide_the_token_in_repr() -> None:
    """TokenResponse, AccessTokenRequest and the v2 body never show the token in repr."""
    secret = "tok-models-SECRET-123"
    for obj in (
        TokenResponse(access_token=secret, token_type="Bearer"),
        AccessTokenRequest(secret),
        IcaTokenBody(token=secret, access_token=secret),
    ):
        assert secret not in repr(obj)
        assert secret not in str(obj)
    assert repr(TokenResponse(access_token=secret, token_type="Bearer")) == (
        "TokenResponse(token_type='Bearer')"
    )
