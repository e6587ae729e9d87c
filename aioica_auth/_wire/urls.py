"""Where token requests go: the base URL's rules, the session's, and `.netrc`'s credential.

A base URL must be https (plain http on loopback only: `_checks.is_loopback`), absolute, with
a host and no query, fragment or credentials; it is checked once, where it is given, with a
message naming the argument and never echoing a userinfo part.
"""

from __future__ import annotations

import ipaddress
import re

import aiohttp
import yarl
from aiohttp.helpers import basicauth_from_netrc, netrc_from_env

from .._checks import is_loopback

__all__ = ["check_base_url", "check_session", "netrc_authorization"]


_URL_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+", re.ASCII)


def check_base_url(base_url: str | yarl.URL, *, name: str = "base_url") -> yarl.URL:
    """Validate a base URL and return it without a trailing slash.

    Messages name the argument (`name`) and never echo the URL: it may carry credentials.

    Raises:
        TypeError: not a `str` or `yarl.URL`.
        ValueError: not an absolute http(s) URL, whitespace or a control character anywhere,
            a malformed host or port, a query, fragment or userinfo, or plain http on a host
            that is not loopback (a bearer token must not cross a network in clear).
    """
    url = _parse_url(base_url, name)
    if url.scheme not in {"http", "https"} or not url.host:
        msg = f"{name} must be an absolute http(s) URL such as https://ica.illumina.com/ica/rest"
        raise ValueError(msg)
    if url.scheme == "http" and not is_loopback(url.host):
        msg = (
            f"{name} uses plain http on a non-loopback host; use https (http is only for 127.0.0.1)"
        )
        raise ValueError(msg)
    if url.query_string or url.fragment:
        msg = f"{name} must not have a query string or fragment"
        raise ValueError(msg)
    if url.user or url.password:
        msg = f"{name} must not carry credentials"
        raise ValueError(msg)
    return url.with_path(url.path.rstrip("/"))


def _parse_url(base_url: object, name: str) -> yarl.URL:
    """`base_url` parsed, with yarl's own errors (which may quote it) turned into ours."""
    if not isinstance(base_url, str | yarl.URL):
        msg = f"{name} must be a str or yarl.URL, not {type(base_url).__name__}"
        raise TypeError(msg)
    text = str(base_url)
    if _URL_SPACE_OR_CONTROL.search(text):
        msg = f"{name} has whitespace or a control character in it (a copy-paste slip?)"
        raise ValueError(msg)
    url = _yarl_url(text)
    if url is None:
        msg = f"{name} is not a valid URL (check the host and the port)"
        raise ValueError(msg)
    host = url.raw_host or ""
    if host and not (_HOST_NAME.fullmatch(host) or _is_ip(host)):
        msg = f"{name} has an invalid host name"
        raise ValueError(msg)
    if url.explicit_port == 0:
        msg = f"{name} has port 0; a port is 1 to 65535"
        raise ValueError(msg)
    return url


def _yarl_url(text: str) -> yarl.URL | None:
    """The parsed URL, or None when yarl refuses it (its messages can quote the input)."""
    try:
        url = yarl.URL(text)
        # yarl decodes the host and port lazily: make it fail here, not later.
        _ = (url.raw_host, url.host, url.port, url.path)
    except (ValueError, TypeError):  # UnicodeError (IDNA) is a ValueError
        return None
    return url


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_session(session: object) -> None:
    """Refuse what cannot carry token requests.

    Raises:
        TypeError: `session` is not an `aiohttp.ClientSession`.
        ValueError: `session` was built with `auth=` (aiohttp refuses that beside the
            `Authorization` a token request sets).
    """
    if not isinstance(session, aiohttp.ClientSession):
        msg = f"session must be an aiohttp.ClientSession, not {type(session).__name__}"
        raise TypeError(msg)
    if session.auth is not None:
        msg = (
            "session was built with auth=: aiohttp then refuses every request that sets "
            "its own Authorization, as token requests do. Pass a session without auth= "
            "(credentials for the token endpoint go in the credential argument)"
        )
        raise ValueError(msg)


def netrc_authorization(host: str | None) -> str | None:
    """The Basic `Authorization` aiohttp takes from `.netrc` (`$NETRC`, `~/.netrc`) for
    `host` on a session with trust_env=True, or None (blocking: call it in a thread)."""
    if host is None:
        return None
    try:
        return basicauth_from_netrc(netrc_from_env(), host).encode()
    except LookupError:
        return None
