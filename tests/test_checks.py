"""`check_text`: the one rule for caller-supplied text options, shared across modules."""

from __future__ import annotations

from typing import Any

import pytest

from aioica_auth._checks import check_text, text_problem


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
