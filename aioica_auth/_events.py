"""The names of the library's log records: one registry, so that they stay stable and few.

Every record the library writes to the `aioica_auth` logger carries `record.event` (a name
below) and data fields (`extra=fields(Event.X, ...)`), so that a filter, a JSON formatter or
a log pipeline can act on what happened without parsing the human message, which may be
reworded. Fields are data (token fingerprints, seconds, statuses, counts), never a secret:
a token, key or psToken is named by its fingerprint (`Token.fingerprint`,
`_credentials.fingerprint`). The docs' table of events (docs/observability.md) is generated
from, and tested against, this registry; a test checks that every logging call names a member
of it.
"""

from __future__ import annotations

import enum
import logging

__all__ = ["Event", "fields"]


class Event(enum.StrEnum):
    """A log event: its stable dotted name, the level it is logged at, when, and its fields
    (`Event.TOKEN_RENEWED.when`, `.level`, `.fields`: the docs' table)."""

    level: str
    when: str
    fields: str

    def __new__(cls, value: str, level: str, when: str, fields: str) -> Event:
        member = str.__new__(cls, value)
        member._value_ = value
        member.level, member.when, member.fields = level, when, fields
        return member

    # -- the token -------------------------------------------------------------------------
    TOKEN_RENEWED = (
        "token.renewed",
        "INFO",
        "a new token is adopted (minted, refreshed, shared or given)",
        "token_id, provenance, lifetime, refresh_in, skew",
    )
    TOKEN_RENEWAL_FAILED = (
        "token.renewal_failed",
        "WARNING, then DEBUG",
        "a renewal attempt failed (WARNING for the first in a row)",
        "reason, attempt, next_in, validity, status (HTTP only)",
    )
    TOKEN_RENEWAL_RECOVERED = (
        "token.renewal_recovered",
        "INFO",
        "a renewal succeeded after more than one failure",
        "failures",
    )
    TOKEN_REFRESH_REFUSED = (
        "token.refresh_refused",
        "INFO",
        "the token endpoint refused a refresh: minting anew",
        "token_id, status",
    )
    TOKEN_INVALIDATED = (
        "token.invalidated",
        "INFO",
        "a resource's 401 dropped a token: it is never handed out again",
        "token_id",
    )
    TOKEN_EXPIRED_UNAVAILABLE = (
        "token.expired_unavailable",
        "DEBUG",
        "a caller could not be served: the token expired, or there is none",
        "reason, had_token, in_flight",
    )
    TOKEN_SERVED_SHORT = (
        "token.served_short",
        "WARNING",
        "a caller's min_validity cannot be met: the freshest token is served (once per token)",
        "token_id, min_validity, validity, lifetime",
    )
    TOKEN_CLOCK_JUMP = (
        "token.clock_jump",
        "WARNING",
        "the wall clock jumped ahead of the monotonic one (a suspend): the token is re-judged",
        "token_id, drift",
    )
    TOKEN_ACCEPTED_LATE = (
        "token.accepted_late",
        "INFO",
        "a resource accepted a young token it had refused (its clock lags)",
        "token_id, age",
    )
    TOKEN_REFUSED_RETURNED = (
        "token.refused_returned",
        "DEBUG",
        "a resource's 401 goes back to the caller (the recovery rules are spent)",
        "reason, sends",
    )
    TOKEN_CALLBACK_FAILED = (
        "token.callback_failed",
        "ERROR",
        "the on_token callback raised (the traceback is attached)",
        "token_id",
    )
    TOKEN_REVOKED = ("token.revoked", "INFO", "the token was revoked on close", "token_id")
    TOKEN_REVOKE_FAILED = (
        "token.revoke_failed",
        "WARNING",
        "revoking the token on close failed",
        "token_id, reason",
    )
    # -- the psToken session (console) -----------------------------------------------------
    SESSION_KEEPALIVE_FAILED = (
        "session.keepalive_failed",
        "WARNING",
        "a psToken keep-alive failed: retried soon",
        "reason, retry_in",
    )
    SESSION_RENEWED = (
        "session.renewed",
        "INFO",
        "a keep-alive brought a new psToken",
        "ps_token_id",
    )
    # -- the fleet's store -----------------------------------------------------------------
    STORE_DEGRADED = (
        "store.degraded",
        "WARNING, then DEBUG",
        "a fleet store failed: the manager renews on its own (WARNING when it starts)",
        "store, reason, first",
    )
    STORE_RECOVERED = (
        "store.recovered",
        "WARNING",
        "the fleet store answers again: tokens are shared again",
        "store",
    )
    STORE_ENTRY_IGNORED = (
        "store.entry_ignored",
        "WARNING",
        "an entry of the store was unusable (once per entry)",
        "reason",
    )
    STORE_ENTRY_DUE = (
        "store.entry_due",
        "DEBUG",
        "the store's token is due for renewal: this manager renews it",
        "token_id",
    )
    STORE_PUBLISH = (
        "store.publish",
        "DEBUG",
        "a token was offered to the store",
        "key, outcome (published, superseded, expired), token_id",
    )
    STORE_LEASE = (
        "store.lease",
        "DEBUG",
        "the store's renewal lease was asked for or given back",
        "key, outcome (taken, held, released, ran_out)",
    )
    STORE_LEASE_WAITED_OUT = (
        "store.lease_waited_out",
        "WARNING",
        "another holder kept the renewal lease too long with nothing published",
        "patience",
    )
    STORE_LEASE_TAKEN_OVER = (
        "store.lease_taken_over",
        "WARNING",
        "a file store's renewal lease was taken over from a stopped or blocked process",
        "holder, late",
    )
    STORE_PUSH_UNAVAILABLE = (
        "store.push_unavailable",
        "INFO or WARNING, then DEBUG",
        "Redis push notifications are unavailable: waiting by polling",
        "where, reason, first",
    )
    STORE_PUSH_RECOVERED = (
        "store.push_recovered",
        "INFO",
        "Redis push notifications are back",
        "where",
    )
    STORE_CLIENT_DROPPED = (
        "store.client_dropped",
        "DEBUG",
        "a Redis client was let go: its close failed, or its event loop was closed",
        "reason",
    )
    # -- the rest --------------------------------------------------------------------------
    HTTP_REQUEST = (
        "http.request",
        "DEBUG",
        "a token endpoint answered",
        "method, path, status, duration",
    )
    HTTP_SESSION_CLOSED = (
        "http.session_closed",
        "DEBUG",
        "the manager closed the aiohttp session it made",
        "",
    )
    MANAGER_CLOSE_TIMEOUT = (
        "manager.close_timeout",
        "WARNING",
        "a SyncTokenManager's close outlasted its bound: cancelled",
        "seconds",
    )
    MANAGER_SCHEDULER_STOPPED = (
        "manager.scheduler_stopped",
        "ERROR",
        "the refresh scheduler crashed (a bug; the traceback is attached)",
        "error",
    )
    DISCOVERY_JWT_WITHOUT_STORE = (
        "discovery.jwt_without_store",
        "WARNING",
        "from_environment found a JWT: the manager is built without the store",
        "source",
    )


# What `logging.Logger.makeRecord` refuses in `extra` (a KeyError at log time), and the
# event's own key.
_RESERVED = frozenset(
    {
        *logging.LogRecord("", logging.NOTSET, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        "event",
    }
)


def fields(event: Event, /, **data: object) -> dict[str, object]:
    """The `extra` of a log record: the event's name and its data fields.

    Raises:
        ValueError: a field that `logging.LogRecord` reserves (`msg`, `args`, `name`, ...):
            caught here, where it is written, not when a record is made at DEBUG one day.
    """
    if not _RESERVED.isdisjoint(data):
        clash = sorted(_RESERVED.intersection(data))
        msg = f"log record fields reserved by logging: {', '.join(clash)}"
        raise ValueError(msg)
    return {"event": event.value, **data}
