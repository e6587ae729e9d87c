"""`FileTokenStore`: the processes of one host share a token through files.

Layout, in one directory (`0700`, created if missing), per key:

    <key>.token     the entry: a header line `aioica_auth-store 1 <exp>` and the entry bytes,
                    written to a temporary file, fsynced and moved into place with
                    `os.replace`, so a reader sees the old entry or the new one, never half
    <key>.lock      the renewal lease: an exclusive `flock`, never waited for, and the lease's
                    deadline (`file_lease`). The OS drops the lock when its holder dies, so a
                    `kill -9` mid-mint frees the lease at once; a holder stopped or blocked
                    past its `ttl` has it taken over by the next `acquire`
    <key>.takeover  a `flock` held for microseconds, never waited for: the mutex under which
                    a lock file is checked or replaced, so two takers never both win
    <key>.publish   a short `flock` (waited for, at most `_PUBLISH_LOCK_TIMEOUT` s) around
                    compare-and-replace, so a publish never replaces an entry that expires later
    .tmp-*          a publish or a takeover halfway (deleted by housekeeping once stale)

`discard` (not part of `TokenStore`) deletes an entry only while it still holds the bytes a
read returned, under the publish lock: the CLI's `token --invalidate` and `--force-refresh`.

Every file is `0600`. A directory or file that another user owns, or that others can write,
is refused with `TokenStoreError` (as ssh does), because whoever can write the entry decides
which bearer token the fleet sends. Every lock is checked, once taken, to be on the file now
at its path (a lock file may be replaced or deleted in between).

Threads: reads, publishes and housekeeping run on the store's own daemon threads
(`file_io.DaemonThreads`, at most 4), never the loop's default executor, so a slow disk
never blocks the event loop and a read stuck in the kernel (a hung network file system)
costs only its call, which the manager bounds, never `asyncio.run`'s exit. Taking and
releasing the lease are a few non-blocking calls, done inline so that a cancelled task
cannot leave a lock behind; `wait` polls two `lstat`s inline, every 5 to 25 ms (microseconds
each on a local disk: keep the directory on one).

Housekeeping: at most once per `_SWEEP_EVERY` s per store, a publish also starts a sweep of
the directory in the background (`file_lease.sweep`): keys whose entry expired a minute ago
and that nobody holds lose their files; stale temporary files go too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from .._errors import TokenStoreError
from . import file_lease as _file_lease
from .file_io import ENTRY_HEADER, DaemonThreads, check, lock_current, open_checked
from .store import MAX_ENTRY

__all__ = ["FileTokenStore", "default_directory"]

# A waiter's poll interval: 5 ms at first, then 1.5 times longer each poll up to 25 ms (each
# wake-up of the event loop costs far more CPU than the two lstat calls), give or take 20 %.
_POLL_FIRST, _POLL_GROWTH, _POLL_LAST = 0.005, 1.5, 0.025
_PROBE_EVERY = 8  # polls: a waiter also tries the lease's lock this often (a holder killed)
_PUBLISH_LOCK_TIMEOUT = 2.0  # seconds: the longest a publish waits for another publish
_SWEEP_EVERY = 600.0  # seconds: the shortest time between two sweeps of one store
_CLOSE_WAIT = 1.0  # seconds: the longest `aclose` waits for a sweep under way

_Signature = tuple[int, int, int] | None  # (inode, size, mtime in ns), or None: no file


def default_directory(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CACHE_HOME/aioica_auth`, or `~/.cache/aioica_auth` (XDG's default), read from
    `environ` (`os.environ` by default; a relative path in either variable is ignored)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    if os.path.isabs(base):
        return Path(base) / "aioica_auth"
    home = env.get("HOME", "")
    return (Path(home) if os.path.isabs(home) else Path.home()) / ".cache" / "aioica_auth"


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
            check(path.stat(follow_symlinks=True), f"directory {path}", directory=True)
        except OSError as exc:
            msg = f"cannot use {path} as a token store: {exc.strerror or type(exc).__name__}"
            raise TokenStoreError(msg) from None
        self.directory = path
        self._rng = random.Random()
        self._threads = DaemonThreads("aioica_auth-file-store")
        self._seen: dict[str, _Signature] = {}  # per key: the entry file the last read read
        self._deadlines: dict[str, float] = {}  # per key: a busy lease's deadline (wall time)
        self._sweep_every = _SWEEP_EVERY
        self._next_sweep = 0.0  # monotonic: the first publish sweeps
        self._sweeping: asyncio.Future[int] | None = None

    def __repr__(self) -> str:
        return f"FileTokenStore({str(self.directory)!r})"

    # -- TokenStore -------------------------------------------------------------------------

    async def read(self, key: str) -> bytes | None:
        """The entry of `key`, or None; read on the store's threads, at most
        `MAX_ENTRY` + 1 bytes of it (a larger one is refused by the manager, unparsed).

        Raises:
            TokenStoreError: the file breaks a rule (owner, mode, kind).
            OSError: the read failed (ELOOP: a symlink in place of the entry).
        """
        path = self._path(key, ".token")
        raw, seen = await self._threads.run(self._read, path)
        self._seen[key] = seen
        return raw

    async def acquire(self, key: str, ttl: float) -> object | None:
        """Take the lease of `key` for `ttl` seconds, or take it over from a holder whose
        `ttl` ran out (stopped or blocked); None while another holds it. Never waits.

        Raises:
            ValueError: `ttl` is not a positive number of seconds.
            TokenStoreError: a lock file breaks a rule (owner, mode, kind).
        """
        if not (math.isfinite(ttl) and ttl > 0):
            msg = f"a lease ttl must be a positive number of seconds, not {ttl!r}"
            raise ValueError(msg)
        self._path(key, ".lock")
        lease, deadline = _file_lease.take(self.directory, key, ttl)
        if deadline is None:
            self._deadlines.pop(key, None)
        else:
            self._deadlines[key] = deadline
        return lease

    async def release(self, key: str, handle: object) -> None:
        """Give back a lease `acquire` returned (twice is harmless). A lease taken over
        meanwhile is a lock on a replaced file: giving it back disturbs the new holder not."""
        if isinstance(handle, _file_lease.Lease):
            _file_lease.give_back(handle)

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        """Store `entry` for `key` unless the stored one expires at or after `expires_at`;
        whether it was stored. Waits at most `_PUBLISH_LOCK_TIMEOUT` s for another publish.
        Starts a sweep (in the background) if none ran in the last `_SWEEP_EVERY` s.

        Raises:
            TokenStoreError: another publish held the lock too long, or a rule is broken.
        """
        path = self._path(key, ".token")
        stored = await self._threads.run(self._publish, key, path, entry, expires_at)
        self._sweep_now_and_then()
        return stored

    async def discard(self, key: str, entry: bytes) -> bool:
        """Delete the entry of `key` if it still holds exactly `entry` (the bytes a `read`
        returned); whether it did. A compare-and-delete, under the publish lock: an entry
        published since that read is never deleted. Not part of `TokenStore`: the CLI uses it
        to drop a token that must no longer be handed out (`aioica-auth token --invalidate`).

        Raises:
            TokenStoreError: another publish held the lock too long, or a rule is broken.
        """
        path = self._path(key, ".token")
        return await self._threads.run(self._discard, key, path, entry)

    async def wait(self, key: str, within: float) -> None:
        """Return once the entry of `key` changed since this store last read it, the lease's
        lock file changed (given back, taken over) or its lock is free, or the deadline of
        the lease seen busy passed; and after `within` seconds at the latest.

        Polls an `lstat` of the entry and of the lock file, every 5 ms at first and every
        25 ms (give or take 20 %) after the first 0.1 s, and tries the lock every
        `_PROBE_EVERY` polls (a holder killed changes no file), all inline.
        """
        token, lock = self._path(key, ".token"), self._path(key, ".lock")
        loop = asyncio.get_running_loop()
        end = loop.time() + max(0.0, within)
        deadline = self._deadlines.get(key)
        if deadline is not None:  # a stuck holder's lease can be taken over from then on
            end = min(end, loop.time() + max(0.0, deadline - time.time()) + 0.001)
        seen = self._seen[key] if key in self._seen else _signature(token)
        lock_before = _signature(lock)
        polls, interval = 0, _POLL_FIRST
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, interval * self._rng.uniform(0.8, 1.2)))
            interval = min(_POLL_LAST, interval * _POLL_GROWTH)
            if _signature(token) != seen or _signature(lock) != lock_before:
                return
            polls += 1
            if polls % _PROBE_EVERY == 0 and _file_lease.lease_is_free(self.directory, key):
                return

    async def aclose(self) -> None:
        """Wait for a sweep under way, for at most `_CLOSE_WAIT` s (it is safe to cut short:
        the process may exit mid-sweep). Idempotent; the store stays usable."""
        sweeping, self._sweeping = self._sweeping, None
        if sweeping is not None and not sweeping.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(sweeping), _CLOSE_WAIT)

    # -- files (on the store's threads) ------------------------------------------------------

    def _path(self, key: str, suffix: str) -> Path:
        if not key.isalnum() or not key.isascii():
            msg = "a store key is hex digits"
            raise ValueError(msg)
        return self.directory / (key + suffix)

    def _read(self, path: Path) -> tuple[bytes | None, _Signature]:
        """(The entry's bytes, the file's signature), or (None, None) when there is none."""
        try:
            fd = open_checked(self.directory, path, os.O_RDONLY)
        except FileNotFoundError:
            return None, None
        with os.fdopen(fd, "rb") as file:
            raw = file.read(len(ENTRY_HEADER) + 32 + MAX_ENTRY + 1)
            info = os.fstat(fd)
        _, _, body = _split(raw)
        return body, (info.st_ino, info.st_size, info.st_mtime_ns)

    def _publish(self, key: str, path: Path, entry: bytes, expires_at: float) -> bool:
        lock = lock_current(self.directory, self._path(key, ".publish"), _PUBLISH_LOCK_TIMEOUT)
        assert lock is not None  # with a timeout: the lock, or an error
        try:
            stored = self._stored_expiry(path)
            if stored is not None and stored >= expires_at:
                return False
            head = ENTRY_HEADER + repr(float(expires_at)).encode() + b"\n"
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

    def _discard(self, key: str, path: Path, entry: bytes) -> bool:
        lock = lock_current(self.directory, self._path(key, ".publish"), _PUBLISH_LOCK_TIMEOUT)
        assert lock is not None  # with a timeout: the lock, or an error
        try:
            stored, _ = self._read(path)
            if stored != entry:
                return False  # gone, or replaced since it was read
            os.unlink(path)
            return True
        finally:
            os.close(lock)

    def _stored_expiry(self, path: Path) -> float | None:
        try:
            fd = open_checked(self.directory, path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as file:
            first = file.readline(len(ENTRY_HEADER) + 64)
        ok, expiry, _ = _split(first)
        return expiry if ok else None  # a damaged entry is replaced

    # -- housekeeping -----------------------------------------------------------------------

    def _sweep_now_and_then(self) -> None:
        now = time.monotonic()
        if now < self._next_sweep or (self._sweeping and not self._sweeping.done()):
            return
        self._next_sweep = now + self._sweep_every
        self._sweeping = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> int:
        """One sweep of the directory (see `file_lease.sweep`); the files it deleted. Never
        raises: housekeeping failing is no reason to fail anything else."""
        try:
            return await self._threads.run(_file_lease.sweep, self.directory)
        except (OSError, TokenStoreError):
            return 0


def _signature(path: Path) -> _Signature:
    """What changes when the file at `path` is replaced or written: (inode, size, mtime)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _split(raw: bytes) -> tuple[bool, float | None, bytes]:
    """(well formed, the header's expiry, the entry); a damaged file is all entry, so that
    the manager sees it and says why it is refused."""
    if raw.startswith(ENTRY_HEADER):
        line, sep, body = raw[len(ENTRY_HEADER) :].partition(b"\n")
        if sep:
            try:
                return True, float(line), body
            except ValueError:
                pass
    return False, None, raw
