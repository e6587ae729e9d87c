"""`FileTokenStore`: the processes of one host share a token through files.

Layout, in one directory (`0700`, created if missing), per key:

    <key>.token    the entry: a header line `aioica_auth-store 1 <exp>` and the entry bytes,
                   written to a temporary file, fsynced and moved into place with
                   `os.replace`, so a reader sees the old entry or the new one, never half
    <key>.lock     the renewal lease: an exclusive `flock`, never waited for; the OS drops it
                   when its holder dies, so a `kill -9` mid-mint frees the lease at once
    <key>.publish  a short `flock` (waited for, with a timeout) around compare-and-replace,
                   so a publish never replaces an entry that expires later

Every file is `0600`. A directory or file that another user owns, or that others can write,
is refused with `TokenStoreError` (as ssh does), because whoever can write the entry decides
which bearer token the fleet sends. Reads and writes run in a worker thread, so a slow disk
never blocks the event loop; taking the lease is one non-blocking call, done inline so that
a cancelled task cannot leave a lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from ._store import MAX_ENTRY, TokenStoreError

if sys.platform != "win32":
    import fcntl

__all__ = ["FileTokenStore", "default_directory"]

_HEADER = b"aioica_auth-store 1 "
_POLL = (0.02, 0.08)  # seconds: a waiter's poll interval, drawn at random from this range
_PUBLISH_LOCK_TIMEOUT = 2.0  # seconds: the longest a publish waits for another publish
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/aioica_auth`, or `~/.cache/aioica_auth` (XDG's default), read from
    `environ` (`os.environ` by default; a relative path in either variable is ignored)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):
        return Path(base) / "aioica_auth"
    home = env.get("HOME", "")
    return (Path(home) if os.path.isabs(home) else Path.home()) / ".cache" / "aioica_auth"


class _Lease:
    """A held renewal lease: the open lock file (closing it drops the `flock`)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class FileTokenStore:
    """A `TokenStore` in a directory: many processes on one host share one token.

    Args:
        directory: Where the entries live; by default `$XDG_CACHE_HOME/aioica_auth`
            (`~/.cache/aioica_auth`). Created `0700` if missing.

    The files hold bearer tokens: keep the directory on a local disk of the host, private
    to the user the fleet runs as.

    Raises:
        TokenStoreError: the directory cannot be created, is not a directory, or is owned
            by another user or writable by others.
        ValueError: an empty `directory` ("" is not taken for the current directory).
        RuntimeError: no POSIX file locks (Windows).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if sys.platform == "win32":  # pragma: no cover - CI is Linux
            msg = "FileTokenStore needs POSIX file locks (fcntl), which Windows lacks"
            raise RuntimeError(msg)
        if directory is not None and not os.fspath(directory):
            # Path("") is the current directory: almost never what an empty setting meant.
            msg = "FileTokenStore(directory) is empty: pass a directory, or None for the default"
            raise ValueError(msg)
        path = Path(directory) if directory is not None else default_directory()
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            _check(path.stat(follow_symlinks=True), f"directory {path}", directory=True)
        except OSError as exc:
            msg = f"cannot use {path} as a token store: {exc.strerror or type(exc).__name__}"
            raise TokenStoreError(msg) from None
        self.directory = path
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.directory)!r})"

    # -- TokenStore -------------------------------------------------------------------------

    async def read(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._read, self._path(key, ".token"))

    async def acquire(self, key: str, ttl: float) -> object | None:
        # `ttl` is not needed: the OS frees the lock when its holder dies, and a live holder
        # releases it when its (bounded) renewal ends.
        fd = self._open(self._path(key, ".lock"))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return _Lease(fd)

    async def release(self, key: str, handle: object) -> None:
        if not isinstance(handle, _Lease) or handle.fd < 0:
            return
        fd, handle.fd = handle.fd, -1
        os.close(fd)  # drops the flock

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        return await asyncio.to_thread(self._publish, key, entry, expires_at)

    async def wait(self, key: str, within: float) -> None:
        await asyncio.sleep(max(0.0, min(within, self._rng.uniform(*_POLL))))

    async def aclose(self) -> None:
        return None

    # -- files ------------------------------------------------------------------------------

    def _path(self, key: str, suffix: str) -> Path:
        if not key.isalnum() or not key.isascii():
            msg = "a store key is hex digits"
            raise ValueError(msg)
        return self.directory / (key + suffix)

    def _open(self, path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
        _check(os.stat(self.directory), f"directory {self.directory}", directory=True)
        # O_NONBLOCK: opening a FIFO (or a device) put where an entry belongs would otherwise
        # block this thread for good, and asyncio.run() waits for it at exit. The fstat below
        # refuses anything but a regular file, where O_NONBLOCK changes nothing.
        fd = os.open(path, flags | _NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        try:
            _check(os.fstat(fd), f"file {path.name}")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _read(self, path: Path) -> bytes | None:
        raw = self._head(path, len(_HEADER) + 32 + MAX_ENTRY + 1)
        if raw is None:
            return None
        _, _, body = _split(raw)
        return body

    def _head(self, path: Path, size: int, *, line: bool = False) -> bytes | None:
        """Up to `size` bytes from the start of `path` (its first line only, with `line`),
        or None when there is no such file."""
        try:
            fd = self._open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
            return file.readline(size) if line else file.read(size)

    def _publish(self, key: str, entry: bytes, expires_at: float) -> bool:
        lock = self._open(self._path(key, ".publish"))
        try:
            _lock_within(lock, _PUBLISH_LOCK_TIMEOUT)
            path = self._path(key, ".token")
            stored = self._stored_expiry(path)
            if stored is not None and stored >= expires_at:
                return False
            head = _HEADER + repr(float(expires_at)).encode() + b"\n"
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".token")
            try:
                with os.fdopen(fd, "wb") as file:  # mkstemp makes it 0600
                    file.write(head + entry)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            return True
        finally:
            os.close(lock)

    def _stored_expiry(self, path: Path) -> float | None:
        first = self._head(path, len(_HEADER) + 64, line=True)
        if first is None:
            return None
        ok, expiry, _ = _split(first)
        return expiry if ok else None  # a damaged entry is replaced


def _split(raw: bytes) -> tuple[bool, float | None, bytes]:
    """(well formed, the header's expiry, the entry); a damaged file is all entry, so that
    the manager sees it and says why it is refused."""
    if raw.startswith(_HEADER):
        line, sep, body = raw[len(_HEADER) :].partition(b"\n")
        if sep:
            try:
                return True, float(line), body
            except ValueError:
                pass
    return False, None, raw


def _check(info: os.stat_result, what: str, *, directory: bool = False) -> None:
    """Refuse what another user owns or others can write (or not the kind expected)."""
    if directory and not stat.S_ISDIR(info.st_mode):
        msg = f"token store {what} is not a directory"
        raise TokenStoreError(msg)
    if not directory and not stat.S_ISREG(info.st_mode):
        msg = f"token store {what} is not a regular file"
        raise TokenStoreError(msg)
    if info.st_uid != os.getuid():
        msg = f"token store {what} is owned by another user (uid {info.st_uid}): refused"
        raise TokenStoreError(msg)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        msg = (
            f"token store {what} is writable by others (mode {stat.S_IMODE(info.st_mode):o}): "
            "refused, since whoever writes it chooses the token the fleet sends"
        )
        raise TokenStoreError(msg)


def _lock_within(fd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                msg = f"another publish held the store's lock for over {timeout:g} s"
                raise TokenStoreError(msg) from None
            time.sleep(0.005)
        else:
            return
