"""The file store's renewal lease, with a deadline, and its housekeeping.

A lease is an exclusive `flock` on `<key>.lock`, whose content names its deadline:
`aioica_auth-lease 1 <wall time> <pid>` (fixed width, written in place). The OS drops the
lock when its holder dies; a holder that is alive but stuck (a stopped process, an event
loop blocked in a long synchronous call) keeps it, so the deadline lets another take over:

* taking the lease: open the file, `flock` it without waiting, write the deadline, then,
  under the `<key>.takeover` mutex (a short `flock`, never waited for), check that the
  locked file is still the one at the path; if not (taken over, or swept, in between) give
  it back and report the lease as held.
* taking over: under the mutex, lock the file at the path if it is free (a plain take),
  else read its deadline; once it has passed (an unreadable one counts as passed), write a
  new lock file with our deadline, `flock` it and move it over the old one. Only under the
  mutex is a lock file replaced, and every holder checks its file under the mutex, so two
  takers never both win, nor a taker and a new holder. The stuck holder, when it resumes,
  holds a lock on an unlinked file: its release closes it and disturbs nobody, and anything
  it publishes is fenced by the JWT's `exp` like any publish.
* a holder whose deadline passed without a taker keeps working as usual.
* releasing: empty the file (so that waiters polling its `stat` see the change), close it.

Housekeeping (`sweep`) deletes, now and then, what an expired key leaves behind: its entry
once its header's expiry is over `_GRACE` s past, with its lock files, but only while it
holds the key's lease, mutex and publish lock itself (taken without waiting: a key in use
is skipped); a key with no entry once its lock files are `_GRACE` s old; and `.tmp-*`
files older than `_STALE_TMP` s (a publish or a takeover that died halfway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .._errors import TokenStoreError
from .._events import Event, fields
from .file_io import ENTRY_HEADER, is_current, lock_current, open_checked

if sys.platform != "win32":
    import fcntl

__all__ = ["Lease", "deadline_of", "give_back", "lease_is_free", "sweep", "take"]

logger = logging.getLogger("aioica_auth")

_LEASE = b"aioica_auth-lease 1 "
_GRACE = 60.0  # seconds past an entry's expiry (or a lock file's last change) before a sweep
_STALE_TMP = 600.0  # seconds: a temporary file this old belongs to a publish that died
_KEYED = re.compile(r"([0-9a-f]{64})\.(token|lock|publish|takeover)")
# The order a sweep deletes a key's files in: the entry while the publish lock is ours (a new
# publish waits for it), the mutex last (nobody replaces the lock file while a sweep holds it).
_SUFFIXES = (".token", ".publish", ".lock", ".takeover")


class Lease:
    """A held renewal lease: the open lock file (closing it drops the `flock`)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


def take(directory: Path, key: str, ttl: float) -> tuple[Lease | None, float | None]:
    """Take the lease of `key` for `ttl` seconds, or take it over from a holder whose
    deadline has passed, without waiting: (the lease, None), or (None, the holder's
    deadline as a wall time, None when unknown)."""
    path = directory / (key + ".lock")
    fd = open_checked(directory, path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        deadline = deadline_of(fd)
        os.close(fd)
        if deadline is not None and deadline > time.time():
            return None, deadline
        return _take_over(directory, key, ttl)
    except BaseException:
        os.close(fd)
        raise
    try:
        _write_deadline(fd, ttl)
        with _mutex(directory, key) as mutex:
            if mutex is not None and is_current(fd, path):
                return Lease(fd), None
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)  # replaced or swept meanwhile, or a taker is at work: held
    return None, None


def _take_over(directory: Path, key: str, ttl: float) -> tuple[Lease | None, float | None]:
    path = directory / (key + ".lock")
    with _mutex(directory, key) as mutex:
        if mutex is None:
            return None, None  # another taker is at work
        fd = open_checked(directory, path)  # under the mutex, nobody replaces it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        except BaseException:
            os.close(fd)
            raise
        else:  # freed meanwhile: a plain take
            try:
                _write_deadline(fd, ttl)
            except BaseException:
                os.close(fd)
                raise
            return Lease(fd), None
        try:
            deadline, holder = _read_lease(fd)
        finally:
            os.close(fd)
        now = time.time()
        if deadline is not None and deadline > now:
            return None, deadline
        new, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".lock")
        try:
            fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else has this file
            _write_deadline(new, ttl)
            os.replace(temporary, path)
        except BaseException:
            os.close(new)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    late = "an unreadable deadline" if deadline is None else f"{now - deadline:.1f} s late"
    logger.warning(
        "took over the token store's renewal lease from process %s (%s): stopped or blocked?",
        holder or "?",
        late,
        extra=fields(
            Event.STORE_LEASE_TAKEN_OVER,
            holder=holder,
            late=None if deadline is None else now - deadline,
        ),
    )
    return Lease(new), None


