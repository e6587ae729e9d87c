"""JWTs shaped like ICA's, for tests: `make_jwt` and the helpers the local server shares.

The tokens are signed with HS256 and a shared secret. Real ICA tokens are RS256-signed by
Illumina, and a client cannot verify either signature (it has no key): clients only read the
claims. The signature here matters only to the local server, which checks that a bearer token
is one it issued itself.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

__all__ = [
    "AUDIENCE",
    "DEFAULT_KEY",
    "ISSUER",
    "decode_verified",
    "make_jwt",
    "numeric_date",
    "tenant_tid",
]

#: The module's default HS256 secret. Public on purpose: these tokens guard nothing.
DEFAULT_KEY = "aioica-auth-testing-not-a-secret-hs256-key-0123456789"
#: `iss` of every token made here.
ISSUER = "https://ica.local/"
#: `aud` of every token made here (what ICA clients check against).
AUDIENCE = "ica"
_ALGORITHM = "HS256"
_MIN_KEY_BYTES = 32  # PyJWT warns below the SHA-256 digest size (RFC 7518 section 3.2)


def numeric_date(value: float) -> int | float:
    """An RFC 7519 NumericDate: an int for whole seconds, else a float rounded to milliseconds.

    Args:
        value: Seconds since the epoch.

    Returns:
        `int` when the value rounds to a whole second, otherwise the value rounded to 3 places.
    """
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded


def tenant_tid(tenant_id: str) -> str:
    """The `tid` claim for a tenant UUID: base64 of ``"ica:<tenant uuid>"``.

    ICA clients decode `tid` and take the last ``:``-separated segment as the tenant UUID
    (see ICA-API.md section 3).

    Args:
        tenant_id: The tenant UUID, as a string.

    Returns:
        The standard (padded) base64 text.
    """
    return base64.b64encode(f"ica:{tenant_id}".encode()).decode("ascii")


def _check_key(key: str) -> None:
    if len(key.encode()) < _MIN_KEY_BYTES:
        msg = f"the HS256 key must be at least {_MIN_KEY_BYTES} bytes long"
        raise ValueError(msg)


def make_jwt(
    *,
    lifetime: float = 3600.0,
    issued_at: float | None = None,
    not_before: float | None = None,
    expires_at: float | None = None,
    claims: Mapping[str, Any] | None = None,
    key: str = DEFAULT_KEY,
    include_exp: bool = True,
) -> str:
    """Make an HS256-signed JWT with the claims an ICA token carries.

    The signature cannot be verified by a client (nor can a real ICA one): clients read the
    claims without verifying. A `LocalIcaServer` signs with its own random key, so it rejects
    tokens made here as "not issued by this server", which is what a forged or foreign token
    should get.

    Default claims: ``iss`` (``"https://ica.local/"``), ``aud`` (``"ica"``), ``sub`` (a random
    UUID), ``tid`` (base64 of ``"ica:<random tenant UUID>"``), ``tns`` (``"test-tenant"``),
    ``jti`` (a random UUID), ``iat``, ``nbf`` and ``exp``. Times are RFC 7519 NumericDates:
    integers when they are whole seconds, else floats rounded to milliseconds (so sub-second
    test lifetimes work).

    Args:
        lifetime: Seconds from `iat` to `exp` (used when `expires_at` is not given).
        issued_at: `iat` in seconds since the epoch; defaults to `time.time()`.
        not_before: `nbf`; defaults to `iat`.
        expires_at: `exp`; defaults to `iat + lifetime`.
        claims: Extra claims, merged over the defaults. A value of None removes that claim.
        key: The HS256 secret (at least 32 bytes).
        include_exp: False to leave out `exp` altogether.

    Returns:
        The compact JWT.

    Raises:
        ValueError: If `key` is shorter than 32 bytes.
    """
    _check_key(key)
    iat = time.time() if issued_at is None else issued_at
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid.uuid4()),
        "tid": tenant_tid(str(uuid.uuid4())),
        "tns": "test-tenant",
        "jti": str(uuid.uuid4()),
        "iat": numeric_date(iat),
        "nbf": numeric_date(iat if not_before is None else not_before),
    }
    if include_exp:
        payload["exp"] = numeric_date(iat + lifetime if expires_at is None else expires_at)
    for name, value in (claims or {}).items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return jwt.encode(payload, key, algorithm=_ALGORITHM, headers={"typ": "JWT"})


def decode_verified(token: str, key: str) -> dict[str, Any] | None:
    """The claims of `token` if its HS256 signature checks out with `key`, else None.

    Times are not judged here (the caller applies its own clock): only the signature and the
    shape of the token.

    Args:
        token: The compact JWT.
        key: The HS256 secret.

    Returns:
        The claims, or None for a malformed token or a bad signature.
    """
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[_ALGORITHM],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
            },
        )
    except jwt.PyJWTError:
        return None
    return claims
