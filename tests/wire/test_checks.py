"""`check_text`: the one rule for caller-supplied text options, shared across modules."""

from __future__ import annotations

from typing import Any

import pytest

from aioica_auth._checks import check_text, is_loopback, text_problem


@pytest.mark.parametrize("value", ["acme-lab", "a", "Ünïcødé tenant", "with inner space"])
def test_usable_text_is_returned_unchanged(value: str) -> None:
    """Text without surrounding whitespace or control characters comes back as it is."""
    assert check_text(value, "tenant") is value
    assert text_problem(value) is None


@pytest.mark.parametrize("value", [None, 123, 1.5, b"acme", ["acme"], True])
def test_non_str_is_type_error_naming_argument_and_type(value: Any) -> None:
    """A non-str is a TypeError naming the argument and the type, not the value."""
    with pytest.raises(TypeError, match=rf"^tenant must be a str, not {type(value).__name__}$"):
        check_text(value, "tenant")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param("", "must not be empty or whitespace", id="empty"),
        pytest.param("   ", "must not be empty or whitespace", id="blank"),
        pytest.param("\t\n", "must not be empty or whitespace", id="only-controls"),
        pytest.param(" secret-x", "leading or trailing whitespace", id="leading"),
        pytest.param("secret-x\u00a0", "leading or trailing whitespace", id="trailing-nbsp"),
        pytest.param("sec\tret-x", "control character", id="tab"),
        pytest.param("sec\rret-x", "control character", id="cr"),
        pytest.param("sec\nret-x", "control character", id="lf"),
        pytest.param("sec\0ret-x", "control character", id="nul"),
        pytest.param("sec\x7fret-x", "control character", id="del"),
        pytest.param("sec\x85ret-x", "control character", id="c1-nel"),
        pytest.param("sec\ud800ret-x", "cannot be encoded as UTF-8", id="lone-surrogate"),
    ],
)
def test_bad_text_is_value_error_naming_argument_not_value(value: str, problem: str) -> None:
    """Blank, padded, a control character anywhere, or not encodable: ValueError naming the
    argument and what is wrong, never quoting the value."""
    with pytest.raises(ValueError, match=rf"^client_id .*{problem}") as info:
        check_text(value, "client_id")
    assert "secret" not in str(info.value)
    assert "secret" not in repr(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# -- loopback, judged by name and address only (issue 19, item 6) ----------------------------


@pytest.mark.parametrize(
    "host",
    ["localhost", "LocalHost", "127.0.0.1", "127.255.0.9", "::1", "[::1]", "0:0:0:0:0:0:0:1"],
)
def test_loopback_is_localhost_127_8_and_ipv6_one(host: str) -> None:
    """`localhost` itself, 127.0.0.0/8 and ::1 are loopback."""
    assert is_loopback(host)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("x.localhost", id="subdomain"),  # a resolver decides where it goes
        pytest.param("ica.localhost", id="subdomain-ica"),
        pytest.param("localhost.", id="trailing-dot"),
        pytest.param("localhost.example.org", id="prefix"),
        pytest.param("::ffff:127.0.0.1", id="ipv4-mapped"),
        pytest.param("::1%lo", id="scoped"),
        pytest.param("127.1", id="short-form"),
        pytest.param("128.0.0.1", id="outside-127/8"),
        pytest.param("0.0.0.0", id="any"),
        pytest.param("::", id="ipv6-any"),
        pytest.param("[::1", id="half-bracketed"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
    ],
)
def test_nothing_else_is_loopback(host: str | None) -> None:
    """No other name counts, so no DNS answer decides where a plain-http bearer goes."""
    assert not is_loopback(host)


def test_plain_http_to_a_name_under_localhost_is_refused() -> None:
    """A base URL's plain http is allowed on loopback only, by the rule above."""
    from aioica_auth._wire.urls import check_base_url

    with pytest.raises(ValueError, match="plain http on a non-loopback host"):
        check_base_url("http://x.localhost:8080/ica/rest")
