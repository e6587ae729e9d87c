"""Credential discovery: each step of the order, the base URL, the files, and the errors.

Every test gives `environ` and `home` explicitly (a `tmp_path`), so nothing of the
developer's own environment or ~/.icav2 is read.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from aioica_auth import (
    CONSOLE_BASE_URL,
    ICA_BASE_URL,
    ApiKey,
    BasicAuth,
    DiscoveredCredentials,
    IcaError,
    IcaTokenApi,
    Jwt,
    PsToken,
    TokenManager,
    discover_credentials,
)
from aioica_auth._errors import DiscoveryError
from aioica_auth.testing import LocalIcaServer, make_jwt

from ..support import find_secret

KEY = "k3y-from-the-environment-0123456789"
FILE_KEY = "k3y-from-config-yaml-0123456789"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    """`text` in `path` (parents made), with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def config(home: Path, text: str, mode: int = 0o600) -> Path:
    """An icav2 config.yaml under `home`."""
    return write(home / ".icav2" / "config.yaml", text, mode)


def found(environ: dict[str, str], home: Path, *, console: bool = False) -> DiscoveredCredentials:
    return discover_credentials(console=console, environ=environ, home=home)


# -- the order, one step at a time -----------------------------------------------------------


def test_icav2_x_api_key_comes_first(tmp_path: Path) -> None:
    """ICAV2_X_API_KEY wins over every later source, files unread."""
    config(tmp_path, f"x-api-key: {FILE_KEY}\nserver-url: [unparsable\n")
    environ = {
        "ICAV2_X_API_KEY": KEY,
        "ICAV2_ACCESS_TOKEN": make_jwt(),
        "ICAV2_BASE_URL": ICA_BASE_URL,
    }
    result = found(environ, tmp_path)
    assert result.credential == ApiKey(KEY)
    assert result.base_url == ICA_BASE_URL
    assert result.source == (
        "credential: ICAV2_X_API_KEY (environment); base URL: ICAV2_BASE_URL (environment)"
    )
    assert not result.console


def test_icav2_access_token_is_a_jwt(tmp_path: Path) -> None:
    """ICAV2_ACCESS_TOKEN comes next, as a `Jwt` (refreshed while ICA allows)."""
    jwt_ = make_jwt()
    config(tmp_path, f"x-api-key: {FILE_KEY}\n")
    result = found({"ICAV2_ACCESS_TOKEN": jwt_}, tmp_path)
    assert result.credential == Jwt(jwt_)
    assert result.source.startswith("credential: ICAV2_ACCESS_TOKEN (environment)")


def test_config_yaml_plaintext_key(tmp_path: Path) -> None:
    """A plaintext x-api-key in ~/.icav2/config.yaml, its server-url a bare host."""
    path = config(
        tmp_path, f'access-token: ""\nserver-url: use1.ica.illumina.com\nx-api-key: {FILE_KEY}\n'
    )
    result = found({}, tmp_path)
    assert result.credential == ApiKey(FILE_KEY)
    assert result.base_url == "https://use1.ica.illumina.com/ica/rest"
    assert result.source == f"credential: x-api-key in {path}; base URL: server-url in {path}"


def test_session_file_access_token(tmp_path: Path) -> None:
    """Then ~/.icav2/.session.<first DNS label of the server>.yaml's access-token."""
    jwt_ = make_jwt(lifetime=3600)
    config(tmp_path, "server-url: ica.illumina.com\n")
    path = write(
        tmp_path / ".icav2" / ".session.ica.yaml", f"access-token: {jwt_}\nproject-id: p1\n"
    )
    result = found({}, tmp_path)
    assert result.credential == Jwt(jwt_)
    assert result.source.startswith(f"credential: access-token in {path};")


def test_session_file_follows_the_server(tmp_path: Path) -> None:
    """The session file's label is the first DNS label of the server in use."""
    jwt_ = make_jwt(lifetime=3600)
    write(tmp_path / ".icav2" / ".session.ica.yaml", f"access-token: {make_jwt()}\n")
    write(tmp_path / ".icav2" / ".session.use1.yaml", f"access-token: {jwt_}\n")
    result = found({"ICAV2_SERVER_URL": "use1.ica.illumina.com"}, tmp_path)
    assert result.credential == Jwt(jwt_)


