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
run code), and read only when an earlier source did not answer. Nothing here puts a secret
in a message, a warning or a repr: sources are named by variable, file and key.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import yarl

from ._console import CONSOLE_BASE_URL
from ._credentials import ApiKey, BasicAuth, Credential, Jwt, PsToken
from ._errors import IcaError, InvalidResponseError
from ._http import check_base_url
from ._ica import ICA_BASE_URL
from ._token import Token

if TYPE_CHECKING:
    from ._manager import TokenManager

__all__ = [
    "DiscoveredCredentials",
    "DiscoveryError",
    "Note",
    "discover",
    "discover_credentials",
    "manager_from_environment",
    "private_file_note",
]

_MAX_FILE = 1 << 20  # a config file is a few hundred bytes; past 1 MiB it is not one
_LEGACY_CREDENTIALS = ("ICA_API_KEY", "ICA_USERNAME", "ICA_PASSWORD", "ICA_PS_TOKEN")


class DiscoveryError(IcaError):
    """No usable credential or base URL in the environment or the config files.

    The message lists what was tried, or says what is wrong with what was found; it never
    holds a secret.
    """


@attrs.frozen
class Note:
    """Something the user should hear about what discovery found (a warning to emit)."""

    category: type[Warning]
    message: str


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


@attrs.frozen
class _Platform:
    """The names and files one platform's users configure."""

    name: str
    token_env: str
    base_env: str
    server_env: str
    suffix: str  # what a bare host gets after it
    default: str
    legacy_base_env: str | None
    config_key: str  # the credential key of the config file
    config_credential: Callable[[str], Credential]


_ICA = _Platform(
    name="ICA v2",
    token_env="ICAV2_ACCESS_TOKEN",
    base_env="ICAV2_BASE_URL",
    server_env="ICAV2_SERVER_URL",
    suffix="/ica/rest",
    default=ICA_BASE_URL,
    legacy_base_env="ICA_BASE_URL",
    config_key="x-api-key",
    config_credential=ApiKey,
)
_CONSOLE = _Platform(
    name="console v1",
    token_env="ICA_ACCESS_TOKEN",
    base_env="ICA_CONSOLE_URL",
    server_env="ICA_SERVER_URL",
    suffix="",
    default=CONSOLE_BASE_URL,
    legacy_base_env=None,
    config_key="access-token",
    config_credential=Jwt,
)


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


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """The mapping in a YAML file, or None when there is no such file.

    Raises:
        DiscoveryError: unreadable, too large, not YAML, or not a mapping (the message gives
            the line, never the text: it may hold a key).
    """
    import yaml  # only when a file is really read: `decode` and friends never need it

    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror or type(exc).__name__}"
        raise DiscoveryError(msg) from None
    if len(raw) > _MAX_FILE:
        msg = f"{path} is larger than 1 MiB: not a config file"
        raise DiscoveryError(msg)
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"
        error: DiscoveryError | None = DiscoveryError(f"{path} is not valid YAML{where}")
    else:
        error = None
    if error is not None:  # raised outside the except: yaml's error quotes the text
        raise error
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = f"{path} does not hold a YAML mapping of settings"
        raise DiscoveryError(msg)
    return data


def _credential(make: Callable[[str], Credential], value: str, source: str) -> Credential:
    """`make(value)`, with a refusal (whitespace, a control character) naming `source`."""
    try:
        return make(value)
    except ValueError as exc:  # the message names the field, never the value
        msg = f"{source}: {exc}"
        raise DiscoveryError(msg) from None


def _expired(token: str) -> str | None:
    """Why a JWT from a session file is of no use (not a JWT, expired), or None."""
    try:
        decoded = Token.from_jwt(token)
    except (InvalidResponseError, OverflowError, ValueError):
        return "not a JWT"
    if decoded.expires_at is not None and decoded.expires_at <= dt.datetime.now(dt.UTC):
        return f"expired at {decoded.expires_at.isoformat().replace('+00:00', 'Z')}"
    return None