def give_back(lease: Lease) -> None:
    """Release `lease` (twice is harmless): empty the file, so that waiters see a change,
    and close it, which drops the lock. A lease taken over holds an unlinked file: emptying
    and closing it disturbs nobody."""
    fd, lease.fd = lease.fd, -1
    if fd < 0:
        return
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass  # the close below still frees the lease
    finally:
        os.close(fd)


def lease_is_free(directory: Path, key: str) -> bool:
    """Whether nobody holds the lease of `key` now (no lock file, or its `flock` free)."""
    try:
        fd = open_checked(directory, directory / (key + ".lock"), os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        # A shared lock for a moment: taken only when no exclusive one is held.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # drops the shared lock too
    return True


def deadline_of(fd: int) -> float | None:
    """The deadline written in the lock file `fd`, or None when unreadable."""
    return _read_lease(fd)[0]


def _read_lease(fd: int) -> tuple[float | None, int | None]:
    raw = os.pread(fd, 64, 0)
    if raw.startswith(_LEASE):
        fields = raw[len(_LEASE) :].split()
        with contextlib.suppress(ValueError, IndexError):
            return float(fields[0]), int(fields[1])
    return None, None


def _write_deadline(fd: int, ttl: float) -> None:
    line = _LEASE + b"%20.3f %10d\n" % (time.time() + ttl, os.getpid())
    os.pwrite(fd, line, 0)  # fixed width: it covers any earlier deadline whole
    if os.fstat(fd).st_size > len(line):
        os.ftruncate(fd, len(line))


@contextlib.contextmanager
def _mutex(directory: Path, key: str) -> Iterator[int | None]:
    """The `.takeover` mutex of `key`, without waiting: its descriptor, or None when held."""
    fd = lock_current(directory, directory / (key + ".takeover"))
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def sweep(directory: Path, now: float | None = None) -> int:
    """Delete what expired keys and dead publishes left in `directory` (see the module
    docstring); the number of files deleted. Tolerates other processes at work: a file
    that is busy, or gone or changed meanwhile, is skipped."""
    now = time.time() if now is None else now
    keys: dict[str, set[str]] = {}
    deleted = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".tmp-"):
                deleted += _drop_if_stale(entry, now)
            elif match := _KEYED.fullmatch(entry.name):
                keys.setdefault(match[1], set()).add("." + match[2])
    for key, suffixes in keys.items():
        with contextlib.suppress(OSError, TokenStoreError):  # busy, gone, refused: skipped
            deleted += _sweep_key(directory, key, suffixes, now)
    return deleted


def _drop_if_stale(entry: os.DirEntry[str], now: float) -> int:
    with contextlib.suppress(OSError):
        info = entry.stat(follow_symlinks=False)
        mine = stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()
        if mine and now - info.st_mtime > _STALE_TMP:
            os.unlink(entry.path)
            return 1
    return 0


def _sweep_key(directory: Path, key: str, suffixes: set[str], now: float) -> int:
    if ".token" in suffixes:
        if not _expired(directory / (key + ".token"), now):
            return 0
    elif any(now - os.lstat(directory / (key + s)).st_mtime < _GRACE for s in suffixes):
        return 0  # no entry yet: perhaps its first mint is under way
    # The lease, the mutex and the publish lock, none waited for, so that no holder, taker or
    # publisher is at work; each is checked to be the file at its path.
    held: list[int] = []
    try:
        for suffix in (".lock", ".takeover", ".publish"):
            fd = lock_current(directory, directory / (key + suffix))
            if fd is None:
                return 0
            held.append(fd)
        path = directory / (key + ".token")
        if os.path.lexists(path) and not _expired(path, now):
            return 0  # published meanwhile
        deleted = 0
        for suffix in _SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / (key + suffix))
                deleted += 1
        return deleted
    finally:
        for fd in held:
            os.close(fd)


def _expired(path: Path, now: float) -> bool:
    """Whether the entry at `path` expired over `_GRACE` s ago (a damaged one: whether it
    is that old)."""
    fd = open_checked(path.parent, path, os.O_RDONLY)
    try:
        first = os.pread(fd, 128, 0)
        changed = os.fstat(fd).st_mtime
    finally:
        os.close(fd)
    if first.startswith(ENTRY_HEADER):
        with contextlib.suppress(ValueError):
            return float(first[len(ENTRY_HEADER) :].partition(b"\n")[0]) < now - _GRACE
    return changed < now - _GRACE