def test_expired_session_token_is_passed_over(tmp_path: Path) -> None:
    """An expired session token is no credential: nothing found, and the error says why."""
    write(tmp_path / ".icav2" / ".session.ica.yaml", f"access-token: {make_jwt(issued_at=1e9)}\n")
    with pytest.raises(
        DiscoveryError, match=r"access-token in .*\.session\.ica\.yaml \(expired at 2001"
    ):
        found({}, tmp_path)


def test_env_before_files_and_files_in_order(tmp_path: Path) -> None:
    """The full order: key env, token env, config key, session token; each removal
    reveals the next."""
    jwt_env, jwt_session = make_jwt(), make_jwt()
    config(tmp_path, f"x-api-key: {FILE_KEY}\n")
    write(tmp_path / ".icav2" / ".session.ica.yaml", f"access-token: {jwt_session}\n")
    environ = {"ICAV2_X_API_KEY": KEY, "ICAV2_ACCESS_TOKEN": jwt_env}
    seen = []
    for _ in range(4):
        seen.append(found(environ, tmp_path).credential)
        if environ:
            environ.pop(next(iter(environ)))
        else:
            config(tmp_path, "colormode: none\n")
    assert seen == [ApiKey(KEY), Jwt(jwt_env), ApiKey(FILE_KEY), Jwt(jwt_session)]


# -- the base URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "file", "url", "source"),
    [
        (
            {"ICAV2_BASE_URL": "https://eu.example.org/ica/rest/"},
            "",
            "https://eu.example.org/ica/rest",
            "ICAV2_BASE_URL",
        ),
        (
            {"ICAV2_SERVER_URL": "ica.illumina.com"},
            "",
            "https://ica.illumina.com/ica/rest",
            "ICAV2_SERVER_URL",
        ),
        (
            {"ICAV2_SERVER_URL": "https://ica.example.org"},
            "",
            "https://ica.example.org/ica/rest",
            "ICAV2_SERVER_URL",
        ),
        (
            {
                "ICAV2_SERVER_URL": "ica.example.org",
                "ICAV2_BASE_URL": "https://b.example.org/ica/rest",
            },
            "",
            "https://b.example.org/ica/rest",
            "ICAV2_BASE_URL",
        ),
        (
            {},
            "server-url: stage.ica.illumina.com\n",
            "https://stage.ica.illumina.com/ica/rest",
            "server-url in",
        ),
        (
            {"ICAV2_SERVER_URL": "env.example.org"},
            "server-url: file.example.org\n",
            "https://env.example.org/ica/rest",
            "ICAV2_SERVER_URL",
        ),
        ({}, "colormode: none\n", ICA_BASE_URL, "the default"),
        ({}, "", ICA_BASE_URL, "the default"),
    ],
)
def test_base_url_order(
    environ: dict[str, str], file: str, url: str, source: str, tmp_path: Path
) -> None:
    """ICAV2_BASE_URL (full), ICAV2_SERVER_URL (bare host: /ica/rest added), the config's
    server-url (the same), else the default."""
    if file:
        config(tmp_path, file)
    result = found({"ICAV2_X_API_KEY": KEY, **environ}, tmp_path)
    assert result.base_url == url
    assert result.source.split("base URL: ")[1].startswith(source)


def test_bad_base_url_names_its_source_not_its_value(tmp_path: Path) -> None:
    """A plain-http base URL is refused naming where it came from, never echoing it."""
    environ = {"ICAV2_X_API_KEY": KEY, "ICAV2_BASE_URL": "http://user:pw@ica.example.org/x"}
    with pytest.raises(DiscoveryError, match="the base URL from ICAV2_BASE_URL") as info:
        found(environ, tmp_path)
    assert "pw@" not in str(info.value)


# -- the home and the config directory -------------------------------------------------------


def test_home_from_environ(tmp_path: Path) -> None:
    """Without `home`, the HOME of `environ` is where ~/.icav2 is."""
    config(tmp_path, f"x-api-key: {FILE_KEY}\n")
    result = discover_credentials(environ={"HOME": str(tmp_path)})
    assert result.credential == ApiKey(FILE_KEY)