@attrs.define
class _Search:
    """One discovery: the environment, the files (each read at most once), what was tried."""

    platform: _Platform
    environ: Mapping[str, str]
    home: Path
    tried: list[str] = attrs.Factory(list)
    notes: list[Note] = attrs.Factory(list)
    encrypted: Path | None = None
    _files: dict[Path, dict[str, Any] | None] = attrs.Factory(dict)

    # -- where things are -------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        if self.platform is _CONSOLE:
            custom = self.env("ICA_CONFIG_FILE")
            return Path(custom) if custom else self.home / ".ica" / "config.yaml"
        custom = self.env("ICAV2_CONFIG_DIR")
        return (Path(custom) if custom else self.home / ".icav2") / "config.yaml"

    def env(self, name: str) -> str | None:
        return self.environ.get(name) or None

    def file(self, path: Path) -> dict[str, Any] | None:
        if path not in self._files:
            self._files[path] = _read_yaml(path)
        return self._files[path]

    def setting(self, path: Path, key: str) -> Any:
        data = self.file(path)
        return None if data is None else data.get(key)

    # -- the base URL -----------------------------------------------------------------------

    def base_url(self) -> tuple[str, str]:
        """The base URL and where it came from."""
        platform = self.platform
        if (value := self.env(platform.base_env)) is not None:
            return value, f"{platform.base_env} (environment)"
        if (value := self.env(platform.server_env)) is not None:
            return host_url(value, platform.suffix), f"{platform.server_env} (environment)"
        legacy = platform.legacy_base_env
        if legacy is not None and (value := self.env(legacy)) is not None:
            self.deprecated(legacy, f"set {platform.base_env} instead")
            return value, f"{legacy} (environment, deprecated)"
        server = self.setting(self.config_path, "server-url")
        if isinstance(server, str) and server.strip():
            return host_url(server, platform.suffix), f"server-url in {self.config_path}"
        return platform.default, "the default"

    # -- the credential ---------------------------------------------------------------------

    def credential(self, base_url: str) -> tuple[Credential, str] | None:
        """The first credential found, and where; None when there is none."""
        steps: tuple[Callable[[], tuple[Credential, str] | None], ...] = (
            self.from_key_env,
            self.from_token_env,
            self.from_legacy_env,
            self.from_config,
            lambda: self.from_session(base_url),
        )
        for step in steps:
            found = step()
            if found is not None:
                return found
        return None

    def from_key_env(self) -> tuple[Credential, str] | None:
        return self.from_env("ICAV2_X_API_KEY", ApiKey)

    def from_token_env(self) -> tuple[Credential, str] | None:
        return self.from_env(self.platform.token_env, Jwt)

    def from_env(
        self, name: str, make: Callable[[str], Credential]
    ) -> tuple[Credential, str] | None:
        value = self.env(name)
        if value is None:
            self.tried.append(f"{name} (not set)")
            return None
        source = f"{name} (environment)"
        return _credential(make, value, source), source

    def from_legacy_env(self) -> tuple[Credential, str] | None:
        found = legacy_credential(self.environ)
        if found is None:
            self.tried.append(f"{', '.join(_LEGACY_CREDENTIALS)} (deprecated; not set)")
            return None
        credential, names = found
        self.deprecated(names, _LEGACY_ADVICE[type(credential)])
        return credential, f"{names} (environment, deprecated)"

    def from_config(self) -> tuple[Credential, str] | None:
        path, key = self.config_path, self.platform.config_key
        data = self.file(path)
        value = None if data is None else data.get(key)
        if isinstance(value, bytes):  # `!!binary`: what `icav2 config set` writes
            self.encrypted = path
            self.tried.append(f"{key} in {path} (encrypted by the icav2 CLI)")
            return None
        if not isinstance(value, str) or not value.strip():
            why = "no such file" if data is None else f"no {key}"
            self.tried.append(f"{path} ({why})")
            return None
        source = f"{key} in {path}"
        credential = _credential(self.platform.config_credential, value.strip(), source)
        self.note_permissions(path)
        return credential, source

    def from_session(self, base_url: str) -> tuple[Credential, str] | None:
        label = (yarl.URL(base_url).host or "ica").split(".")[0]
        path = self.config_path.parent / f".session.{label}.yaml"
        data = self.file(path)
        token = None if data is None else data.get("access-token")
        if not isinstance(token, str) or not token.strip():
            self.tried.append(f"{path} ({'no such file' if data is None else 'no access-token'})")
            return None
        why = _expired(token.strip())
        if why is not None:
            self.tried.append(f"access-token in {path} ({why})")
            return None
        source = f"access-token in {path}"
        credential = _credential(Jwt, token.strip(), source)
        self.note_permissions(path)
        if self.encrypted is not None:
            msg = (
                f"using the access-token of {path}: the x-api-key in {self.encrypted} is "
                "encrypted, so this token cannot be renewed once it expires; " + _PASS_THE_KEY
            )
            self.notes.append(Note(UserWarning, msg))
        return credential, source

    # -- notes ------------------------------------------------------------------------------

    def deprecated(self, names: str, advice: str) -> None:
        msg = f"{names}: deprecated, and read for this release only; {advice}"
        self.notes.append(Note(DeprecationWarning, msg))

    def note_permissions(self, path: Path) -> None:
        note = private_file_note(path)
        if note is not None:
            self.notes.append(note)

    def nothing_found(self) -> DiscoveryError:
        if self.encrypted is not None:
            msg = (
                f"the x-api-key in {self.encrypted} is encrypted: the icav2 CLI "
                "(`icav2 config set`) encrypts it, and no other tool can read it; " + _PASS_THE_KEY
            )
            return DiscoveryError(msg)
        msg = (
            f"no {self.platform.name} credentials found; tried: {'; '.join(self.tried)}. "
            "Set ICAV2_X_API_KEY (an API key) or "
            f"{self.platform.token_env} (a JWT), or put {self.platform.config_key} in "
            f"{self.config_path}"
        )
        return DiscoveryError(msg)


