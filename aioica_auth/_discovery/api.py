"""Credentials the user already has: the environment and the icav2 CLI's files.

The names and files are those ICA users configure today (ICA-API.md section 7); the first
source found wins, and every step records what it tried, so that "nothing found" can say so.

ICA v2 (`console=False`):

    credential  ICAV2_X_API_KEY (ApiKey); ICAV2_ACCESS_TOKEN (Jwt); the deprecated
                ICA_API_KEY, ICA_USERNAME + ICA_PASSWORD, ICA_PS_TOKEN; `x-api-key` of
                <dir>/config.yaml when it is plaintext; `access-token` of
                <dir>/.session.<first DNS label of the server>.yaml unless it has expired
    base URL    ICAV2_BASE_URL (a full URL); ICAV2_SERVER_URL (a bare host, meaning
                https://<host>/ica/rest); the deprecated ICA_BASE_URL; `server-url` of
                config.yaml (a bare host); else ICA_BASE_URL
    <dir>       $ICAV2_CONFIG_DIR, else $HOME/.icav2

Console v1 (`console=True`):

    credential  ICAV2_X_API_KEY (an Illumina API key works on both platforms);
                ICA_ACCESS_TOKEN (a console JWT, the v1 `ica` CLI's variable); the deprecated
                ICA_* names above; `access-token` of the v1 config file, then of
                <dir>/.session.<region>.yaml unless it has expired
    base URL    ICA_CONSOLE_URL (a full URL); ICA_SERVER_URL (a bare host, meaning
                https://<host>); `server-url` of the config file; else CONSOLE_BASE_URL
    config      $ICA_CONFIG_FILE (the v1 CLI's --config-file), else $HOME/.ica/config.yaml;
                session files beside it

Files are parsed by PyYAML's `safe_load` (plain data only: no tag can construct an object or
run code), and read only when an earlier source did not answer (`files`); the steps
are in `search`. Nothing here puts a secret in a message, a warning or a repr:
sources are named by variable, file and key.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping

import attrs

from .._credentials import Credential, Jwt
from .._errors import DiscoveryError
from .._events import Event, fields
from .._wire.urls import check_base_url
from .files import Note, expired, host_url, private_file_note
from .search import CONSOLE, ICA, Search, home_of

__all__ = [
    "DiscoveredCredentials",
    "Note",
    "credential_source",
    "discover",
    "discover_credentials",
    "environment_credentials",
    "given_jwt_problem",
    "host_url",
    "private_file_note",
]

logger = logging.getLogger("aioica_auth")


@attrs.frozen
class DiscoveredCredentials:
    """What `discover_credentials` found.

    Attributes:
        credential: The credential (its repr shows a fingerprint, never the secret).
        base_url: The API root to use with it.
        source: Where each came from, e.g. "credential: ICAV2_X_API_KEY (environment);
            base URL: server-url in /home/me/.icav2/config.yaml". Never a secret.
        console: Whether this was a search for the console v1 (else ICA v2).
    """

    credential: Credential
    base_url: str
    source: str
    console: bool = False


def discover(
    *,
    console: bool = False,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    base_url: tuple[str, str] | None = None,
    credential: tuple[Credential, str] | None = None,
) -> tuple[DiscoveredCredentials, list[Note]]:
    """Discovery without emitting its warnings: the result and the notes to show.

    `base_url` and `credential` are given ones (a value and its source: an argument, a
    command-line flag), which win over everything discovered.

    Raises:
        DiscoveryError: no credential, an unusable one, or a bad base URL.
    """
    search = Search(
        CONSOLE if console else ICA,
        os.environ if environ is None else environ,
        home_of(os.environ if environ is None else environ, home),
    )
    url, url_source = base_url if base_url is not None else search.base_url()
    try:
        url = str(check_base_url(url, name=f"the base URL from {url_source}"))
    except (TypeError, ValueError) as exc:  # the message names the source, never the URL
        raise DiscoveryError(str(exc)) from None
    found = credential if credential is not None else search.credential(url)
    if found is None:
        raise search.nothing_found()
    source = f"credential: {found[1]}; base URL: {url_source}"
    return DiscoveredCredentials(found[0], url, source, console), search.notes


def _emit(notes: list[Note], stacklevel: int) -> None:
    for note in notes:
        warnings.warn(note.message, note.category, stacklevel=stacklevel + 1)


def discover_credentials(
    *,
    console: bool = False,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> DiscoveredCredentials:
    """The credential and base URL the user already has, as the icav2 CLI would find them.

    The first source found wins: for ICA v2, `ICAV2_X_API_KEY`, `ICAV2_ACCESS_TOKEN`, the
    deprecated `ICA_API_KEY` / `ICA_USERNAME` + `ICA_PASSWORD` / `ICA_PS_TOKEN`, a plaintext
    `x-api-key` in `~/.icav2/config.yaml`, the `access-token` of
    `~/.icav2/.session.<label>.yaml`; the base URL from `ICAV2_BASE_URL`, `ICAV2_SERVER_URL`
    (a bare host), `server-url` in config.yaml, else `ICA_BASE_URL`. The module docstring of
    `aioica_auth._discovery` has the console's order.

    Args:
        console: Search for the console v1 instead of ICA v2.
        environ: The environment to read (default `os.environ`).
        home: The home directory (default `$HOME` of `environ`); `ICAV2_CONFIG_DIR` (ICA v2)
            or `ICA_CONFIG_FILE` (console) override the config location.

    Returns:
        The credential, the base URL and a description of where each came from.

    Raises:
        IcaError: (a `DiscoveryError`) nothing found (the message lists what was tried), an
            encrypted `x-api-key` only, two deprecated credentials at once, a malformed file.

    Warns:
        DeprecationWarning: a deprecated `ICA_*` name was used.
        UserWarning: a file holding the credential is accessible by other users; or an
            encrypted key was passed over for a session token that cannot be renewed.
    """
    found, notes = discover(console=console, environ=environ, home=home)
    _emit(notes, stacklevel=2)
    return found


def credential_source(found: DiscoveredCredentials) -> str:
    """Where `found.credential` came from (`ICAV2_ACCESS_TOKEN (environment)`, ...)."""
    head, _, _ = found.source.removeprefix("credential: ").partition("; base URL: ")
    return head


_GET_A_KEY = "or set ICAV2_X_API_KEY (an API key) so that tokens are minted as they are needed"


def given_jwt_problem(found: DiscoveredCredentials) -> str | None:
    """Why the JWT found (`found.credential` a `Jwt`) cannot be used now, or None.

    The message names where it came from (the variable or file: `.source`) and what to do;
    never the token.
    """
    if not isinstance(found.credential, Jwt):
        return None
    where = credential_source(found)
    why = expired(found.credential.token)
    if why is None:
        return None
    if why == "not a JWT":
        return (
            f"{where} does not hold a JWT (it does not decode as one): set it to the token "
            f"itself, {_GET_A_KEY}"
        )
    when = why.removeprefix("expired at ")
    return (
        f"the JWT in {where} has expired (at {when}), and an expired JWT cannot be renewed: "
        f"export a fresh one (from the icav2 CLI or your token minter), {_GET_A_KEY}"
    )


def environment_credentials(
    *,
    console: bool,
    environ: Mapping[str, str] | None,
    home: str | os.PathLike[str] | None,
    base_url: str | None,
    with_store: bool,
) -> DiscoveredCredentials:
    """What `TokenManager.from_environment` builds its manager from: discover, then check.

    A `base_url` given wins over the discovered one (and names the session file to read).

    A JWT found (`ICAV2_ACCESS_TOKEN`, what wrapica and the UMCCR tools export, or the icav2
    CLI's session file) `with_store`: the manager is to be built without the store, and one
    warning log line says why. A store shares what a credential mints, and a JWT is one
    token that every process of the fleet already has from the same environment: there is
    nothing to share, and refusing would make the same code (`store=...`) fail where the
    environment holds a JWT instead of a key.

    Raises:
        IcaError: (a `DiscoveryError`) as for `discover_credentials`; a JWT that does not
            decode or has expired (naming where it came from); also a console JWT
            (`ICA_ACCESS_TOKEN`), which a console manager cannot renew.
    """
    given = None if base_url is None else (base_url, "the base_url argument")
    found, notes = discover(console=console, environ=environ, home=home, base_url=given)
    _emit(notes, stacklevel=3)
    if not isinstance(found.credential, Jwt):
        return found
    if console:
        msg = (
            f"the console credential found is a JWT ({found.source}): a console manager "
            "cannot renew one; set ICAV2_X_API_KEY (an API key) for it"
        )
        raise DiscoveryError(msg)
    problem = given_jwt_problem(found)
    if problem is not None:
        raise DiscoveryError(problem)
    if with_store:
        logger.warning(
            "from_environment: the credential found is a JWT (%s), so the manager is built "
            "without the store: a store shares the tokens a credential mints, and every "
            "process already has this one token; set ICAV2_X_API_KEY (an API key) to share "
            "minted tokens",
            credential_source(found),
            extra=fields(Event.DISCOVERY_JWT_WITHOUT_STORE, source=credential_source(found)),
        )
    return found
