"""The CLI's token cache: `token` and `whoami` share one token through a `FileTokenStore`.

A loop of `curl -H "$(aioica-auth token --header)" ...` then mints once: each run's manager
adopts the token the first run published, while it is before its refresh point (refresh
window: min(20 min, half its lifetime)) and lasts `--min-validity`. The cache lives in
`$XDG_CACHE_HOME/aioica_auth` (`~/.cache/aioica_auth`) as `0600` files in a `0700` directory;
they hold bearer tokens. `--no-cache` neither reads nor writes it.

`token --force-refresh` renews now, under the store's renewal lease: a run that takes it
mints (with a manager of its own, no store) and replaces the entry it read; a run that finds
an entry published after it started (another force-refresh, or a renewal) prints that one.
So 64 force-refreshes at once make one mint. `token --invalidate` drops the cached token by
compare-and-delete (`FileTokenStore.discard`): only while the entry still holds what this run
read, so a token another run just published is never lost.

A cache that cannot be used (a directory another user owns or others can write, a file that
cannot be read) is named in one warning line on stderr and left out: the command mints as it
would without it, with the same exit code. The warning names the path and the reason only,
never an entry, a token or a credential. There is no cache for what the store cannot share: a
JWT given as it is (`ICAV2_ACCESS_TOKEN`) and a console psToken session.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from .._credentials import Jwt, PsToken
from .._discovery.api import DiscoveredCredentials
from .._errors import TokenStoreError
from .._fleet.file_store import FileTokenStore, default_directory
from .._fleet.store import BadEntryError, decode_entry, encode_entry, store_key
from .._token import Token, epoch
from .._wire.console import MintOptions
from .._wire.urls import check_base_url
from .base import warn

__all__ = [
    "CliCache",
    "cache_key",
    "cacheable",
    "force_refresh",
    "invalidate",
    "open_cache",
    "process_started",
]

_T = TypeVar("_T")
_IMPORTED = time.time()  # the start of this process, when /proc cannot say it
_LEASE_POLL = 0.5  # seconds: the longest a force-refresh waits on the store between looks


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
                warn(msg)
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

    async def discard(self, key: str, entry: bytes) -> bool:
        return await self._said(self.store.discard(key, entry))

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
        warn(f"token cache not used: {exc}; see --help, or pass --no-cache")
        return None
    return CliCache(store)


def cache_key(found: DiscoveredCredentials, tenant: str | None) -> str:
    """The store key the command's manager shares its tokens under: what `for_ica` and
    `for_console` compute from the same credential, API root and options."""
    url = str(check_base_url(found.base_url))
    if found.console:
        options = MintOptions(domain=tenant).params(return_session_token=False)
        return store_key("console", url, found.credential, [f"{k}={v}" for k, v in options])
    return store_key("ica", url, found.credential, [f"tenant={tenant or ''}"])


def process_started() -> float:
    """The wall time this process started (Linux: from /proc, so before the interpreter
    loaded anything), else when this module was imported."""
    try:
        with open("/proc/self/stat", "rb") as file:
            stat = file.read()
        # Fields after the command name (which may hold spaces): starttime is the 20th.
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED
    if age < 0:
        return _IMPORTED
    return min(time.time() - age, _IMPORTED)


def _published_since(raw: bytes | None, key: str, since: float) -> Token | None:
    """The token of entry `raw` if it was published at or after `since` (wall time) and is
    not expired; else None."""
    if raw is None:
        return None
    try:
        entry = decode_entry(raw, key)
    except BadEntryError:
        return None
    expires = epoch(entry.token.expires_at)
    if entry.published < since or (expires is not None and expires <= time.time()):
        return None
    return entry.token


async def force_refresh(
    cache: CliCache,
    key: str,
    mint: Callable[[], Awaitable[Token]],
    *,
    since: float,
    lease_ttl: float,
    waiting: Callable[[str], None],
) -> Token:
    """A token minted now, or published by another run at or after `since` (this run's start):
    under the store's renewal lease, so that runs at once mint once; the entry this run read
    replaced by it.

    `mint` gets a token without the store. While another holds the lease, `waiting` is told.

    Raises:
        TokenStoreError, OSError: the store failed (said once on stderr by `CliCache`).
        IcaError: the mint failed.
    """
    while True:
        theirs = _published_since(await cache.read(key), key, since)
        if theirs is not None:
            return theirs
        handle = await cache.acquire(key, lease_ttl)
        if handle is not None:
            break
        waiting("waiting for another aioica-auth run's renewal (token cache lease)")
        await cache.wait(key, _LEASE_POLL)
    try:
        raw = await cache.read(key)  # published between that read and the lease?
        theirs = _published_since(raw, key, since)
        if theirs is not None:
            return theirs
        sent = time.time()
        token = await mint()
        iat = epoch(token.issued_at)
        skew = None if iat is None else iat - sent
        if token.expires_at is not None:
            # Said once on stderr by CliCache: the token minted is printed all the same.
            with contextlib.suppress(TokenStoreError, OSError):
                if raw is not None:
                    await cache.discard(key, raw)  # the stale one: a publish fences by expiry
                entry = encode_entry(key, token, skew, time.time())
                await cache.publish(key, entry, expires_at=token.expires_at.timestamp())
        return token
    finally:
        await cache.release(key, handle)


async def invalidate(cache: CliCache, key: str) -> bool | None:
    """Drop the cached token of `key` if the entry still holds what this call read: True
    when dropped, False when another run replaced it meanwhile, None when there was none.

    Raises:
        TokenStoreError, OSError: the store failed (said once on stderr by `CliCache`).
    """
    raw = await cache.read(key)
    if raw is None:
        return None
    return await cache.discard(key, raw)