_PASS_THE_KEY = (
    "pass the key instead: export ICAV2_X_API_KEY from your secrets manager, or put it in "
    "a file readable only by you and run `aioica-auth token --x-api-key-file PATH`"
)
_LEGACY_ADVICE: dict[type, str] = {
    ApiKey: "set ICAV2_X_API_KEY instead",
    BasicAuth: "set ICAV2_X_API_KEY (an API key) instead, or pass BasicAuth(...) in code",
    PsToken: "set ICAV2_X_API_KEY (an API key) instead, or pass PsToken(...) in code",
}


def legacy_credential(environ: Mapping[str, str]) -> tuple[Credential, str] | None:
    """The one credential of the deprecated ICA_* names, and the names it came from.

    Raises:
        DiscoveryError: more than one kind set, or half of a username and password.
    """
    values = {name: environ.get(name) or None for name in _LEGACY_CREDENTIALS}
    key, user, password, ps = values.values()
    present = [n for n in ("ICA_API_KEY", "ICA_USERNAME", "ICA_PS_TOKEN") if values[n]]
    if password is not None and user is None:
        present.append("ICA_PASSWORD")
    if len(present) > 1:
        both = "both" if len(present) == 2 else "all"
        msg = f"{' and '.join(present)} are {both} set: keep one credential in the environment"
        raise DiscoveryError(msg)
    if key is not None:
        return _credential(ApiKey, key, "ICA_API_KEY"), "ICA_API_KEY"
    if ps is not None:
        return _credential(PsToken, ps, "ICA_PS_TOKEN"), "ICA_PS_TOKEN"
    if user is None and password is None:
        return None
    if password is None:
        msg = "ICA_USERNAME is set but ICA_PASSWORD is not"
        raise DiscoveryError(msg)
    if user is None:
        msg = "ICA_PASSWORD is set but ICA_USERNAME is not"
        raise DiscoveryError(msg)
    names = "ICA_USERNAME + ICA_PASSWORD"
    return _credential(lambda p: BasicAuth(user, p), password, names), names


def _home(environ: Mapping[str, str], home: str | os.PathLike[str] | None) -> Path:
    if home is not None:
        return Path(home)
    value = environ.get("HOME")
    return Path(value) if value else Path.home()


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
    search = _Search(
        _CONSOLE if console else _ICA,
        os.environ if environ is None else environ,
        _home(os.environ if environ is None else environ, home),
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


def manager_from_environment(
    cls: type[TokenManager],
    *,
    console: bool = False,
    environ: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> TokenManager:
    """The body of `TokenManager.from_environment`: discover, then `for_ica`/`for_console`.

    A `base_url` keyword wins over the discovered one (and names the session file to read).

    Raises:
        IcaError: (a `DiscoveryError`) as for `discover_credentials`; also a console JWT
            (`ICA_ACCESS_TOKEN`), which a console manager cannot renew.
    """
    given = kwargs.pop("base_url", None)
    base_url = None if given is None else (given, "the base_url argument")
    found, notes = discover(console=console, environ=environ, home=home, base_url=base_url)
    _emit(notes, stacklevel=3)
    if not console:
        return cls.for_ica(found.credential, base_url=found.base_url, **kwargs)
    if isinstance(found.credential, Jwt):
        msg = (
            f"the console credential found is a JWT ({found.source}): a console manager "
            "cannot renew one; set ICAV2_X_API_KEY (an API key) for it"
        )
        raise DiscoveryError(msg)
    return cls.for_console(found.credential, base_url=found.base_url, **kwargs)
