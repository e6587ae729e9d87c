"""What the CLI says about a token, offline: `decode`, the identity `whoami` shows, durations.

Nothing here makes a request or imports aiohttp's server side; `decode` runs in a few ms.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import math
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from .._errors import InvalidResponseError
from .._token import Token
from .base import PROG, Failure, UsageError

__all__ = [
    "decode_command",
    "describe_validity",
    "human_duration",
    "identity",
    "iso",
    "read_jwt",
    "relative",
]

# The time claims: shown once each, as a time line, not again among the other claims.
_TIMES = (("iat", "issued at"), ("nbf", "not before"), ("exp", "expires at"))


def human_duration(seconds: float) -> str:
    """A duration for people: `0.4 s`, `10 s`, `5 min 3 s`, `23 h 59 min`, `2 d 3 h`.

    Two units at most, truncated (never rounded up); the sign is ignored.
    """
    seconds = abs(seconds)
    if seconds < 1:
        return f"{math.floor(seconds * 10) / 10:.1f} s"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    for big, big_unit, small, small_unit in (
        (days, "d", hours, "h"),
        (hours, "h", minutes, "min"),
        (minutes, "min", secs, "s"),
    ):
        if big:
            return f"{big} {big_unit}" + (f" {small} {small_unit}" if small else "")
    return f"{secs} s"


def relative(when: dt.datetime, now: dt.datetime) -> str:
    """`in 5 min` or `5 min ago`."""
    delta = (when - now).total_seconds()
    return f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(delta)} ago"


def describe_validity(token: Token, now: dt.datetime) -> str:
    """`expires in 23 h 59 min`, `expired 5 min ago`, `not valid for another 10 s; ...`."""
    parts = []
    if token.not_before is not None and token.not_before > now:
        wait = (token.not_before - now).total_seconds()
        parts.append(f"not valid for another {human_duration(wait)}")
    if token.expires_at is None:
        parts.append("never expires (no exp claim)")
    else:
        left = (token.expires_at - now).total_seconds()
        if left > 0:
            parts.append(f"expires in {human_duration(left)}")
        else:
            parts.append(f"expired {human_duration(left)} ago")
    return "; ".join(parts)


def iso(value: dt.datetime | None) -> str | None:
    """An aware datetime as `2026-01-01T12:00:00Z`; None stays None."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def read_jwt(arg: str, stdin: TextIO) -> str:
    """The JWT of `arg` (`-`: read stdin), without a `Bearer` or `Authorization:` prefix.

    Raises:
        UsageError: nothing to decode.
    """
    if arg == "-":
        if stdin.isatty():
            print("reading a JWT from stdin (paste it, then Ctrl-D)", file=sys.stderr)
        text = stdin.read()
    else:
        text = arg
    text = text.strip()
    if text.lower().startswith("authorization:"):
        text = text.split(":", 1)[1].strip()
    if text.lower().startswith("bearer "):
        text = text[7:].strip()
    if not text:
        raise UsageError("nothing to decode: give a JWT on stdin or as the argument")
    return text


def _decode(text: str) -> Token:
    try:
        return Token.from_jwt(text)
    except InvalidResponseError as exc:
        raise Failure(f"not a JWT: {exc.reason}") from None
    except (OverflowError, ValueError) as exc:  # a time claim too large for a float
        raise Failure(f"not a usable JWT ({type(exc).__name__})") from None


def _shortfall(token: Token, now: dt.datetime, min_validity: float) -> str | None:
    """Why `token` is not valid now for `min_validity` seconds, or None when it is."""
    if token.not_before is not None and token.not_before > now:
        return f"the token is not valid yet (not before {iso(token.not_before)})"
    if token.expires_at is None:
        return None
    left = (token.expires_at - now).total_seconds()
    if left <= 0:
        return f"the token expired {human_duration(left)} ago"
    if left < min_validity:
        return (
            f"the token expires in {human_duration(left)}, "
            f"less than --min-validity {min_validity:g} s"
        )
    return None


