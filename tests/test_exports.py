"""The public surface, pinned as httpx pins its own (`tests/test_exported_members.py`)."""

from __future__ import annotations

import types

import pytest

import aioica_auth
from aioica_auth import TokenManager
from aioica_auth._version import __version__ as version_in_one_place

# TokenManager's documented members (docs/lifecycle.md, docs/clients.md, the API reference,
# DESIGN sections 3 and 6); `async with` is `__aenter__` / `__aexit__`.
MANAGER_MEMBERS = {
    "headers",
    "token",
    "middleware",
    "httpx_auth",
    "stats",
    "policy",
    "closed",
    "invalidate",
    "aclose",
    "for_ica",
    "for_console",
    "from_environment",
}


def test_exported_members() -> None:
    """`__all__` is exactly the public names of the package, in ruff's order (constants,
    classes, then dunders), each defined in a private module; and TokenManager's public
    members are exactly the documented ones."""
    public = [
        name
        for name, value in vars(aioica_auth).items()
        if not isinstance(value, types.ModuleType)
        and (not name.startswith("_") or name == "__version__")
    ]
    assert aioica_auth.__all__ == sorted(public, key=lambda n: (not n.isupper(), n))
    namespace: dict[str, object] = {}
    exec("from aioica_auth import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(aioica_auth.__all__)
    for name in aioica_auth.__all__:
        obj = getattr(aioica_auth, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith("aioica_auth._"), name
    assert {name for name in dir(TokenManager) if not name.startswith("_")} == MANAGER_MEMBERS


def test_token_manager_is_built_by_its_constructors_only() -> None:
    """`TokenManager(...)` takes no private type: it points to `for_ica`, `for_console` and
    `from_environment`, which take the credential and check it."""
    with pytest.raises(TypeError, match=r"TokenManager\.for_ica"):
        TokenManager()


def test_documented_constants() -> None:
    """The base URL constants and version have their documented values."""
    assert aioica_auth.ICA_BASE_URL == "https://ica.illumina.com/ica/rest"
    assert aioica_auth.CONSOLE_BASE_URL == "https://aps2.platform.illumina.com"
    assert aioica_auth.__version__ == version_in_one_place
    assert isinstance(aioica_auth.__version__, str)
    assert aioica_auth.__version__
