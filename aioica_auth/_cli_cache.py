"""The CLI's token cache: `token` and `whoami` share one token through a `FileTokenStore`.

A loop of `curl -H "$(aioica-auth token --header)" ...` then mints once: each run's manager
adopts the token the first run published, while it is before its refresh point (refresh
window: min(20 min, half its lifetime)) and lasts `--min-validity`. The cache lives in
`$XDG_CACHE_HOME/aioica_auth` (`~/.cache/aioica_auth`) as `0600` files in a `0700` directory;
they hold bearer tokens. `--no-cache` neither reads nor writes it.

A cache that cannot be used (a directory another user owns or others can write, a file that
cannot be read) is named in one warning line on stderr and left out: the command mints as it
would without it, with the same exit code. The warning names the path and the reason only,
never an entry, a token or a credential. There is no cache for what the store cannot share: a
JWT given as it is (`ICAV2_ACCESS_TOKEN`) and a console psToken session.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from ._cli_parser import PROG
from ._credentials import Jwt, PsToken
from ._discovery import DiscoveredCredentials
from ._file_store import FileTokenStore, default_directory
from ._store import TokenStoreError

__all__ = ["CliCache", "cacheable", "open_cache"]

_T = TypeVar("_T")


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr)


def _why(exc: Exception) -> str:
    """What went wrong, in words that cannot carry an entry or a secret."""
    if isinstance(exc, TokenStoreError):
        return str(exc)  # the store's own messages name paths and modes only
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or 'failed'}"
    return type(exc).__name__


class CliCache:
    """A `FileTokenStore` that says once, on stderr, when it fails: the manager then mints
    on its own (and logs it at WARNING, which the CLI does not show without --debug)."""

    def __init__(self, store: FileTokenStore) -> None:
        self.store = store
        self.failed = False

    def __repr__(self) -> str:
        return repr(self.store)

    async def _said(self, call: Awaitable[_T]) -> _T:
        """`call`'s result; its failure said once on stderr, then raised for the manager."""
        try:
            return await call
        except Exception as exc:
            if not self.failed:
                self.failed = True
                where = self.store.directory
                msg = f"token cache {where} not used: {_why(exc)}; see --help, or pass --no-cache"
                _warn(msg)
            raise

    async def read(self, key: str) -> bytes | None:
        return await self._said(self.store.read(key))

    async def acquire(self, key: str, ttl: float) -> object | None:
        return await self._said(self.store.acquire(key, ttl))

    async def release(self, key: str, handle: object) -> None:
        await self.store.release(key, handle)

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        return await self._said(self.store.publish(key, entry, expires_at=expires_at))

    async def wait(self, key: str, within: float) -> None:
        await self.store.wait(key, within)

    async def aclose(self) -> None:
        await self.store.aclose()


def cacheable(found: DiscoveredCredentials) -> bool:
    """Whether the store can share the tokens of `found`'s credential."""
    credential = found.credential
    if isinstance(credential, Jwt):
        return False  # used as given (and refreshed): there is nothing to mint and share
    # A console psToken session is kept alive by one manager: the store refuses to share it.
    return not (found.console and isinstance(credential, PsToken))


def open_cache(
    found: DiscoveredCredentials, args: argparse.Namespace, env: Mapping[str, str]
) -> CliCache | None:
    """The cache for a command's manager; None with --no-cache, for a credential the store
    cannot share, or when the cache directory is refused (said in one warning line)."""
    if getattr(args, "no_cache", True) or not cacheable(found):
        return None
    directory = default_directory(env)  # from the command's environment
    try:
        store = FileTokenStore(directory)
    except (TokenStoreError, RuntimeError) as exc:  # RuntimeError: no POSIX locks (Windows)
        _warn(f"token cache not used: {exc}; see --help, or pass --no-cache")
        return None
    return CliCache(store)