def test_config_dir_override(tmp_path: Path) -> None:
    """ICAV2_CONFIG_DIR replaces ~/.icav2, session files included."""
    other = tmp_path / "elsewhere"
    jwt_ = make_jwt()
    write(other / ".session.ica.yaml", f"access-token: {jwt_}\n")
    config(tmp_path / "home", f"x-api-key: {FILE_KEY}\n")
    result = found({"ICAV2_CONFIG_DIR": str(other)}, tmp_path / "home")
    assert result.credential == Jwt(jwt_)
    assert str(other) in result.source


# -- what the files may hold -----------------------------------------------------------------


def test_encrypted_key_is_one_clear_error(tmp_path: Path) -> None:
    """`x-api-key: !!binary ...` (what `icav2 config set` writes): one error saying the icav2
    CLI encrypts it and how to pass the key instead."""
    config(tmp_path, "server-url: ica.illumina.com\nx-api-key: !!binary aGVsbG8gd29ybGQ=\n")
    with pytest.raises(DiscoveryError) as info:
        found({}, tmp_path)
    message = str(info.value)
    assert "is encrypted: the icav2 CLI (`icav2 config set`) encrypts it" in message
    assert "export ICAV2_X_API_KEY" in message
    assert "--x-api-key-file PATH" in message
    assert "tried" not in message


def test_encrypted_key_then_session_token_warns(tmp_path: Path) -> None:
    """With an encrypted key, a valid session token is used, with a warning that it cannot
    be renewed."""
    jwt_ = make_jwt()
    config(tmp_path, "x-api-key: !!binary aGVsbG8gd29ybGQ=\n")
    write(tmp_path / ".icav2" / ".session.ica.yaml", f"access-token: {jwt_}\n")
    with pytest.warns(UserWarning, match="cannot be renewed once it expires"):
        result = found({}, tmp_path)
    assert result.credential == Jwt(jwt_)


