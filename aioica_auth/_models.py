"""Wire models of both token APIs, and the one cattrs converter that maps their wire names.

Liberal in what we accept: every field is optional, unknown keys are ignored, `null` is as
good as absent. Exact in what we send: only `AccessTokenRequest` is ever sent as a body.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import attrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter

__all__ = [
    "AccessTokenRequest",
    "Domain",
    "ErrorResponse",
    "IcaTokenBody",
    "Problem",
    "TokenDetailResponse",
    "TokenResponse",
    "Workgroup",
    "converter",
]


@attrs.frozen
class TokenResponse:
    """Console v1 answer to create and refresh: a JWT, or a psToken with `returnSessionToken`.

    Attributes:
        access_token: The token (never shown in repr).
        token_type: The type the server names; its values are not documented.
    """

    access_token: str | None = attrs.field(default=None, repr=False)
    token_type: str | None = None


@attrs.frozen
class AccessTokenRequest:
    """Console v1 body of `POST /v1/tokens:refresh` and `DELETE /v1/tokens`."""

    access_token: str = attrs.field(repr=False)


@attrs.frozen
class Workgroup:
    """A console workgroup."""

    id: str | None = None
    name: str | None = None
    description: str | None = None


@attrs.frozen
class Domain:
    """A console domain."""

    id: str | None = None
    name: str | None = None


@attrs.frozen
class TokenDetailResponse:
    """Console v1 `GET /v1/tokens/details`: who the token speaks for."""

    uid: str | None = None
    name: str | None = None
    username: str | None = None
    current_workgroup: Workgroup | None = None
    tid: str | None = None
    acls: tuple[str, ...] = ()
    domain: Domain | None = None


@attrs.frozen
class Problem:
    """ICA v2 error body (RFC 7807 problem details, plus `parameters` and `timestamp`)."""

    type: str | None = None
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None
    id: uuid.UUID | None = None
    parameters: Mapping[str, str] = attrs.field(factory=dict)
    timestamp: dt.datetime | None = None


@attrs.frozen
class ErrorResponse:
    """Console v1 error body."""

    code: str | None = None
    message: str | None = None
    details: tuple[Any, ...] = ()


@attrs.frozen
class IcaTokenBody:
    """ICA v2 answer to create and refresh: `{"token": ...}`; some versions say `access_token`."""

    token: str | None = attrs.field(default=None, repr=False)
    access_token: str | None = attrs.field(default=None, repr=False)


def _make_converter() -> Any:
    conv = make_converter(forbid_extra_keys=False)

    # Lenient on what is only informative: a malformed id or timestamp must not cost the
    # caller the title and detail of an error.
    conv.register_structure_hook(uuid.UUID, lambda v, _: _lenient(uuid.UUID, str(v)))
    conv.register_structure_hook(dt.datetime, lambda v, _: _lenient(_parse_datetime, v))

    renames: dict[type, dict[str, Any]] = {
        TokenDetailResponse: {"current_workgroup": override(rename="currentWorkgroup")}
    }

    def objects_only(cls: type) -> Any:
        # A model is only ever built from a JSON object: "wg" or [1] is not a Workgroup.
        build: Any = make_dict_structure_fn(cls, conv, **renames.get(cls, {}))

        def structure(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                msg = f"expected an object for {cls.__name__}, got {type(value).__name__}"
                raise TypeError(msg)
            return build(value, cls)

        return structure

    def strings(value: Any, _: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            msg = f"expected a list of strings, got {type(value).__name__}"
            raise TypeError(msg)
        return tuple(str(item) for item in value if item is not None)

    conv.register_structure_hook_factory(attrs.has, objects_only)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], strings)
    conv.register_unstructure_hook(
        TokenDetailResponse,
        make_dict_unstructure_fn(TokenDetailResponse, conv, **renames[TokenDetailResponse]),
    )
    return conv


def _lenient(parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _parse_datetime(value: Any) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


converter = _make_converter()
"""The one converter for every wire model (never cattrs' global one)."""
