"""`SourceSpec`: a manager's token source as a value, checked at once, built in the loop."""

from __future__ import annotations

import aiohttp
import pytest
import yarl

from aioica_auth import ApiKey, BasicAuth, Jwt, Policy, PsToken
from aioica_auth._lifecycle.sources import (
    ConsoleMintSource,
    ConsoleSessionSource,
    IcaJwtSource,
    IcaMintSource,
    IcaRefreshSource,
    SourceSpec,
)
from aioica_auth._wire.console import MintOptions
from aioica_auth.testing import make_jwt

URL = yarl.URL("https://ica.example.org/ica/rest")
SECRET = "an-api-key-that-must-never-show-0123"


def test_a_spec_prints_without_its_secret_and_compares_by_value() -> None:
    """Two specs of one credential are equal, and neither repr shows the secret."""
    one = SourceSpec.ica(ApiKey(SECRET), URL, "tenant-a")
    assert one == SourceSpec.ica(ApiKey(SECRET), URL, "tenant-a")
    assert one != SourceSpec.ica(ApiKey(SECRET), URL, "tenant-b")
    assert SECRET not in repr(one)
    assert "tenant-a" in repr(one)
    jwt = make_jwt()
    given = SourceSpec.ica(Jwt(jwt), URL, None)
    assert jwt not in repr(given)
    assert given.given is not None  # decoded at once


def test_a_spec_checks_its_credential_and_options_at_once() -> None:
    """A credential the platform does not take, a blank tenant, a JWT that does not decode:
    refused when the spec is made, not at the first request."""
    with pytest.raises(TypeError, match="credential must be one of"):
        SourceSpec.console(Jwt(make_jwt()), URL, MintOptions())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tenant"):
        SourceSpec.ica(ApiKey(SECRET), URL, " ")
    with pytest.raises(ValueError, match="not a decodable JWT"):
        SourceSpec.ica(Jwt("not.a.jwt"), URL, None)


def test_the_store_options_tell_a_specs_tokens_apart() -> None:
    """The store key's options: the tenant for ICA, the mint query for the console."""
    assert SourceSpec.ica(ApiKey(SECRET), URL, None).store_options == ["tenant="]
    options = MintOptions(client_id="cli", scopes=["a", "b"])
    spec = SourceSpec.console(ApiKey(SECRET), URL, options)
    assert spec.store_options == ["clientId=cli", "scopes=a,b"]


async def test_a_spec_builds_the_source_of_its_credential() -> None:
    """`spec(session, policy)` makes the source the credential's rules call for."""
    policy = Policy()
    kinds = [
        (SourceSpec.ica(ApiKey(SECRET), URL, None), IcaMintSource),
        (SourceSpec.ica(BasicAuth("user", "password"), URL, None), IcaRefreshSource),
        (SourceSpec.ica(PsToken("ps-token-value"), URL, None), IcaRefreshSource),
        (SourceSpec.ica(Jwt(make_jwt()), URL, None), IcaJwtSource),
        (SourceSpec.console(ApiKey(SECRET), URL, MintOptions()), ConsoleMintSource),
        (SourceSpec.console(PsToken("ps-token-value"), URL, MintOptions()), ConsoleSessionSource),
    ]
    async with aiohttp.ClientSession() as session:
        for spec, kind in kinds:
            source = spec(session, policy)
            assert type(source) is kind
            assert source.keeps_session is (kind is ConsoleSessionSource)


def test_keeps_session_is_a_property_of_the_kind_of_source() -> None:
    """Only a console psToken session is kept alive; it is read off the class."""
    assert ConsoleSessionSource.keeps_session is True
    for kind in (IcaMintSource, IcaRefreshSource, IcaJwtSource, ConsoleMintSource):
        assert kind.keeps_session is False