def test_yaml_is_never_executed(tmp_path: Path) -> None:
    """A tag that would construct an object under an unsafe loader is refused (safe_load)."""
    marker = tmp_path / "ran"
    config(tmp_path, f"x-api-key: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(DiscoveryError, match=r"config\.yaml is not valid YAML \(line 1"):
        found({}, tmp_path)
    assert not marker.exists()


def test_malformed_yaml_names_the_line_not_the_text(tmp_path: Path) -> None:
    """A broken file: the error gives the line and column, never the text (it may hold a key)."""
    config(tmp_path, f"server-url: ica.illumina.com\nx-api-key: '{FILE_KEY}\n  : [\n")
    with pytest.raises(DiscoveryError, match=r"not valid YAML \(line \d+, column \d+\)") as info:
        found({}, tmp_path)
    assert FILE_KEY not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or FILE_KEY not in str(info.value.__context__)


@pytest.mark.parametrize("text", ["- a list\n- of things\n", "just a string\n"])
def test_config_that_is_not_a_mapping(text: str, tmp_path: Path) -> None:
    """A config file that is valid YAML but no mapping of settings is an error."""
    config(tmp_path, text)
    with pytest.raises(DiscoveryError, match="does not hold a YAML mapping"):
        found({}, tmp_path)


def test_empty_config_file_is_no_settings(tmp_path: Path) -> None:
    """An empty config.yaml holds nothing: discovery goes on to the session file."""
    jwt_ = make_jwt()
    config(tmp_path, "")
    write(tmp_path / ".icav2" / ".session.ica.yaml", f"access-token: {jwt_}\n")
    assert found({}, tmp_path).credential == Jwt(jwt_)


def test_unreadable_config_file(tmp_path: Path) -> None:
    """A config.yaml that cannot be read is an error naming the file and the reason (here
    ICAV2_CONFIG_DIR is a file; a directory at config.yaml is in the test after this one)."""
    not_a_dir = write(tmp_path / "not-a-dir", "")
    with pytest.raises(DiscoveryError, match=r"cannot read .*config\.yaml: Not a directory"):
        found({"ICAV2_CONFIG_DIR": str(not_a_dir)}, tmp_path)


def test_config_directory_is_refused(tmp_path: Path) -> None:
    """A directory where config.yaml should be: refused, saying what it is."""
    (tmp_path / ".icav2" / "config.yaml").mkdir(parents=True)
    with pytest.raises(DiscoveryError, match=r"config\.yaml is a directory, not a regular file"):
        found({}, tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_config_open_to_others_warns_as_ssh_does(mode: int, tmp_path: Path) -> None:
    """A config file holding the key that others can read (or write) gets a warning saying
    how to fix it; the key is still used, and never shown."""
    path = config(tmp_path, f"x-api-key: {FILE_KEY}\n", mode)
    with pytest.warns(UserWarning, match="accessible by other users") as record:
        result = found({}, tmp_path)
    assert result.credential == ApiKey(FILE_KEY)
    message = str(record[0].message)
    assert f"mode {stat.S_IMODE(mode):04o}" in message
    assert f"chmod 600 {path}" in message
    assert FILE_KEY not in message


def test_private_config_does_not_warn(tmp_path: Path) -> None:
    """A 0600 config file is used without a warning (filterwarnings = error proves it)."""
    config(tmp_path, f"x-api-key: {FILE_KEY}\n", 0o600)
    assert found({}, tmp_path).credential == ApiKey(FILE_KEY)


# -- nothing found ---------------------------------------------------------------------------


def test_nothing_found_lists_what_was_tried(tmp_path: Path) -> None:
    """Nothing anywhere: one IcaError listing every source in order, and what to set."""
    config(tmp_path, "server-url: ica.illumina.com\n")
    with pytest.raises(IcaError) as info:
        found({}, tmp_path)
    message = str(info.value)
    icav2 = tmp_path / ".icav2"
    tried = [
        "ICAV2_X_API_KEY (not set)",
        "ICAV2_ACCESS_TOKEN (not set)",
        "ICA_API_KEY, ICA_USERNAME, ICA_PASSWORD, ICA_PS_TOKEN (deprecated; not set)",
        f"{icav2 / 'config.yaml'} (no x-api-key)",
        f"{icav2 / '.session.ica.yaml'} (no such file)",
    ]
    positions = [message.index(t) for t in tried]
    assert positions == sorted(positions)
    assert message.startswith("no ICA v2 credentials found; tried: ")
    assert "Set ICAV2_X_API_KEY" in message


# -- the deprecated names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "credential", "names"),
    [
        ({"ICA_API_KEY": KEY}, ApiKey(KEY), "ICA_API_KEY"),
        (
            {"ICA_USERNAME": "me@example.org", "ICA_PASSWORD": "pw-0123"},
            BasicAuth("me@example.org", "pw-0123"),
            "ICA_USERNAME + ICA_PASSWORD",
        ),
        ({"ICA_PS_TOKEN": "ps.0123456789"}, PsToken("ps.0123456789"), "ICA_PS_TOKEN"),
    ],
)
def test_deprecated_names_still_work(
    environ: dict[str, str], credential: object, names: str, tmp_path: Path
) -> None:
    """The old ICA_* names keep working for this release, with a DeprecationWarning that
    says what to use instead; the new names win over them."""
    with pytest.warns(DeprecationWarning, match=f"{re.escape(names)}: deprecated.*ICAV2_X_API_KEY"):
        result = found(environ, tmp_path)
    assert result.credential == credential
    assert result.source.startswith(f"credential: {names} (environment, deprecated)")
    assert found({**environ, "ICAV2_X_API_KEY": KEY}, tmp_path).credential == ApiKey(KEY)


def test_deprecated_base_url_still_works(tmp_path: Path) -> None:
    """ICA_BASE_URL still sets the ICA v2 root, with a DeprecationWarning naming ICAV2_BASE_URL."""
    environ = {"ICAV2_X_API_KEY": KEY, "ICA_BASE_URL": "https://old.example.org/ica/rest"}
    with pytest.warns(DeprecationWarning, match="ICA_BASE_URL: deprecated.*ICAV2_BASE_URL"):
        result = found(environ, tmp_path)
    assert result.base_url == "https://old.example.org/ica/rest"


def test_deprecated_names_before_files(tmp_path: Path) -> None:
    """An old variable still wins over a config file, as it did before files were read."""
    config(tmp_path, f"x-api-key: {FILE_KEY}\n")
    with pytest.warns(DeprecationWarning, match="ICA_API_KEY: deprecated"):
        assert found({"ICA_API_KEY": KEY}, tmp_path).credential == ApiKey(KEY)


def test_deprecation_warning_points_at_the_caller(tmp_path: Path) -> None:
    """The warning is attributed to the code that asked, not to aioica_auth's internals."""
    with pytest.warns(DeprecationWarning, match="ICA_API_KEY: deprecated") as record:
        found({"ICA_API_KEY": KEY}, tmp_path)
    assert record[0].filename == __file__


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"ICA_API_KEY": KEY, "ICA_PS_TOKEN": "ps.0123456789"},
            "ICA_API_KEY and ICA_PS_TOKEN are both set",
        ),
        ({"ICA_USERNAME": "me@example.org"}, "ICA_USERNAME is set but ICA_PASSWORD is not"),
        ({"ICA_PASSWORD": "pw-0123"}, "ICA_PASSWORD is set but ICA_USERNAME is not"),
        ({"ICA_API_KEY": KEY + " "}, "ICA_API_KEY: ApiKey.key"),
    ],
)
def test_deprecated_names_ambiguous(environ: dict[str, str], message: str, tmp_path: Path) -> None:
    """Two old credentials at once, or half of one, are refused as before, naming no secret."""
    with pytest.raises(DiscoveryError, match=message) as info:
        found(environ, tmp_path)
    assert KEY not in str(info.value)
    assert "pw-0123" not in str(info.value)


