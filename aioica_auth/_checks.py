"""What a caller-supplied piece of text must look like before it goes on the wire.

One set of rules for every text option (`tenant`, the console's `client_id`, ...) and every
secret (the credentials use `text_problem` with their own names). A message names the argument
and what is wrong, never the value: the same checks guard API keys and passwords.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["MAX_TIMEOUT", "check_text", "is_loopback", "text_problem"]

MAX_TIMEOUT = 86_400.0
"""The longest timeout accepted, in seconds (a day): anything longer is a slip of units."""

_LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
_LOOPBACK_V6 = ipaddress.IPv6Address("::1")

# Unicode category Cc: C0 controls (tab, CR, LF, NUL, ...), DEL and the C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# A lone surrogate (from a bad decode with surrogateescape) cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\\ud800-\\udfff]")


def text_problem(value: str) -> str | None:
    """What is wrong with `value` as one line of text, as a phrase after its name, or None.

    The phrase never quotes the value.
    """
    if not value.strip():
        return "must not be empty or whitespace"
    if value != value.strip() or _CONTROL.search(value):
        return "has leading or trailing whitespace or a control character (a copy-paste slip?)"
    if _SURROGATE.search(value):
        return "is not valid Unicode text: it cannot be encoded as UTF-8 (a lone surrogate)"
    return None


def check_text(value: object, name: str) -> str:
    """`value` if it is usable text for the argument `name`.

    Args:
        value: What the caller passed.
        name: The argument's name, for the message (`"tenant"`, `"client_id"`, ...).

    Returns:
        `value`, unchanged.

    Raises:
        TypeError: `value` is not a `str` (the message names `name` and the type).
        ValueError: `value` is empty or blank, has surrounding whitespace, a control
            character anywhere (tab, CR, LF, NUL, DEL, ...), or cannot be encoded as UTF-8.
            The message names `name`, never the value.
    """
    if not isinstance(value, str):
        msg = f"{name} must be a str, not {type(value).__name__}"
        raise TypeError(msg)
    problem = text_problem(value)
    if problem is not None:
        msg = f"{name} {problem}"
        raise ValueError(msg)
    return value


def is_loopback(host: str | None) -> bool:
    """Whether `host` is loopback without asking a resolver: `localhost` itself, an address
    in 127.0.0.0/8, or `::1` (bracketed or not; any letter case).

    Nothing else counts, so that no DNS answer decides where a plain-http bearer goes: not a
    subdomain of localhost (`x.localhost`, which RFC 6761 only asks resolvers to map to
    loopback), not `localhost.` (a name a resolver may look up), not an IPv4-mapped or scoped
    IPv6 address, not a short form such as `127.1`.
    """
    if not host:
        return False
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return address in _LOOPBACK_V4
    return address == _LOOPBACK_V6 and address.scope_id is None
