"""The CLI's token cache: `aioica-auth token` and `whoami` in subprocesses share one token
through the file store, against a local server in the test's event loop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from aioica_auth import ApiKey, ConsoleTokenApi, FileTokenStore, Token
from aioica_auth._cli.cache import CliCache
from aioica_auth._cli.main import main
from aioica_auth._fleet.file_store import default_directory
from aioica_auth.testing import LocalIcaServer

from ..support import run_cli

ROOT = Path(__file__).resolve().parents[2]
# Eight CLI runs one after another (each a process of its own: about 0.4 s of CPU).
pytestmark = pytest.mark.timeout(240)
RUNS = 8
_DROPPED = ("ICA", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "XDG_CACHE_HOME", "HOME")


@pytest.fixture
async def server() -> AsyncIterator[LocalIcaServer]:
    """A local ICA server in the test's event loop, with 10-minute tokens."""
    async with LocalIcaServer(lifetime=600.0) as srv:
        yield srv


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Where the CLI's cache goes: `$XDG_CACHE_HOME/aioica_auth` under the test's directory."""
    return tmp_path / "xdg-cache" / "aioica_auth"


@pytest.fixture
def env(server: LocalIcaServer, tmp_path: Path, cache: Path) -> dict[str, str]:
    """A child environment: no ICA variable or proxy of the developer's, a fresh HOME and
    XDG_CACHE_HOME, and the local server's API key and ICA v2 root."""
    home = tmp_path / "home"
    home.mkdir()
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith(_DROPPED)}
    return kept | {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(cache.parent),
        "ICAV2_X_API_KEY": server.api_key,
        "ICAV2_BASE_URL": server.ica_base_url,
    }


async def cli(*args: str, env: dict[str, str], within: float = 60) -> tuple[int, str, str]:
    """`python -m aioica_auth ARGS`, with room for a loaded machine."""
    return await run_cli(*args, env=env, within=within)


def header_token(out: str) -> str:
    """The JWT of a `token --header` run: stdout is that one line and nothing else."""
    prefix = "Authorization: Bearer "
    assert out.endswith("\n"), out
    assert out.count("\n") == 1, out
    assert out.startswith(prefix), out
    return out[len(prefix) : -1]


def no_secret(text: str, server: LocalIcaServer) -> None:
    """Neither the API key nor any JWT-looking text in `text`."""
    assert server.api_key not in text
    assert "eyJ" not in text


def listing(cache: Path) -> dict[str, tuple[int, bytes]]:
    """Each file of the cache directory: its mode and content (sync: the tests are tiny)."""
    return {p.name: (stat.S_IMODE(p.stat().st_mode), p.read_bytes()) for p in cache.iterdir()}


def mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def open_up(cache: Path, *, directory: bool) -> None:
    """Make the cache directory, or its one entry, writable by everyone."""
    if directory:
        cache.mkdir(parents=True)
        cache.chmod(0o777)
    else:
        (entry,) = cache.glob("*.token")
        entry.chmod(0o666)


def file_in_the_way(cache: Path) -> None:
    """A regular file where the cache directory should be."""
    cache.parent.mkdir(parents=True)
    cache.write_text("not a directory")


def one_warning(stderr: str) -> str:
    """Exactly one line on stderr, an `aioica-auth: warning: ...` line."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("aioica-auth: warning: "), stderr
    return lines[0]


@pytest.mark.parametrize("argv", [["--help"], ["token", "--help"], ["whoami", "--help"]])
def test_help_tells_of_the_cache(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help (and token's, whoami's) names the cache, --no-cache, and that it holds bearer
    tokens in 0600 files of a 0700 directory."""
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    for needle in ("--no-cache", "bearer tokens", "0600", "0700", "~/.cache/aioica_auth"):
        assert needle in out, needle


@pytest.mark.slow
async def test_header_calls_in_a_loop_mint_once(
    server: LocalIcaServer, env: dict[str, str]
) -> None:
    """`token --header` runs in a loop cause one mint and print the same token."""
    tokens = set()
    for _ in range(RUNS):
        rc, out, err = await cli("token", "--header", env=env)
        assert (rc, err) == (0, "")
        tokens.add(header_token(out))
    assert len(tokens) == 1
    assert server.counts["ica.create"] == 1