def _as_json(token: Token, now: dt.datetime, problem: str | None) -> str:
    left = None if token.expires_at is None else (token.expires_at - now).total_seconds()
    data = {
        "claims": dict(token.claims),
        "issued_at": iso(token.issued_at),
        "not_before": iso(token.not_before),
        "expires_at": iso(token.expires_at),
        "expires_in": None if left is None else int(left),
        "fingerprint": token.fingerprint,
        "valid": problem is None,
        "status": describe_validity(token, now),
    }
    return json.dumps(data, indent=2, default=str)


def _as_text(token: Token, now: dt.datetime, problem: str | None) -> str:
    """The claims (the time claims aside), each time once, the fingerprint and a verdict."""
    others = {k: v for k, v in token.claims.items() if k not in {c for c, _ in _TIMES}}
    lines = [json.dumps(others, indent=2, default=str)]
    for (claim, label), when in zip(
        _TIMES, (token.issued_at, token.not_before, token.expires_at), strict=True
    ):
        if when is not None:
            raw = token.claims.get(claim)
            lines.append(f"{label:<11} {iso(when)}  ({relative(when, now)}; {claim} {raw})")
    lines.append(f"{'fingerprint':<11} {token.fingerprint}")
    if problem is not None:
        verdict = "NOT VALID NOW" if token.not_before and token.not_before > now else "EXPIRED"
        if "min-validity" in problem:
            verdict = "valid, but not for --min-validity"
    elif token.expires_at is None:
        verdict = "valid (no exp claim: it never expires by time)"
    else:
        verdict = "valid"
    lines.append(f"{'status':<11} {verdict}")
    return "\n".join(lines)


def decode_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`aioica-auth decode`: 0 when the token is valid now (for --min-validity), else 1."""
    token = _decode(read_jwt(args.jwt, sys.stdin))
    now = dt.datetime.now(dt.UTC)
    problem = _shortfall(token, now, args.min_validity)
    if not args.quiet:
        print(_as_json(token, now, problem) if args.json else _as_text(token, now, problem))
        if problem is not None:
            print(f"{PROG}: {problem}", file=sys.stderr)
    return 0 if problem is None else 1


# -- whoami ----------------------------------------------------------------------------------


def _tenant_id(tid: object) -> str | None:
    """The tenant UUID of a `tid` claim: base64 of `ica:<uuid>`, the last `:` segment."""
    if not isinstance(tid, str) or not tid:
        return None
    try:
        text = base64.b64decode(tid + "=" * (-len(tid) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return tid  # not base64: show it as it is
    return text.rsplit(":", 1)[-1] or None


def _email(claims: Mapping[str, Any]) -> str | None:
    for name in ("email", "preferred_username", "upn", "username", "unique_name"):
        value = claims.get(name)
        if isinstance(value, str) and "@" in value:
            return value
    return None


def identity(token: Token, now: dt.datetime) -> dict[str, Any]:
    """Who `token` speaks for, from its claims: tenant, user, e-mail, expiry (None: absent)."""
    claims = token.claims
    left = None if token.expires_at is None else (token.expires_at - now).total_seconds()
    user = claims.get("sub") or claims.get("uid")
    return {
        "tenant": claims.get("tns") or claims.get("tenant"),
        "tenant_id": _tenant_id(claims.get("tid")),
        "user": None if user is None else str(user),
        "name": claims.get("name") if isinstance(claims.get("name"), str) else None,
        "email": _email(claims),
        "expires_at": iso(token.expires_at),
        "expires_in": None if left is None else max(0, int(left)),
        "fingerprint": token.fingerprint,
    }


def format_identity(who: Mapping[str, Any], token: Token, now: dt.datetime, source: str) -> str:
    """`whoami`'s lines: tenant, user, e-mail, expiry, and where the credential came from."""
    missing = "(not in the token)"
    tenant = who["tenant"] or missing
    if who["tenant_id"]:
        tenant += f" (id {who['tenant_id']})"
    user = who["user"] or missing
    if who["name"]:
        user += f" ({who['name']})"
    expires = "never (no exp claim)"
    if token.expires_at is not None:
        expires = f"{iso(token.expires_at)} ({relative(token.expires_at, now)})"
    rows = [
        ("tenant", tenant),
        ("user", user),
        ("e-mail", who["email"] or missing),
        ("expires", expires),
        ("token", token.fingerprint),
        ("from", source),
    ]
    return "\n".join(f"{label:<8} {value}" for label, value in rows)
