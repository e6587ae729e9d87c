"""The files of discovery: YAML read safely, a bare host as a URL, permissions, expiry.

`read_yaml` parses with PyYAML's `safe_load` (plain data only: no tag constructs an object or
runs code) and never lets the text of a file into a message: it may hold a key.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path
from typing import Any

import attrs
import yarl

from .._errors import DiscoveryError, InvalidResponseError
from .._token import Token

__all__ = ["Note", "expired", "host_url", "private_file_note", "read_yaml"]

_MAX_FILE = 1 << 20  # a config file is a few hundred bytes; past 1 MiB it is not one


@attrs.frozen
class Note:
    """Something the user should hear about what discovery found (a warning to emit)."""

    category: type[Warning]
    message: str


def host_url(value: str, suffix: str) -> str:
    """A `server-url` as a base URL: a bare host gets https:// and `suffix` (/ica/rest for
    ICA v2); a URL with a scheme is kept, given `suffix` when it has no path."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        return f"https://{value}{suffix}"
    url = yarl.URL(value) if value else None
    if url is not None and url.path in ("", "/"):
        return value + suffix
    return value


def private_file_note(path: Path) -> Note | None:
    """A warning when `path`, which holds a credential, is open to other users (as ssh warns)."""
    if os.name != "posix":
        return None
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    msg = (
        f"{path} holds a credential and is accessible by other users (mode {mode:04o}); "
        f"restrict it: chmod 600 {path}"
    )
    return Note(UserWarning, msg)


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, for a message."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _read_regular(path: Path) -> bytes | None:
    """At most `_MAX_FILE + 1` bytes of `path`, or None when there is no such file.

    Opened without blocking (`O_NONBLOCK`: a FIFO with no writer would block `open` and
    `read` forever), then refused unless `fstat` says it is a regular file, so a FIFO, a
    device or a directory never hangs discovery.

    Raises:
        DiscoveryError: not a regular file, or unreadable.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
        raise DiscoveryError(msg) from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        msg = (
            f"{path} is {_kind(mode)}, not a regular file: settings are read from "
            "regular files only (never waited on)"
        )
        raise DiscoveryError(msg)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        try:
            return handle.read(_MAX_FILE + 1)
        except OSError as exc:
            msg = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
            raise DiscoveryError(msg) from None


def read_yaml(path: Path) -> dict[str, Any] | None:
    """The mapping in a YAML file, or None when there is no such file.

    Raises:
        DiscoveryError: not a regular file (a FIFO, a device, a directory), unreadable, too
            large, not YAML, nested too deeply, a value PyYAML cannot construct, or not a
            mapping (the message gives the line, never the text: it may hold a key).
    """
    import yaml  # only when a file is really read: `decode` and friends never need it

    raw = _read_regular(path)
    if raw is None:
        return None
    if len(raw) > _MAX_FILE:
        msg = f"{path} is larger than 1 MiB: not a config file"
        raise DiscoveryError(msg)
    error: DiscoveryError | None = None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
        error = DiscoveryError(f"{path} is not valid YAML{where}")
    except RecursionError:
        error = DiscoveryError(f"{path} is nested too deeply to be a config file")
    except Exception as exc:  # noqa: BLE001 - a constructor's ValueError may quote the text
        # e.g. `x-api-key: !!float <key>`, or a date such as 2001-13-14
        why = type(exc).__name__
        error = DiscoveryError(f"{path} holds a value that cannot be read as YAML data ({why})")
    if error is not None:  # raised outside the except: yaml's error quotes the text
        raise error
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"{path} does not hold a YAML mapping of settings"
        raise DiscoveryError(msg)
    return data


def expired(token: str) -> str | None:
    """Why a JWT from a session file is of no use (not a JWT, expired), or None."""
    try:
        decoded = Token.from_jwt(token)
    except (InvalidResponseError, OverflowError, ValueError):
        return "not a JWT"
    if decoded.expires_at is not None and decoded.expires_at <= dt.datetime.now(dt.UTC):
        return f"expired at {decoded.expires_at.isoformat().replace('+00:00', 'Z')}"
    return None
