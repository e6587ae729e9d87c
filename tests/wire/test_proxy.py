"""Proxies and network causes: the manager's own session and the CLI honour HTTPS_PROXY,
HTTP_PROXY and NO_PROXY (a small recording proxy on 127.0.0.1 shows it), and a refused
connection, a DNS failure, a TLS verification failure and a timeout each reach the caller
(the exception message, the CLI's one line) as what they are."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yarl

from aioica_auth import ApiKey, TokenManager, TokenUnavailableError, TransportError
from aioica_auth._cli.main import main
from aioica_auth.testing import LocalIcaServer

from ..support import run_cli

ROOT = Path(__file__).resolve().parents[2]
SECRET = "S3cr3t-Proxy-Key-0123456789abcdef"
PROXY_VARS = tuple(v for n in ("http_proxy", "https_proxy", "no_proxy") for v in (n, n.upper()))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy, credential or ~/.icav2 of the developer's reaches these tests."""
    for name in (*PROXY_VARS, "ICAV2_X_API_KEY", "ICAV2_ACCESS_TOKEN", "ICAV2_BASE_URL",
                 "ICAV2_SERVER_URL", "ICA_API_KEY", "ICA_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


class RecordingProxy:
    """An HTTP forward proxy on 127.0.0.1 that records each request line it is sent.

    Plain requests (absolute-form) are forwarded to their origin with `Connection: close`;
    `CONNECT` is tunnelled, or answered with `connect_status` when that is set.
    """

    def __init__(self, *, connect_status: int | None = None) -> None:
        self.lines: list[str] = []
        self.connect_status = connect_status
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            line, *header_lines = head.split("\r\n")
            self.lines.append(line)
            method, target, _ = line.split(" ", 2)
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, header_lines, reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self.connect_status is not None:
            writer.write(f"HTTP/1.1 {self.connect_status} No\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            return
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _forward(
        self,
        method: str,
        target: str,
        header_lines: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = yarl.URL(target)
        headers = [
            h for h in header_lines if h and not h.lower().startswith(("proxy-", "connection"))
        ]
        length = next(
            (int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length")), 0
        )
        body = await reader.readexactly(length)
        up_reader, up_writer = await asyncio.open_connection(url.host, url.port)
        head = "\r\n".join([f"{method} {url.raw_path_qs} HTTP/1.1", *headers, "Connection: close"])
        up_writer.write(head.encode("latin-1") + b"\r\n\r\n" + body)
        writer.write(await up_reader.read())
        await writer.drain()
        up_writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    """A recording proxy that forwards and tunnels."""
    async with RecordingProxy() as p:
        yield p


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- proxies ---------------------------------------------------------------------------------


async def test_manager_session_uses_http_proxy(
    server: LocalIcaServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager's own session sends its token request through HTTP_PROXY."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    async with TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url) as m:
        await m.token()
    port = yarl.URL(server.base_url).port
    assert proxy.lines == [f"POST http://127.0.0.1:{port}/ica/rest/api/tokens HTTP/1.1"]


async def test_no_proxy_bypasses_the_proxy(
    server: LocalIcaServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host in NO_PROXY is reached directly."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url) as m:
        await m.token()
    assert proxy.lines == []
    assert server.counts["ica.create"] == 1


async def test_https_proxy_gets_a_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """An https base URL goes through HTTPS_PROXY as a CONNECT (the proxy resolves the host);
    a proxy refusing it is named in the error."""
    async with RecordingProxy(connect_status=403) as refusing:
        monkeypatch.setenv("HTTPS_PROXY", refusing.url)
        manager = TokenManager.for_ica(
            ApiKey(SECRET), base_url="https://ica.invalid/ica/rest", acquire_timeout=1.0
        )
        async with manager:
            with pytest.raises(TokenUnavailableError, match="the proxy answered HTTP 403"):
                await manager.token()
    assert refusing.lines[0] == "CONNECT ica.invalid:443 HTTP/1.1"


async def test_proxy_password_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy with credentials in HTTPS_PROXY that refuses connections: the error names the
    proxy, never its password."""
    port = free_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://me:pr0xy-pa55word@127.0.0.1:{port}")
    manager = TokenManager.for_ica(
        ApiKey(SECRET), base_url="https://ica.invalid/ica/rest", acquire_timeout=1.0
    )
    async with manager:
        with pytest.raises(TokenUnavailableError) as info:
            await manager.token()
    assert f"connection refused by the proxy 127.0.0.1:{port}" in str(info.value)
    chain = [info.value, info.value.__cause__, info.value.__cause__.__cause__]
    for exc in chain:
        assert "pr0xy-pa55word" not in f"{exc!s} {exc!r}"


@pytest.mark.slow
async def test_cli_honours_proxy_variables(
    server: LocalIcaServer, proxy: RecordingProxy, tmp_path: Path
) -> None:
    """`aioica-auth token` goes through HTTP_PROXY, and around it for a NO_PROXY host (with
    --no-cache, so that each run asks the server)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ICAV2_X_API_KEY": server.api_key,
        "ICAV2_BASE_URL": server.ica_base_url,
        "HTTP_PROXY": proxy.url,
    }
    rc, out, err = await run_cli("token", "--no-cache", env=env)
    assert (rc, err) == (0, "")
    assert out.startswith("eyJ")
    assert proxy.lines == [f"POST {server.ica_base_url}/api/tokens HTTP/1.1"]
    around = {**env, "NO_PROXY": "localhost,127.0.0.1"}
    rc, out, err = await run_cli("token", "--no-cache", env=around)
    assert (rc, err) == (0, "")
    assert out.startswith("eyJ")
    assert len(proxy.lines) == 1
    assert server.counts["ica.create"] == 2


async def test_cli_details_honours_proxy(
    server: LocalIcaServer, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`details` (its own session) goes through HTTP_PROXY too."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("ICAV2_X_API_KEY", server.api_key)
    monkeypatch.setenv("ICA_CONSOLE_URL", server.base_url)
    assert await asyncio.to_thread(main, ["details"]) == 0
    assert [line.split()[0] for line in proxy.lines] == ["POST", "GET"]


# -- network causes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and its key, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@contextlib.asynccontextmanager
async def listening(
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """A server on 127.0.0.1 that accepts connections and never answers; yields its port."""
    held: list[asyncio.StreamWriter] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held:
            writer.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def cause_url(kind: str, certificate: tuple[Path, Path]) -> AsyncIterator[tuple[str, str]]:
    """A base URL that fails for `kind`, and what the message must say."""
    if kind == "refused":
        port = free_port()
        yield f"http://127.0.0.1:{port}/ica/rest", f"connection refused by 127.0.0.1:{port}"
    elif kind == "dns":
        yield "https://no-such-host.invalid/ica/rest", "cannot resolve host no-such-host.invalid"
    elif kind == "tls":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        async with listening(context) as port:
            yield (
                f"https://127.0.0.1:{port}/ica/rest",
                f"TLS certificate verify failed for 127.0.0.1:{port}",
            )
    else:
        async with listening() as port:
            yield f"http://127.0.0.1:{port}/ica/rest", "timed out after 0.8 s"


CAUSES = ["refused", "dns", "tls", "timeout"]


@pytest.fixture
def quiet_tls_handshakes(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """asyncio logs the server side of a refused TLS handshake; that is expected here."""
    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        yield


@pytest.mark.parametrize("kind", CAUSES)
@pytest.mark.usefixtures("quiet_tls_handshakes")
async def test_cause_reaches_the_caller(kind: str, certificate: tuple[Path, Path]) -> None:
    """`TokenUnavailableError` names the cause in its message, and chains a TransportError
    of that kind."""
    async with cause_url(kind, certificate) as (url, said):
        manager = TokenManager.for_ica(
            ApiKey(SECRET), base_url=url, acquire_timeout=1.2, request_timeout=0.8
        )
        async with manager:
            with pytest.raises(TokenUnavailableError) as info:
                await asyncio.wait_for(manager.token(), 10)
    assert said in str(info.value)
    cause = info.value.__cause__
    assert isinstance(cause, TransportError)
    assert cause.kind == kind
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("kind", CAUSES)
@pytest.mark.usefixtures("quiet_tls_handshakes")
async def test_cli_one_line_names_the_cause(
    kind: str,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI's one error line says what went wrong on the network; `--debug` adds the
    traceback above it."""
    monkeypatch.setenv("ICAV2_X_API_KEY", SECRET)
    async with cause_url(kind, certificate) as (url, said):
        argv = ["token", "--base-url", url, "--timeout", "1"]
        assert await asyncio.wait_for(asyncio.to_thread(main, argv), 15) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("aioica-auth: error: no valid token")
        assert said in lines[0]
        assert await asyncio.wait_for(asyncio.to_thread(main, [*argv, "--debug"]), 15) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    # The network failure itself, as the CLI gave up on it or ran out of --timeout.
    assert (
        "TransportError" in err or "TransportTimeoutError" in err or "TokenUnavailableError" in err
    )
    assert said in err.strip().splitlines()[-1]
    assert SECRET not in err