@pytest.mark.slow
async def test_no_cache_mints_every_time(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """With --no-cache, each run is a mint, and no cache directory is made."""
    for _ in range(RUNS):
        rc, out, err = await cli("token", "--header", "--no-cache", env=env)
        assert (rc, err) == (0, "")
        header_token(out)
    assert server.counts["ica.create"] == RUNS
    assert not cache.parent.exists()


async def test_no_cache_leaves_the_cache_alone(server: LocalIcaServer, env: dict[str, str]) -> None:
    """A --no-cache run neither adopts the cached token nor replaces it."""
    _, first, _ = await cli("token", env=env)
    rc, fresh, _ = await cli("token", "--no-cache", env=env)
    assert rc == 0
    assert fresh != first
    _, again, _ = await cli("token", env=env)
    assert again == first
    assert server.counts["ica.create"] == 2


async def test_min_validity_beyond_the_cached_token_mints(
    server: LocalIcaServer, env: dict[str, str]
) -> None:
    """A cached token that would not last --min-validity is not used: a new one is minted,
    printed and cached for the next runs."""
    rc, out, _ = await cli("token", env=env)
    assert rc == 0
    cached = Token.from_jwt(out.strip())  # 600 s
    server.lifetime = 1200.0
    rc, out, err = await cli("token", "--json", "--min-validity", "900", env=env)
    assert (rc, err) == (0, "")
    data = json.loads(out)
    assert data["expires_in"] >= 900
    assert data["token"] != cached.value
    assert server.counts["ica.create"] == 2
    # The new token is the cached one now: it lasts 900 s, the old one never did.
    rc, out, _ = await cli("token", "--json", "--min-validity", "900", env=env)
    assert rc == 0
    assert json.loads(out)["token"] == data["token"]
    assert server.counts["ica.create"] == 2


async def test_min_validity_within_the_cached_token_uses_it(
    server: LocalIcaServer, env: dict[str, str]
) -> None:
    """A cached token that lasts --min-validity is used as it is."""
    _, first, _ = await cli("token", env=env)
    rc, out, err = await cli("token", "--min-validity", "60", env=env)
    assert (rc, err) == (0, "")
    assert out == first
    assert server.counts["ica.create"] == 1


async def test_min_validity_no_server_token_meets(
    server: LocalIcaServer, env: dict[str, str]
) -> None:
    """A --min-validity no token of the server meets: one new mint (not the cached token's
    word for it), then exit 1 in one line, stdout empty."""
    await cli("token", env=env)
    rc, out, err = await cli("token", "--min-validity", "3600", env=env)
    assert (rc, out) == (1, "")
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "less than --min-validity 3600 s (its tokens last 600 s)" in lines[0]
    no_secret(err, server)
    assert server.counts["ica.create"] == 2


async def test_refused_cache_directory(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """A cache directory others can write: one warning line naming it, no secret on stderr,
    the token still printed, exit 0, and nothing read from or written to it."""
    open_up(cache, directory=True)
    for _ in range(2):
        rc, out, err = await cli("token", "--header", env=env)
        assert rc == 0
        header_token(out)
        line = one_warning(err)
        assert "token cache not used" in line
        assert str(cache) in line
        assert "writable by others" in line
        no_secret(err, server)
    assert server.counts["ica.create"] == 2
    assert listing(cache) == {}


async def test_cache_path_not_a_directory(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """A file where the cache directory should be: one warning line, the token printed."""
    file_in_the_way(cache)
    rc, out, err = await cli("token", env=env)
    assert rc == 0
    Token.from_jwt(out.strip())
    assert "token cache not used" in one_warning(err)
    no_secret(err, server)


async def test_unusable_cache_entry(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """A cached entry others can write is refused in use: one warning line, a new token
    printed, exit 0, no secret on stderr."""
    _, first, _ = await cli("token", env=env)
    open_up(cache, directory=False)
    rc, out, err = await cli("token", env=env)
    assert rc == 0
    assert out != first
    Token.from_jwt(out.strip())
    line = one_warning(err)
    assert f"token cache {cache} not used" in line
    assert "writable by others" in line
    no_secret(err, server)
    assert server.counts["ica.create"] == 2


async def test_cache_files_are_private(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """The cache directory is 0700 and its files 0600; no file holds the API key."""
    rc, _, _ = await cli("token", env=env)
    assert rc == 0
    assert mode(cache) == 0o700
    files = listing(cache)
    assert any(name.endswith(".token") for name in files)
    for name, (bits, content) in files.items():
        assert bits == 0o600, name
        assert server.api_key.encode() not in content
        assert server.api_key not in name


async def test_whoami_shares_the_cache(server: LocalIcaServer, env: dict[str, str]) -> None:
    """`whoami` adopts the token `token` cached (and --no-cache mints its own)."""
    assert (await cli("token", env=env))[0] == 0
    rc, out, err = await cli("whoami", env=env)
    assert (rc, err) == (0, "")
    assert "test-tenant" in out
    assert server.counts["ica.create"] == 1
    assert (await cli("whoami", "--no-cache", env=env))[0] == 0
    assert server.counts["ica.create"] == 2


async def test_console_api_key_is_cached(server: LocalIcaServer, env: dict[str, str]) -> None:
    """`token --console` with an API key shares its JWT too, under its own key."""
    env = env | {"ICA_CONSOLE_URL": server.base_url}
    outs = [await cli("token", "--console", env=env) for _ in range(3)]
    assert [rc for rc, _, _ in outs] == [0, 0, 0]
    assert len({out for _, out, _ in outs}) == 1
    assert server.counts["console.create"] == 1
    assert server.counts["ica.create"] == 0


async def test_console_ps_token_is_not_cached(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """A console psToken (its session is one process's) is used without the cache, with no
    warning beyond the deprecation one and no cache directory made."""
    async with aiohttp.ClientSession() as session:
        api = ConsoleTokenApi(session, server.base_url)
        answer = await api.create_token(ApiKey(server.api_key), return_session_token=True)
    assert answer.access_token is not None
    env = {k: v for k, v in env.items() if k != "ICAV2_X_API_KEY"}
    env |= {"ICA_PS_TOKEN": answer.access_token, "ICA_CONSOLE_URL": server.base_url}
    rc, out, err = await cli("token", "--console", env=env)
    assert rc == 0, err
    Token.from_jwt(out.strip())
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "ICA_PS_TOKEN: deprecated" in lines[0]
    assert answer.access_token not in err
    assert not cache.parent.exists()


async def test_given_jwt_is_not_cached(
    server: LocalIcaServer, env: dict[str, str], cache: Path
) -> None:
    """An ICAV2_ACCESS_TOKEN is used as given: no cache, no warning."""
    rc, out, _ = await cli("token", "--no-cache", env=env)
    jwt = out.strip()
    env = {k: v for k, v in env.items() if k != "ICAV2_X_API_KEY"}
    rc, out, err = await cli("token", env=env | {"ICAV2_ACCESS_TOKEN": jwt})
    assert (rc, err) == (0, "")
    Token.from_jwt(out.strip())
    assert not cache.parent.exists()


# -- the same, in-process (main() in a thread, so the server keeps serving) -----------------


@pytest.fixture
def in_process(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Awaitable[int]]:
    """`main(argv)` in a worker thread, with the child environment as os.environ."""
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    async def run(*argv: str) -> int:
        return await asyncio.to_thread(main, list(argv))

    return run


async def test_in_process_cache_and_its_failures(
    server: LocalIcaServer,
    in_process: Callable[..., Awaitable[int]],
    cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process: the second run adopts, --min-validity beyond it mints, an entry others
    can write is one warning line and a mint, and a refused directory one line too."""
    assert await in_process("token") == 0
    first = capsys.readouterr()
    assert await in_process("token", "--header") == 0
    assert capsys.readouterr().out == f"Authorization: Bearer {first.out.strip()}\n"
    assert server.counts["ica.create"] == 1
    server.lifetime = 1200.0
    assert await in_process("token", "--min-validity", "900") == 0
    assert capsys.readouterr().out != first.out
    assert server.counts["ica.create"] == 2
    open_up(cache, directory=False)
    assert await in_process("token") == 0
    assert "writable by others" in one_warning(capsys.readouterr().err)
    assert server.counts["ica.create"] == 3
    shutil.rmtree(cache)
    open_up(cache, directory=True)
    assert await in_process("whoami") == 0
    captured = capsys.readouterr()
    assert "token cache not used" in one_warning(captured.err)
    no_secret(captured.err, server)
    assert server.counts["ica.create"] == 4


async def test_in_process_not_cached(
    server: LocalIcaServer,
    in_process: Callable[..., Awaitable[int]],
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process: --no-cache and a given JWT use no cache at all."""
    assert await in_process("token", "--no-cache") == 0
    jwt = capsys.readouterr().out.strip()
    monkeypatch.delenv("ICAV2_X_API_KEY")
    monkeypatch.setenv("ICAV2_ACCESS_TOKEN", jwt)
    assert await in_process("token") == 0
    assert capsys.readouterr().out.strip() == jwt
    assert not cache.parent.exists()


def test_cache_directory_from_the_environment(tmp_path: Path) -> None:
    """XDG_CACHE_HOME when absolute, else HOME/.cache (a relative XDG_CACHE_HOME is ignored,
    as the XDG spec says)."""
    xdg = str(tmp_path / "xdg")
    assert default_directory({"XDG_CACHE_HOME": xdg}) == Path(xdg) / "aioica_auth"
    home = str(tmp_path / "home")
    expected = Path(home) / ".cache" / "aioica_auth"
    assert default_directory({"XDG_CACHE_HOME": "rel", "HOME": home}) == expected
    assert default_directory({}) == Path.home() / ".cache" / "aioica_auth"


class _Failing:
    """A store method that raises `exc`."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def __call__(self, *args: object, **kwargs: object) -> None:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "said"),
    [
        (PermissionError(13, "Permission denied", "/secret-looking/path"), "PermissionError: "),
        (OSError(), "OSError: failed"),
        (KeyError("eyJhbGciOi.not.shown"), "KeyError;"),
    ],
)
async def test_cache_failure_said_once(
    exc: Exception,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A store call that fails is said once on stderr, by its kind (an OSError's strerror),
    never its text, and raised for the manager; later failures say nothing."""
    cache = CliCache(FileTokenStore(tmp_path / "c"))
    monkeypatch.setattr(cache.store, "read", _Failing(exc))
    monkeypatch.setattr(cache.store, "publish", _Failing(exc))
    with pytest.raises(type(exc)):
        await cache.read("ab" * 32)
    with pytest.raises(type(exc)):
        await cache.publish("ab" * 32, b"{}", expires_at=1.0)
    err = capsys.readouterr().err
    assert said in one_warning(err)
    assert "eyJ" not in err
    assert "/secret-looking/path" not in err
    assert repr(cache) == repr(cache.store)
    await cache.aclose()