# -- the console v1 --------------------------------------------------------------------------


def test_console_order(tmp_path: Path) -> None:
    """Console: ICAV2_X_API_KEY, then ICA_ACCESS_TOKEN (a console JWT), then ~/.ica/."""
    jwt_env, jwt_config, jwt_session = make_jwt(), make_jwt(), make_jwt()
    ica = tmp_path / ".ica"
    write(
        ica / "config.yaml", f"server-url: use1.platform.illumina.com\naccess-token: {jwt_config}\n"
    )
    write(ica / ".session.use1.yaml", f"access-token: {jwt_session}\n")
    environ = {"ICAV2_X_API_KEY": KEY, "ICA_ACCESS_TOKEN": jwt_env}
    first = found(environ, tmp_path, console=True)
    assert first.credential == ApiKey(KEY)
    assert first.base_url == "https://use1.platform.illumina.com"
    assert first.console
    assert found({"ICA_ACCESS_TOKEN": jwt_env}, tmp_path, console=True).credential == Jwt(jwt_env)
    assert found({}, tmp_path, console=True).credential == Jwt(jwt_config)
    write(ica / "config.yaml", "server-url: use1.platform.illumina.com\n")
    assert found({}, tmp_path, console=True).credential == Jwt(jwt_session)


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        (
            {"ICA_CONSOLE_URL": "https://euc1.platform.illumina.com"},
            "https://euc1.platform.illumina.com",
        ),
        ({"ICA_SERVER_URL": "cac1.platform.illumina.com"}, "https://cac1.platform.illumina.com"),
        ({}, CONSOLE_BASE_URL),
    ],
)
def test_console_base_url(environ: dict[str, str], url: str, tmp_path: Path) -> None:
    """Console root: ICA_CONSOLE_URL, ICA_SERVER_URL (a bare host), else the aps2 default."""
    result = found({"ICAV2_X_API_KEY": KEY, **environ}, tmp_path, console=True)
    assert result.base_url == url


def test_console_config_file_override(tmp_path: Path) -> None:
    """ICA_CONFIG_FILE (the v1 CLI's --config-file) replaces ~/.ica/config.yaml."""
    jwt_ = make_jwt()
    path = write(
        tmp_path / "custom.yaml", f"access-token: {jwt_}\nserver-url: apn1.platform.illumina.com\n"
    )
    result = found({"ICA_CONFIG_FILE": str(path)}, tmp_path / "nohome", console=True)
    assert result.credential == Jwt(jwt_)
    assert result.base_url == "https://apn1.platform.illumina.com"


