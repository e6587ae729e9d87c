"""The public surface: `aioica_auth.__all__` is pinned, sorted, and all of it importable."""

from __future__ import annotations

import importlib

import aioica_auth
from aioica_auth._version import __version__ as version_in_one_place

EXPORTED = [
    "CONSOLE_BASE_URL",
    "ICA_BASE_URL",
    "ApiError",
    "ApiKey",
    "BadRequestError",
    "BasicAuth",
    "ConsoleTokenApi",
    "DiscoveredCredentials",
    "Domain",
    "ErrorResponse",
    "FileTokenStore",
    "ForbiddenError",
    "IcaError",
    "IcaTokenApi",
    "InvalidResponseError",
    "Jwt",
    "ManagerStats",
    "NotFoundError",
    "Policy",
    "Problem",
    "PsToken",
    "RateLimitError",
    "RedisTokenStore",
    "ServerError",
    "SyncTokenManager",
    "Token",
    "TokenDetailResponse",
    "TokenManager",
    "TokenResponse",
    "TokenStore",
    "TokenStoreError",
    "TokenUnavailableError",
    "TransportError",
    "TransportTimeoutError",
    "UnauthorizedError",
    "Workgroup",
    "__version__",
    "discover_credentials",
]


def test_all_is_pinned() -> None:
    """`__all__` holds exactly the documented names; a new export means updating this list."""
    assert sorted(aioica_auth.__all__) == sorted(EXPORTED)
    assert len(set(aioica_auth.__all__)) == len(aioica_auth.__all__)


def test_pinned_list_is_in_ruff_order() -> None:
    """The pinned list itself is in ruff's RUF022 order: constants, classes, then dunders."""
    assert sorted(EXPORTED, key=lambda n: (not n.isupper(), n)) == EXPORTED


def test_all_is_sorted() -> None:
    """`__all__` is sorted, in the pinned order."""
    assert aioica_auth.__all__ == EXPORTED


def test_every_exported_name_is_importable() -> None:
    """Every name in `__all__` exists on the package and `from aioica_auth import *` gives them."""
    module = importlib.import_module("aioica_auth")
    for name in aioica_auth.__all__:
        assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec("from aioica_auth import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(aioica_auth.__all__)


def test_exported_classes_are_defined_in_private_modules() -> None:
    """Exported classes live in the package's private modules, re-exported at the top."""
    for name in aioica_auth.__all__:
        obj = getattr(aioica_auth, name)
        if isinstance(obj, type):
            assert obj.__module__.startswith("aioica_auth._"), name


def test_documented_constants() -> None:
    """The base URL constants and version have their documented values."""
    assert aioica_auth.ICA_BASE_URL == "https://ica.illumina.com/ica/rest"
    assert aioica_auth.CONSOLE_BASE_URL == "https://aps2.platform.illumina.com"
    assert aioica_auth.__version__ == version_in_one_place
    assert isinstance(aioica_auth.__version__, str)
    assert aioica_auth.__version__
