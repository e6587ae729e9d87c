"""Asyncio token lifecycle for Illumina ICA v2 and the Illumina platform console v1.

Mint, refresh and share bearer tokens across thousands of tasks with one request per refresh,
and never put a secret in a log. Start with `TokenManager.from_environment()` (the
credentials of the icav2 CLI and `ICAV2_*` variables) or `TokenManager.for_ica(ApiKey(...))`.
"""

from ._credentials import ApiKey, BasicAuth, Jwt, PsToken
from ._discovery.api import DiscoveredCredentials, discover_credentials
from ._errors import (
    ApiError,
    BadRequestError,
    ForbiddenError,
    IcaError,
    InvalidResponseError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TokenStoreError,
    TokenUnavailableError,
    TransportError,
    TransportTimeoutError,
    UnauthorizedError,
)
from ._fleet.file_store import FileTokenStore
from ._fleet.redis_store import RedisTokenStore
from ._fleet.store import TokenStore
from ._lifecycle.policy import Policy
from ._manager import ManagerStats, TokenManager
from ._models import Domain, ErrorResponse, Problem, TokenDetailResponse, TokenResponse, Workgroup
from ._sync import SyncTokenManager
from ._token import Token
from ._version import __version__
from ._wire.console import CONSOLE_BASE_URL, ConsoleTokenApi
from ._wire.ica import ICA_BASE_URL, IcaTokenApi

__all__ = [
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