def test_console_nothing_found(tmp_path: Path) -> None:
    """Nothing for the console: the error names the console's own sources."""
    with pytest.raises(DiscoveryError) as info:
        found({}, tmp_path, console=True)
    message = str(info.value)
    assert message.startswith(
        "no console v1 credentials found; tried: ICAV2_X_API_KEY (not set); ICA_ACCESS_TOKEN"
    )
    assert str(tmp_path / ".ica" / "config.yaml") in message


# -- secrets ---------------------------------------------------------------------------------


def test_result_never_shows_a_secret(tmp_path: Path) -> None:
    """The result's repr, str and source hold no secret; nor do the logs (conftest scans)."""
    jwt_ = make_jwt()
    config(tmp_path, f"x-api-key: {FILE_KEY}\n")
    for environ in ({"ICAV2_X_API_KEY": KEY}, {"ICAV2_ACCESS_TOKEN": jwt_}, {}):
        result = found(environ, tmp_path)
        for text in (repr(result), str(result), result.source):
            assert find_secret(text, [KEY, FILE_KEY, jwt_]) is None


# -- TokenManager.from_environment -----------------------------------------------------------


async def test_from_environment_ica(server: LocalIcaServer, tmp_path: Path) -> None:
    """`TokenManager.from_environment()` builds an ICA v2 manager from what was found."""
    environ = {"ICAV2_X_API_KEY": server.api_key, "ICAV2_BASE_URL": server.ica_base_url}
    async with TokenManager.from_environment(environ=environ, home=tmp_path) as manager:
        token = await manager.token()
    assert token.claims["tns"] == "test-tenant"
    assert server.counts["ica.create"] == 1


async def test_from_environment_config_file(server: LocalIcaServer, tmp_path: Path) -> None:
    """From a config.yaml alone (server-url with a scheme is taken as it is, plus /ica/rest),
    with policy keywords passed through."""
    config(tmp_path, f"server-url: {server.base_url}\nx-api-key: {server.api_key}\n")
    manager = TokenManager.from_environment(environ={}, home=tmp_path, acquire_timeout=5)
    assert manager.policy.acquire_timeout == 5
    async with manager:
        assert (await manager.headers())["Authorization"].startswith("Bearer ")


async def test_from_environment_base_url_argument_wins(
    server: LocalIcaServer, tmp_path: Path
) -> None:
    """A `base_url` keyword wins over the environment's."""
    environ = {"ICAV2_X_API_KEY": server.api_key, "ICAV2_BASE_URL": "https://nowhere.invalid"}
    manager = TokenManager.from_environment(
        environ=environ, home=tmp_path, base_url=server.ica_base_url
    )
    async with manager:
        await manager.token()
    assert server.counts["ica.create"] == 1


async def test_from_environment_access_token(server: LocalIcaServer, tmp_path: Path) -> None:
    """ICAV2_ACCESS_TOKEN becomes a `Jwt` manager: the given token is used, no mint."""
    async with aiohttp.ClientSession() as session:
        api = IcaTokenApi(session, server.ica_base_url)
        token = await api.create_jwt_token(ApiKey(server.api_key))
    environ = {"ICAV2_ACCESS_TOKEN": token.value, "ICAV2_BASE_URL": server.ica_base_url}
    async with TokenManager.from_environment(environ=environ, home=tmp_path) as manager:
        assert (await manager.token()).value == token.value
    assert server.counts["ica.create"] == 1


async def test_from_environment_console(server: LocalIcaServer, tmp_path: Path) -> None:
    """`console=True` builds a console manager (for_console keywords pass through)."""
    environ = {"ICAV2_X_API_KEY": server.api_key, "ICA_CONSOLE_URL": server.base_url}
    manager = TokenManager.from_environment(
        console=True, environ=environ, home=tmp_path, domain="test-tenant"
    )
    async with manager:
        await manager.token()
    assert server.counts["console.create"] == 1


