"""One discovery, step by step: the platforms' names and files, and what each step tried.

`_discovery` holds the public API and the order's summary; this module does the searching.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import yarl

from .._credentials import ApiKey, BasicAuth, Credential, Jwt, PsToken
from .._errors import DiscoveryError
from .._wire.console import CONSOLE_BASE_URL
from .._wire.ica import ICA_BASE_URL
from .files import Note, expired, host_url, private_file_note, read_yaml

__all__ = ["CONSOLE", "ICA", "Search", "home_of", "legacy_credential"]

_LEGACY_CREDENTIALS = ("ICA_API_KEY", "ICA_USERNAME", "ICA_PASSWORD", "ICA_PS_TOKEN")


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


ICA = _Platform(
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
CONSOLE = _Platform(
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


def _credential(make: Callable[[str], Credential], value: str, source: str) -> Credential:
    """`make(value)`, with a refusal (whitespace, a control character) naming `source`."""
    try:
        return make(value)
    except ValueError as exc:  # the message names the field, never the value
        msg = f"{source}: {exc}"
        raise DiscoveryError(msg) from None


@attrs.define
class Search:
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
        if self.platform is CONSOLE:
            custom = self.env("ICA_CONFIG_FILE")
            return Path(custom) if custom else self.home / ".ica" / "config.yaml"
        custom = self.env("ICAV2_CONFIG_DIR")
        return (Path(custom) if custom else self.home / ".icav2") / "config.yaml"

    def env(self, name: str) -> str | None:
        return self.environ.get(name) or None

    def file(self, path: Path) -> dict[str, Any] | None:
        if path not in self._files:
            self._files[path] = read_yaml(path)
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
        why = expired(token.strip())
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


def home_of(environ: Mapping[str, str], home: str | os.PathLike[str] | None) -> Path:
    if home is not None:
        return Path(home)
    value = environ.get("HOME")
    return Path(value) if value else Path.home()
