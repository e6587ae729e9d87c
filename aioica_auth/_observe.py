"""Who is watching a token request: the seam between the layers that act and the telemetry.

The wire and the fleet record what they do through the `Observer` of the current context, if
there is one; a manager's renewal sets it (`OBSERVER`) for the attempt's own task, with the
reason of the attempt, when OpenTelemetry is installed. Nobody watching costs one context
variable read per token request and per store operation, and nothing on the hot path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal, Protocol

__all__ = ["OBSERVER", "Answered", "Observer", "StoreOperation", "leased", "observed"]


class Answered(Protocol):
    """Told the HTTP status once a request's answer turned out usable, and the fingerprint of
    the token it brought, if any."""

    def __call__(self, status: int, token_id: str | None = None) -> None: ...


StoreOperation = Literal["adopt", "publish", "lease", "wait"]


class Observer(Protocol):
    """What the wire and the fleet tell the telemetry of one renewal attempt."""

    def request(
        self, endpoint: str, method: str, path: str
    ) -> contextlib.AbstractContextManager[Answered]:
        """Around one token request (`endpoint` is `ica.create`, `console.revoke`, ...; `path`
        is the URL's path, never its query): the block calls the `Answered` it is given with
        the status when the answer is a usable token, and raises the request's error if not."""

    def store(self, operation: StoreOperation, *, ok: bool) -> None:
        """One operation on a fleet's store, and whether it succeeded."""

    def lease(self) -> contextlib.AbstractContextManager[None]:
        """Around the time a fleet's store lease is held."""


OBSERVER: ContextVar[Observer | None] = ContextVar("aioica_auth_observer", default=None)


def _unanswered(status: int, token_id: str | None = None) -> None:
    """What an unobserved request is told of its answer: nothing."""


@contextlib.contextmanager
def _unobserved() -> Iterator[Answered]:
    yield _unanswered


def observed(endpoint: str, method: str, path: str) -> contextlib.AbstractContextManager[Answered]:
    """The current observer's record of one token request, or a block that records nothing."""
    observer = OBSERVER.get()
    if observer is None:
        return _unobserved()
    return observer.request(endpoint, method, path)


def leased() -> contextlib.AbstractContextManager[None]:
    """The current observer's record of a store lease held, or a block that records nothing."""
    observer = OBSERVER.get()
    return contextlib.nullcontext() if observer is None else observer.lease()
