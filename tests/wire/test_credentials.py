"""Credentials: validated on construction, sent as the right header, never shown."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from typing import Any

import attrs
import pytest

from aioica_auth import ApiKey, BasicAuth, Jwt, PsToken, Token, TokenResponse
from aioica_auth._credentials import auth_headers, fingerprint, secrets_of
from aioica_auth._models import AccessTokenRequest

from ..support import find_secret
from ..support import unsigned_jwt as make_jwt

API_KEY = "ak-cred-0011223344556677SECRET"
USER = "carol@example.org"
PASSWORD = "pw-cred-C0rrectHorse!"
BASIC_B64 = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
PS_TOKEN = "ps-cred-session-SECRET-31337"


JWT = make_jwt({"sub": "cred", "exp": 2_000_000_000})
SECRETS = (API_KEY, PASSWORD, BASIC_B64, PS_TOKEN, JWT)


@pytest.fixture(autouse=True)
def _no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Any:
    """After each test, the DEBUG log holds no secret."""
    yield
    assert find_secret(caplog.text, SECRETS) is None


def shown(obj: object) -> str:
    """Every ordinary way an object is turned into text."""
    return " | ".join([repr(obj), str(obj), f"{obj}", f"{obj!r}", "%s %r" % (obj, obj)])  # noqa: UP031


# --------------------------------------------------------------------------- validation


CASES = [
    pytest.param(lambda v: ApiKey(v), "key", id="ApiKey.key"),
    pytest.param(lambda v: BasicAuth(USER, v), "password", id="BasicAuth.password"),
    pytest.param(lambda v: BasicAuth(v, PASSWORD), "username", id="BasicAuth.username"),
    pytest.param(lambda v: PsToken(v), "token", id="PsToken.token"),
    pytest.param(lambda v: Jwt(v), "token", id="Jwt.token"),
]


@pytest.mark.parametrize(("make", "name"), CASES)
@pytest.mark.parametrize("value", ["", " ", "   ", "\t", "\n", " \r\n "])
def test_empty_or_whitespace_is_value_error(make: Any, name: str, value: str) -> None:
    """An empty or whitespace-only secret is a ValueError naming the argument."""
    with pytest.raises(ValueError, match=rf"^[A-Za-z]+\.{name} must not be empty or whitespace$"):
        make(value)


@pytest.mark.parametrize(("make", "name"), CASES)
@pytest.mark.parametrize(
    "value",
    [
        " leaky-secret-1",
        "leaky-secret-2 ",
        "leaky-secret-3\n",
        "leaky\r\nsecret-4",
        "leaky\0secret-5",
    ],
)
def test_padded_or_control_character_is_value_error_without_value(
    make: Any, name: str, value: str
) -> None:
    """Surrounding whitespace or a control character is a ValueError naming the argument only."""
    with pytest.raises(ValueError, match=rf"\.{name} has leading or trailing whitespace") as info:
        make(value)
    message = str(info.value)
    assert "leaky" not in message
    assert "secret" not in message
    assert "leaky" not in repr(info.value)


@pytest.mark.parametrize(("make", "name"), CASES)
@pytest.mark.parametrize(
    "value", [None, 12345, b"bytes-secret", ["list-secret"], ApiKey("nested-secret")]
)
def test_non_str_is_type_error_without_value(make: Any, name: str, value: Any) -> None:
    """A non-str secret is a TypeError naming the argument and the type, not the value."""
    with pytest.raises(
        TypeError, match=rf"\.{name} must be a str, not {type(value).__name__}"
    ) as info:
        make(value)
    assert "secret" not in str(info.value)
    assert "12345" not in str(info.value)


@pytest.mark.parametrize(("make", "name"), CASES)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("leaky\tsecret-6", id="tab"),
        pytest.param("leaky\x7fsecret-7", id="del"),
        pytest.param("leaky\x1bsecret-8", id="escape"),
        pytest.param("leaky\x85secret-9", id="c1-control"),
        pytest.param("leaky\vsecret-10", id="vertical-tab"),
    ],
)
def test_any_control_character_anywhere_is_value_error_without_value(
    make: Any, name: str, value: str
) -> None:
    """A control character (Unicode Cc: tab, DEL, ESC, C1, ...) anywhere in a credential is a
    ValueError naming the field, never the value."""
    with pytest.raises(ValueError, match=rf"\.{name} .*control character") as info:
        make(value)
    assert "leaky" not in str(info.value)
    assert "secret" not in repr(info.value)


@pytest.mark.parametrize(("make", "name"), CASES)
def test_lone_surrogate_is_value_error_without_value(make: Any, name: str) -> None:
    """Text that cannot be encoded as UTF-8 (a lone surrogate) is a ValueError naming the
    field: not the UnicodeEncodeError BasicAuth raised, whose args held `user:password`."""
    with pytest.raises(ValueError, match=rf"\.{name} .*cannot be encoded as UTF-8") as info:
        make("leaky\ud800secret")
    assert type(info.value) is ValueError
    assert "leaky" not in repr(info.value)
    assert info.value.__context__ is None


@pytest.mark.parametrize(
    ("make", "name"),
    [
        pytest.param(lambda v: ApiKey(v), "ApiKey.key", id="ApiKey"),
        pytest.param(lambda v: PsToken(v), "PsToken.token", id="PsToken"),
        pytest.param(lambda v: Jwt(v), "Jwt.token", id="Jwt"),
    ],
)
@pytest.mark.parametrize("value", ["leaky-sécret", "leaky\u2011secret", "ключ-secret"])
def test_header_credential_must_be_ascii(make: Any, name: str, value: str) -> None:
    """An API key, psToken or JWT goes in a header as it is: non-ASCII is a ValueError that
    says so, naming the field and never the value."""
    with pytest.raises(ValueError, match=rf"^{re.escape(name)} has a non-ASCII character") as info:
        make(value)
    assert "secret" not in str(info.value)
    assert "sécret" not in str(info.value)


def test_basic_auth_allows_non_ascii_username_and_password() -> None:
    """Basic is base64 of UTF-8: a non-ASCII username or password is fine."""
    assert BasicAuth("jörg@example.org", "pässwörd").username == "jörg@example.org"


@pytest.mark.parametrize("username", ["alice:admin@example.org", ":", "alice:"])
def test_basic_auth_username_with_colon_is_value_error(username: str) -> None:
    """RFC 7617: a Basic user-id cannot contain ':'; ValueError naming the field."""
    with pytest.raises(ValueError, match=r"^BasicAuth\.username must not contain ':'"):
        BasicAuth(username, PASSWORD)


@pytest.mark.parametrize(
    ("cls", "field"),
    [(ApiKey, "key"), (PsToken, "token"), (Jwt, "token"), (BasicAuth, "password")],
)
@pytest.mark.parametrize("value", ["x\ud800y", "x\tz", "é", ""])
def test_repr_and_str_never_raise_even_unvalidated(cls: Any, field: str, value: str) -> None:
    """repr() and str() of a credential never raise, even one built with validators off."""
    with attrs.validators.disabled():
        credential = cls(USER, value) if cls is BasicAuth else cls(value)
    assert getattr(credential, field) == value
    text = repr(credential) + str(credential)
    assert "fingerprint=" in text


@pytest.mark.parametrize(
    "make",
    [
        lambda: ApiKey(API_KEY),
        lambda: BasicAuth(USER, PASSWORD),
        lambda: PsToken(PS_TOKEN),
        lambda: Jwt(JWT),
    ],
)
def test_credentials_are_frozen_and_compare_by_value(make: Any) -> None:
    """Credentials are immutable and equal when their secrets are equal."""
    credential = make()
    assert credential == make()
    assert hash(credential) == hash(make())
    field = attrs.fields(type(credential))[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(credential, field, "changed")


# --------------------------------------------------------------------------- headers


def test_auth_headers() -> None:
    """ApiKey → X-API-Key; BasicAuth → Basic base64(user:pass); PsToken and Jwt → Bearer."""
    assert auth_headers(ApiKey(API_KEY)) == {"X-API-Key": API_KEY}
    assert auth_headers(BasicAuth(USER, PASSWORD)) == {"Authorization": "Basic " + BASIC_B64}
    assert auth_headers(PsToken(PS_TOKEN)) == {"Authorization": "Bearer " + PS_TOKEN}
    assert auth_headers(Jwt(JWT)) == {"Authorization": "Bearer " + JWT}


def test_basic_authorization_is_utf8_and_keeps_colons_in_password() -> None:
    """Basic encodes `user:password` as UTF-8; a colon in the password survives."""
    auth = BasicAuth("zoë@example.org", "a:b:ç")
    encoded = auth.authorization.removeprefix("Basic ")
    assert base64.b64decode(encoded).decode("utf-8") == "zoë@example.org:a:b:ç"


def test_auth_headers_rejects_other_types_without_echo() -> None:
    """A raw string where a credential belongs is a TypeError that does not echo it."""
    with pytest.raises(TypeError, match="not str") as info:
        auth_headers(API_KEY)  # type: ignore[arg-type]
    assert API_KEY not in str(info.value)


def test_secrets_of_covers_every_sent_secret() -> None:
    """The scrub list of a credential holds every secret it puts on the wire."""
    assert secrets_of(ApiKey(API_KEY)) == (API_KEY,)
    assert set(secrets_of(BasicAuth(USER, PASSWORD))) == {PASSWORD, BASIC_B64}
    assert secrets_of(PsToken(PS_TOKEN)) == (PS_TOKEN,)
    assert secrets_of(Jwt(JWT)) == (JWT,)


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("obj", "secrets"),
    [
        pytest.param(ApiKey(API_KEY), (API_KEY,), id="ApiKey"),
        pytest.param(BasicAuth(USER, PASSWORD), (PASSWORD, BASIC_B64, USER), id="BasicAuth"),
        pytest.param(PsToken(PS_TOKEN), (PS_TOKEN,), id="PsToken"),
        pytest.param(Jwt(JWT), (JWT,), id="Jwt"),
        pytest.param(Token.from_jwt(JWT), (JWT,), id="Token"),
        pytest.param(Token.opaque(PS_TOKEN), (PS_TOKEN,), id="Token-opaque"),
        pytest.param(TokenResponse(access_token=JWT, token_type="Bearer"), (JWT,), id="TokenResp"),
        pytest.param(AccessTokenRequest(PS_TOKEN), (PS_TOKEN,), id="AccessTokenRequest"),
    ],
)
def test_repr_and_str_show_no_secret(obj: object, secrets: tuple[str, ...]) -> None:
    """repr, str and format of every secret-holding object show none of its secrets."""
    text = shown(obj)
    for secret in secrets:
        assert secret not in text
    if secrets[0] in (PASSWORD, BASIC_B64):
        assert base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (ApiKey(API_KEY), f"ApiKey(fingerprint='{fingerprint(API_KEY)}')"),
        (PsToken(PS_TOKEN), f"PsToken(fingerprint='{fingerprint(PS_TOKEN)}')"),
        (Jwt(JWT), f"Jwt(fingerprint='{fingerprint(JWT)}')"),
        (
            BasicAuth(USER, PASSWORD),
            f"BasicAuth(username_fp='{fingerprint(USER)}', fingerprint='{fingerprint(PASSWORD)}')",
        ),
    ],
)
def test_repr_names_the_secret_by_fingerprint(obj: object, expected: str) -> None:
    """The repr names a credential by an 8-hex-digit SHA-256 fingerprint, the same for str."""
    assert repr(obj) == expected
    assert str(obj) == expected


def test_fingerprint_is_short_stable_sha256() -> None:
    """fingerprint() is the first 8 hex digits of SHA-256, and differs between secrets."""
    assert fingerprint(API_KEY) == hashlib.sha256(API_KEY.encode()).hexdigest()[:8]
    assert len(fingerprint("x")) == 8
    assert fingerprint(API_KEY) != fingerprint(API_KEY + "!")


def test_logging_a_credential_shows_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    """Credentials passed to a logger (%s, %r, extra) leave no secret in the captured log."""
    log = logging.getLogger("aioica_auth.test")
    for credential in (ApiKey(API_KEY), BasicAuth(USER, PASSWORD), PsToken(PS_TOKEN), Jwt(JWT)):
        log.debug("credential %s / %r", credential, credential)
        log.debug("token %s", Token.from_jwt(JWT))
    assert "credential ApiKey(fingerprint=" in caplog.text
    assert len(caplog.records) == 8
    for secret in SECRETS:
        assert secret not in caplog.text
