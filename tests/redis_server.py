"""pytest fixtures that run a real `redis-server` on a free loopback port (a pytest plugin,
registered in `conftest.py`).

`redis_server` is a server without auth; `redis_acl_server` one with a default-user password
and an ACL user limited to the `aioica_auth:*` keys. Each yields a `RedisServer` that a test
can `stop()` and `start()` again on the same port (a Redis restart mid-run), and is killed
when the test ends.

Without `redis-server` on PATH (Debian package `redis-server`) these fixtures skip, unless
``AIOICA_REQUIRE_REDIS=1`` (set by `.ci/run`), where they fail: in CI the Redis tests must run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import free_port

__all__ = ["REQUIRE_ENV", "RULE_COMMANDS", "RedisServer", "redis_acl_server", "redis_server"]

REQUIRE_ENV = "AIOICA_REQUIRE_REDIS"
STARTUP_BOUND = 10.0  # seconds for a started server to answer
STOP_BOUND = 5.0  # seconds for a stopped one to exit before it is killed

ACL_USER = "fleet"
ACL_PASSWORD = "acl-pw-7b1e0c9d"
DEFAULT_PASSWORD = "default-pw-42f3a1"
RULE_COMMANDS = ["+@read", "+@write", "+@scripting", "+@pubsub"]


class RedisServer:
    """One `redis-server` process on 127.0.0.1: no persistence, its files in `directory`.

    Attributes:
        port: The TCP port, kept across `stop()` and `start()`.
        password: The default user's password, or None for a server without auth.
        user: An ACL user (name, password) limited to ``~aioica_auth:*`` and
            ``&aioica_auth:*``, or None.
    """

    def __init__(
        self,
        executable: str,
        directory: Path,
        *,
        password: str | None = None,
        user: tuple[str, str] | None = None,
    ) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.user = user
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """A URL for the server: with the default user's password when it has one."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def user_url(self, password: str | None = None) -> str:
        """A URL that logs in as the ACL user (with `password`, or the right one)."""
        assert self.user is not None, "this server has no ACL user"
        name, right = self.user
        return f"redis://{name}:{password or right}@127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is up."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server (again, on the same port) and return once it answers.

        Raises:
            RuntimeError: it did not answer within `STARTUP_BOUND` seconds, or exited.
        """
        assert not self.running, "the server is already running"
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.user:
            name, password = self.user
            # The rule RedisTokenStore's docstring recommends: its own keys and channels, and
            # reads, writes, scripts and pub/sub. redis-server quotes an argument holding
            # spaces: given word by word.
            rule = ["~aioica_auth:*", "&aioica_auth:*", *RULE_COMMANDS, "-@dangerous"]
            args += ["--user", name, "on", f">{password}", *rule]
        log = (self.directory / "redis.log").open("ab")
        with log:
            self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._await_answer()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        assert self._process is not None, "the server is not running"
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `STOP_BOUND` seconds); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused server acts on SIGTERM only then
            process.terminate()
            try:
                process.wait(STOP_BOUND)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_BOUND)

    def _await_answer(self) -> None:
        deadline = time.monotonic() + STARTUP_BOUND
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                msg = f"redis-server exited with {self._process.returncode}: {self._log_tail()}"
                self._process = None
                raise RuntimeError(msg)
            if self._answers():
                return
            time.sleep(0.01)
        self.stop()
        msg = f"redis-server did not answer within {STARTUP_BOUND} s: {self._log_tail()}"
        raise RuntimeError(msg)

    def _answers(self) -> bool:
        """Whether PING gets an answer (+PONG, or -NOAUTH from a server with a password)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _log_tail(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-500:] if path.exists() else "(no log)"


def _executable() -> str:
    found = shutil.which("redis-server")
    if found is None:
        reason = "redis-server is not installed (Debian package redis-server)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires the Redis tests to run")
        pytest.skip(reason)
    return found


def _serve(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started `redis-server` without auth on a free 127.0.0.1 port, killed at the end."""
    yield from _serve(RedisServer(_executable(), tmp_path))


@pytest.fixture
def redis_acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started `redis-server` whose default user needs `DEFAULT_PASSWORD`, with the ACL user
    `ACL_USER` (password `ACL_PASSWORD`) limited to ``~aioica_auth:*`` and ``&aioica_auth:*``
    and to reads, writes, scripts and pub/sub."""
    server = RedisServer(
        _executable(), tmp_path, password=DEFAULT_PASSWORD, user=(ACL_USER, ACL_PASSWORD)
    )
    yield from _serve(server)


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A plain redis-py client of `redis_server`, to look at its keys and counters."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