def test_from_environment_console_jwt_refused(tmp_path: Path) -> None:
    """A console JWT cannot back a console manager (no endpoint renews it): a clear error."""
    with pytest.raises(DiscoveryError, match="cannot renew one; set ICAV2_X_API_KEY"):
        TokenManager.from_environment(
            console=True, environ={"ICA_ACCESS_TOKEN": make_jwt()}, home=tmp_path
        )


def test_from_environment_deprecation_points_at_the_caller(tmp_path: Path) -> None:
    """from_environment's DeprecationWarning is attributed to its caller too."""
    with pytest.warns(DeprecationWarning, match="ICA_API_KEY: deprecated") as record:
        TokenManager.from_environment(environ={"ICA_API_KEY": KEY}, home=tmp_path)
    assert record[0].filename == __file__


def test_from_environment_nothing_found(tmp_path: Path) -> None:
    """Nothing found: the same error as discover_credentials, before any manager exists."""
    with pytest.raises(IcaError, match="no ICA v2 credentials found"):
        TokenManager.from_environment(environ={}, home=tmp_path)


# -- files that are not regular, nested, or unconstructible (issue 19, item 5) ---------------

# Discovery in a child process, so that a FIFO that blocks `open` fails the test (the child is
# killed at the timeout) instead of hanging the suite.
_DISCOVER_IN_CHILD = """
import sys
from aioica_auth import IcaError, discover_credentials
try:
    found = discover_credentials()
except IcaError as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(3)
print(found.source)
"""


def _discover_in_child(monkeypatch: pytest.MonkeyPatch, home: Path, **env: str) -> tuple[int, str]:
    """`discover_credentials()` in a child with HOME at `home` and only `env` of the ICA
    variables: (exit status, stdout + stderr); the child is killed after 20 s."""
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("ICA"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = subprocess.run(
        [sys.executable, "-c", _DISCOVER_IN_CHILD],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    return done.returncode, done.stdout + done.stderr


def test_fifo_config_is_never_read_when_the_environment_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO at ~/.icav2/config.yaml with the key and the base URL in the environment: the
    config is not opened at all (opening it would be refused: success proves it)."""
    (tmp_path / ".icav2").mkdir()
    os.mkfifo(tmp_path / ".icav2" / "config.yaml")
    status, output = _discover_in_child(
        monkeypatch, tmp_path, ICAV2_X_API_KEY=KEY, ICAV2_BASE_URL=ICA_BASE_URL
    )
    assert status == 0, output
    assert output.startswith("credential: ICAV2_X_API_KEY (environment); base URL: ICAV2_BASE_URL")


@pytest.mark.parametrize(
    ("env", "fifo"),
    [
        pytest.param({"ICAV2_X_API_KEY": KEY}, "config.yaml", id="key-set-server-url-wanted"),
        pytest.param({}, "config.yaml", id="nothing-set"),
        pytest.param({}, ".session.ica.yaml", id="session-file"),
    ],
)
def test_fifo_is_refused_not_waited_on(
    env: dict[str, str], fifo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FIFO where discovery must read a file (the config's server-url when the environment
    has no base URL; the session file) is refused at once, naming the file: before, `open`
    blocked forever waiting for a writer, even with ICAV2_X_API_KEY set."""
    directory = tmp_path / ".icav2"
    write(directory / "config.yaml", "colormode: none\n")
    (directory / fifo).unlink(missing_ok=True)
    os.mkfifo(directory / fifo)
    status, output = _discover_in_child(monkeypatch, tmp_path, **env)
    assert status == 3, output
    assert output.strip() == (
        f"DiscoveryError: {directory / fifo} is a named pipe (FIFO), not a regular file: "
        "settings are read from regular files only (never waited on)"
    )
    assert KEY not in output


def test_deeply_nested_config_is_a_discovery_error(tmp_path: Path) -> None:
    """A config nested past Python's recursion limit is the discovery's own error with the
    reason (it was a bare RecursionError: the CLI said "unexpected RecursionError")."""
    depth = 100_000
    path = config(tmp_path, "x-api-key: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(DiscoveryError) as caught:
        found({"ICAV2_X_API_KEY": KEY}, tmp_path)
    assert str(caught.value) == f"{path} is nested too deeply to be a config file"
    assert isinstance(caught.value, IcaError)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"x-api-key: !!float {FILE_KEY}\n", id="float-tag-on-the-key"),
        pytest.param(f"x-api-key: !!int {FILE_KEY}\n", id="int-tag-on-the-key"),
        pytest.param("server-url: 2001-13-14\n", id="impossible-date"),
    ],
)
def test_unconstructible_value_is_a_discovery_error(text: str, tmp_path: Path) -> None:
    """A value PyYAML's constructors refuse with a ValueError (which quotes the text, here
    the key) is the discovery's error, naming the file and the exception, never the value."""
    path = config(tmp_path, text)
    with pytest.raises(DiscoveryError) as caught:
        found({}, tmp_path)
    message = str(caught.value)
    assert message == f"{path} holds a value that cannot be read as YAML data (ValueError)"
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert find_secret(message, [FILE_KEY]) is None


