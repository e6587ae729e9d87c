"""`SyncTokenManager`: a `TokenManager` for synchronous code, on a private loop in a thread.

The manager runs on an event loop of its own, in a daemon thread started at construction.
`headers()` and `token()` of a fresh token read the manager's hot path directly, in the
calling thread (a single attribute read, safe under the GIL: the loop thread only ever
replaces it); anything else is handed to the loop thread and waited for, bounded by
`acquire_timeout`. Any number of threads may call it at once.

Blocking calls are refused inside a running event loop (they would stall it; async code uses
`TokenManager`), and in a child process after a fork (its thread did not survive the fork).
`close()` closes the manager on its loop, stops the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from ._credentials import ApiKey, BasicAuth, Jwt, PsToken
from ._events import Event, fields
from ._manager import TokenManager
from ._token import Token
from ._wire.console import CONSOLE_BASE_URL
from ._wire.ica import ICA_BASE_URL

__all__ = ["SyncTokenManager"]

logger = logging.getLogger("aioica_auth")

_T = TypeVar("_T")
_JOIN_TIMEOUT = 5.0  # seconds close() waits beyond the manager's close, and for the thread
_MARGIN = 5.0  # seconds beyond acquire_timeout a caller waits for the loop thread's answer

_live: weakref.WeakSet[SyncTokenManager] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for manager in list(_live):
        manager._forked = True
        manager._open = False


os.register_at_fork(after_in_child=_after_fork_in_child)


class SyncTokenManager:
    """Fresh bearer headers for synchronous code (libica, requests, threads).

    Build one with `SyncTokenManager.for_ica(...)` or `for_console(...)` (the arguments of
    `TokenManager`'s), share it across threads, and `close()` it (or use `with`).
    """

    def __init__(self, manager: TokenManager) -> None:
        """Run `manager` (new, not yet used) on a private loop in a daemon thread."""
        self._manager = manager
        self._closed = False
        self._forked = False
        self._open = True  # neither closed nor forked: the hot path may serve
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        # The target is no bound method, so that an unclosed manager can still be freed.
        self._thread = threading.Thread(
            target=_run, args=(self._loop,), name="aioica_auth-sync", daemon=True
        )
        self._thread.start()
        _live.add(self)

    @classmethod
    def for_ica(
        cls,
        credential: ApiKey | BasicAuth | PsToken | Jwt,
        *,
        base_url: str = ICA_BASE_URL,
        tenant: str | None = None,
        on_token: Callable[[Token], object] | None = None,
        **policy: Any,
    ) -> SyncTokenManager:
        """A manager for ICA v2; the arguments of `TokenManager.for_ica` (no session).

        `on_token` runs in the manager's thread.
        """
        return cls(
            TokenManager.for_ica(
                credential, base_url=base_url, tenant=tenant, on_token=on_token, **policy
            )
        )

    @classmethod
    def for_console(
        cls,
        credential: ApiKey | BasicAuth | PsToken,
        *,
        base_url: str = CONSOLE_BASE_URL,
        on_token: Callable[[Token], object] | None = None,
        **options: Any,
    ) -> SyncTokenManager:
        """A manager for the console v1; the arguments of `TokenManager.for_console` (no
        session). `on_token` runs in the manager's thread."""
        return cls(
            TokenManager.for_console(credential, base_url=base_url, on_token=on_token, **options)
        )

    @classmethod
    def from_environment(cls, *, console: bool = False, **kwargs: Any) -> SyncTokenManager:
        """A manager for the credential and base URL the user already has; the arguments of
        `TokenManager.from_environment` (no session). `on_token` runs in the manager's
        thread."""
        return cls(TokenManager.from_environment(console=console, **kwargs))

    def headers(self, *, min_validity: float | None = None) -> Mapping[str, str]:
        """`{"Authorization": "Bearer <jwt>"}`, as `TokenManager.headers()` gives.

        Raises:
            TokenUnavailableError: no valid token could be had.
            RuntimeError: closed, called inside a running event loop, or after a fork.
        """
        hot = self._manager._hot  # the hot path, read in this thread: no hop to the loop
        if hot is not None and min_validity is None and self._open and _running_loop() is None:
            return hot
        return self._call(self._manager.headers(min_validity=min_validity))

    def token(self, *, min_validity: float | None = None) -> Token:
        """The current `Token`, under the rules of `headers()`."""
        lease = self._manager._hot_lease
        if lease is not None and min_validity is None and self._open and _running_loop() is None:
            return lease.token
        return self._call(self._manager.token(min_validity=min_validity))

    def close(self) -> None:
        """Close the manager, stop its loop and join its thread (idempotent).

        Returns once the manager is closed, within the close's own bound: a console
        `revoke_on_close` takes `request_timeout + 1` seconds at most, and the loop gets
        5 s more to end. A close that overruns even that is cancelled (the manager's session
        is still closed), and so is anything left on the loop: nothing the manager owns
        outlives `close()`.

        Raises:
            RuntimeError: called inside a running event loop.
        """
        if self._closed:
            return
        if not self._forked:
            self._refuse_in_loop()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._open = False
        if self._forked:
            return  # the thread and loop belong to the parent process
        bound = self._manager.policy.request_timeout + 1 + _JOIN_TIMEOUT
        future = asyncio.run_coroutine_threadsafe(self._manager.aclose(), self._loop)
        try:
            future.result(timeout=bound)
        except concurrent.futures.TimeoutError:
            logger.warning(
                "closing the token manager took over %g s: cancelled",
                bound,
                extra=fields(Event.MANAGER_CLOSE_TIMEOUT, seconds=bound),
            )
            future.cancel()  # `_run` awaits the cancelled close before the loop closes
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_JOIN_TIMEOUT)

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    def __enter__(self) -> SyncTokenManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sync{self._manager!r}"

    def __copy__(self) -> SyncTokenManager:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SyncTokenManager:
        """Itself: a copy would share the thread and loop anyway. So an object holding a
        manager can be copied, as libica copies a `Configuration` (`set_default`)."""
        return self

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_closed", True) or self._forked:
            return
        _warn(f"unclosed {self!r}: call `manager.close()`", ResourceWarning, source=self)
        self._closed = True
        self._open = False
        loop = self._loop
        if not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._shutdown(self._manager, loop), loop)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    async def _shutdown(manager: TokenManager, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await manager.aclose()
        finally:
            loop.stop()

    def _refuse_in_loop(self) -> None:
        if not _outside_a_loop():
            msg = (
                "SyncTokenManager blocks: it cannot be called inside a running event loop "
                "(in async code, use TokenManager)"
            )
            raise RuntimeError(msg)

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run `work` on the loop thread and wait for its answer."""
        try:
            if self._forked:
                msg = (
                    "this SyncTokenManager was created before a fork: its thread does not "
                    "exist in this process; create a new one in the child"
                )
                raise RuntimeError(msg)
            if self._closed:
                msg = "this SyncTokenManager is closed"
                raise RuntimeError(msg)
            self._refuse_in_loop()
        except RuntimeError:
            work.close()
            raise
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout=self._manager.policy.acquire_timeout + _MARGIN)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


# Called directly on the hot path (not through `_outside_a_loop`): a Python-level call is a
# quarter of that path's cost.
_running_loop = asyncio._get_running_loop


def _outside_a_loop() -> bool:
    return _running_loop() is None


def _run(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread: run until stopped, then close the loop."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        # What a cancelled close left: cancel it and let it finish (its `finally` closes).
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
