"""The file store's building blocks: checked opens, inode-checked locks, daemon threads.

`open_checked` opens without following a symlink and without blocking (a FIFO put where an
entry belongs would hang the thread), then refuses anything but a regular file this user
owns and others cannot write. `lock_current` takes a `flock` on the file now at a path:
a lock file can be replaced (a lease taken over) or deleted (housekeeping) between an open
and its `flock`, and a lock on an unlinked inode excludes nobody, so the inode is checked
after the lock is taken. `DaemonThreads` runs blocking file I/O off the event loop on daemon
threads of the store's own, never the loop's default executor: a call stuck in the kernel
(a hung network file system) costs that call, which the caller bounds, but never the
process's exit (`asyncio.run` waits for the default executor's threads; nobody waits for
these).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .._errors import TokenStoreError

if sys.platform != "win32":
    import fcntl

__all__ = ["ENTRY_HEADER", "DaemonThreads", "check", "lock_current", "lock_within", "open_checked"]

ENTRY_HEADER = b"aioica_auth-store 1 "  # an entry's first line: this, its expiry, a newline
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_T = TypeVar("_T")


def check(info: os.stat_result, what: str, *, directory: bool = False) -> None:
    """Refuse what another user owns or others can write (or not the kind expected).

    Raises:
        TokenStoreError: saying which rule `what` breaks.
    """
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


def open_checked(directory: Path, path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """A file descriptor of `path` (in `directory`, both checked), created `0600` with
    `O_CREAT`.

    Raises:
        TokenStoreError: the directory or the file breaks a rule of `check`.
        OSError: the open failed (FileNotFoundError without `O_CREAT`; ELOOP: a symlink).
    """
    check(os.stat(directory), f"directory {directory}", directory=True)
    # O_NONBLOCK: opening a FIFO (or a device) would otherwise block this thread for good.
    # The fstat below refuses anything but a regular file, where O_NONBLOCK changes nothing.
    fd = os.open(path, flags | _NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    try:
        check(os.fstat(fd), f"file {path.name}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_current(fd: int, path: Path) -> bool:
    """Whether `fd` is still the file at `path` (not replaced, not deleted)."""
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_ino, mine.st_dev) == (now.st_ino, now.st_dev)


def lock_current(directory: Path, path: Path, timeout: float | None = None) -> int | None:
    """An open descriptor of the file at `path` holding its exclusive `flock`, or None when
    another holds it (without `timeout`: one try; with it: tries every 5 ms for at most
    `timeout` seconds, then raises).

    A file replaced or deleted between the open and the lock is opened again (at most 5
    times in a row; then None, or the timeout's error).

    Raises:
        TokenStoreError: `timeout` passed with the lock still held elsewhere; or `check`.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in range(5):
        fd = open_checked(directory, path)
        try:
            locked = lock_within(fd, deadline)
            if locked and is_current(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not locked:
            return None
    if deadline is not None:
        msg = f"the store's {path.suffix} lock file kept being replaced"
        raise TokenStoreError(msg)
    return None


def lock_within(fd: int, deadline: float | None) -> bool:
    """Take `fd`'s exclusive `flock`: one try without `deadline` (False when held), else
    every 5 ms until the monotonic `deadline`, then `TokenStoreError`."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if deadline is None:
                return False
            if time.monotonic() >= deadline:
                msg = "another process held the store's lock too long"
                raise TokenStoreError(msg) from None
            time.sleep(0.005)
        else:
            return True


class DaemonThreads:
    """At most `limit` daemon threads running blocking calls for the event loop.

    A thread idle for `idle` seconds exits; a call finds an idle thread or starts one (up
    to `limit`, then it queues). A call stuck in the kernel keeps its thread, and once all
    `limit` are stuck later calls queue: each caller bounds its own wait (the manager's
    store-call timeout), and the process still exits, since nothing joins daemon threads.
    """

    def __init__(self, name: str, limit: int = 4, idle: float = 30.0) -> None:
        self._name, self._limit, self._idle = name, limit, idle
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._waiting = 0  # threads idle in get()

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """`function(*args)` on one of the threads; its result or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():  # the caller gave up (cancelled, timed out)
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def job() -> None:
            result, error = None, None
            try:
                result = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's task
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        self.submit(job)
        return await future

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job()` on one of the threads, not waiting for it (it must not raise)."""
        if os.getpid() != self._pid:  # a forked child: the parent's threads are not here
            self._reset()
        self._jobs.put(job)
        with self._lock:
            if self._jobs.qsize() > self._waiting and self._threads < self._limit:
                self._threads += 1
                name = f"{self._name}-{self._threads}"
                threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            with self._lock:
                self._waiting += 1
            try:
                job: Callable[[], None] | None = jobs.get(timeout=self._idle)
            except queue.Empty:
                job = None
            with self._lock:
                self._waiting -= 1
                if job is None:
                    if jobs.empty():
                        self._threads -= 1
                        return
                    continue
            job()