# -- from_environment with a JWT (issue 19, items 5 and 8) -----------------------------------


class _UntouchedStore:
    """A `TokenStore` whose every method fails the test: it must not be used."""

    async def read(self, key: str) -> bytes | None:
        raise AssertionError("read")

    async def acquire(self, key: str, ttl: float) -> object | None:
        raise AssertionError("acquire")

    async def release(self, key: str, handle: object) -> None:
        raise AssertionError("release")

    async def publish(self, key: str, entry: bytes, *, expires_at: float) -> bool:
        raise AssertionError("publish")

    async def wait(self, key: str, within: float) -> None:
        raise AssertionError("wait")

    async def aclose(self) -> None:
        raise AssertionError("aclose")


async def test_from_environment_jwt_with_a_store_is_built_without_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ICAV2_ACCESS_TOKEN (what wrapica and the UMCCR tools export) with `store=`: the manager
    is built without the store (there is one given token, nothing minted to share), with one
    warning naming the variable; it was a TypeError, so `store=...` code failed wherever the
    environment held a JWT instead of a key."""
    jwt_ = make_jwt(lifetime=3600)
    environ = {"ICAV2_ACCESS_TOKEN": jwt_, "ICAV2_BASE_URL": "https://nowhere.invalid/ica/rest"}
    store = _UntouchedStore()
    manager = TokenManager.from_environment(environ=environ, home=tmp_path, store=store)
    async with manager:
        assert (await manager.token()).value == jwt_  # the given token: no request, no store
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1
    message = warned[0].getMessage()
    assert "ICAV2_ACCESS_TOKEN (environment)" in message
    assert "built without the store" in message
    assert find_secret(message, [jwt_]) is None


def test_from_environment_jwt_with_a_non_store_is_still_a_type_error(tmp_path: Path) -> None:
    """Only a real TokenStore is set aside: a wrong object is still the caller's TypeError."""
    environ = {"ICAV2_ACCESS_TOKEN": make_jwt()}
    with pytest.raises(TypeError, match="store must be a TokenStore"):
        TokenManager.from_environment(environ=environ, home=tmp_path, store=object())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            make_jwt(issued_at=1_000_000_000, lifetime=3600),
            "the JWT in ICAV2_ACCESS_TOKEN (environment) has expired (at 2001-09-09T02:46:40Z)",
            id="expired",
        ),
        pytest.param(
            "not-a-jwt-but-a-secret-0123456789",
            "ICAV2_ACCESS_TOKEN (environment) does not hold a JWT",
            id="garbage",
        ),
    ],
)
def test_from_environment_unusable_access_token_names_the_variable(
    value: str, message: str, tmp_path: Path
) -> None:
    """An expired or undecodable ICAV2_ACCESS_TOKEN is refused when the manager is built,
    naming the variable and what to do (it was "give the manager an ApiKey, BasicAuth or
    PsToken instead" at the first request, or a bare ValueError)."""
    with pytest.raises(DiscoveryError) as caught:
        TokenManager.from_environment(environ={"ICAV2_ACCESS_TOKEN": value}, home=tmp_path)
    text = str(caught.value)
    assert text.startswith(message)
    assert "ICAV2_X_API_KEY" in text
    assert find_secret(text, [value]) is None
