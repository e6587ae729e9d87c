"""Helpers shared by the test modules: hand-made JWTs, a scan for secrets, a bounded poll,
and the event-loop switch (`LOOP_ENV`) that `conftest.py` reads.

Fixtures live in `conftest.py`; these are plain functions, imported where they are used
(``from .support import unsigned_jwt``).
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import itertools
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.abc

from aioica_auth import ApiKey
from aioica_auth._fleet.store import store_key
from aioica_auth._wire.urls import check_base_url
from aioica_auth.testing import LocalIcaServer

# What a leaked secret of the local server looks like: a JWT, its API keys, its psTokens.
SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}|test-apikey-[0-9a-f]{8}|ps\.[A-Za-z0-9_-]{20}"
)

# AIOICA_TEST_LOOP=uvloop runs every async test on uvloop's loop (see conftest.py).
LOOP_ENV = "AIOICA_TEST_LOOP"
LOOPS = ("asyncio", "uvloop")


def suite_cache() -> Path:
    """The suite's cache outside the checkout, reused across runs and clones:
    `$AIOICA_TEST_CACHE`, else `$XDG_CACHE_HOME/aioica_auth-tests`, else
    `~/.cache/aioica_auth-tests` (the libconsole side venv, bytecode; see `conftest.py`)."""
    given = os.environ.get("AIOICA_TEST_CACHE")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aioica_auth-tests"


def requested_loop() -> str:
    """The event loop the run asked for in `LOOP_ENV`: "asyncio" (the default) or "uvloop".

    Raises:
        ValueError: `LOOP_ENV` names another loop (a typo must not run the default silently).
    """
    loop = os.environ.get(LOOP_ENV) or "asyncio"
    if loop not in LOOPS:
        msg = f"{LOOP_ENV}={loop!r}: expected one of {', '.join(LOOPS)}"
        raise ValueError(msg)
    return loop


_RS256 = {"alg": "RS256", "typ": "JWT"}


def _segment(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def unsigned_jwt(claims: Any, header: Mapping[str, Any] | None = None) -> str:
    """A JWT with exactly these claims and a fake signature (the client never checks it).

    Args:
        claims: The payload, JSON-encoded as given: normally a dict, but any JSON value, so
            tests can build malformed payloads (a list, a string).
        header: The JOSE header; ``{"alg": "RS256", "typ": "JWT"}`` when None.

    Returns:
        ``header.payload.signature``, each part base64url without padding.
    """
    head = _RS256 if header is None else dict(header)
    return f"{_segment(head)}.{_segment(claims)}.c2lnbmF0dXJl"


def find_secret(text: str, secrets: Iterable[str] = ()) -> str | None:
    """The first secret found in `text`, or None when it is clean.

    Looks for each of `secrets` verbatim, then for anything shaped like a secret of the
    local server (`SECRET_SHAPES`: a JWT, a test API key, a psToken).

    Args:
        text: A log, repr, message or traceback.
        secrets: Values that must not appear; an empty one is a test bug (it is in every text).

    Returns:
        The secret or the secret-shaped substring found, or None.

    Raises:
        ValueError: One of `secrets` is empty.
    """
    for secret in secrets:
        if not secret:
            msg = "an empty secret is in every text: the test built its secrets wrongly"
            raise ValueError(msg)
        if secret in text:
            return secret
    shaped = SECRET_SHAPES.search(text)
    return None if shaped is None else shaped.group()


async def wait_until(predicate: Callable[[], object], limit: float = 10.0) -> None:
    """Poll a condition (bounded), instead of sleeping a lucky amount.

    Raises:
        AssertionError: `predicate()` was still false after `limit` seconds.
    """
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            msg = "condition not reached in time"
            raise AssertionError(msg)
        await asyncio.sleep(0.02)


def server_tls(cert_and_key: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side TLS context presenting the self-signed certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert_and_key)
    return context


#: Ports free_port() picks from: below Linux's ephemeral range (32768 and up), so the kernel
#: never hands one to another socket's bind(0) or outgoing connection while a test holds it
#: unbound (a Redis restarted on its port), split in one block per pytest-xdist worker.
PORT_BASE, PORT_BLOCK, PORT_BLOCKS = 20000, 600, 20
_ports_given = itertools.count()  # per process: each xdist worker has its own


def _worker_index() -> int:
    """This pytest-xdist worker's number (gw3: 3), 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker.removeprefix("gw") or 0) % PORT_BLOCKS


def key_of(server: LocalIcaServer, tenant: str | None = None) -> str:
    """The store key of an ICA manager for `server`'s API key (and `tenant`)."""
    url = str(check_base_url(server.ica_base_url))
    return store_key("ica", url, ApiKey(server.api_key), [f"tenant={tenant or ''}"])


def free_port() -> int:
    """A loopback port nothing listens on now, of this xdist worker's block: parallel workers
    never share one, and one worker takes its ports in turn (bound to check, then closed)."""
    first = PORT_BASE + _worker_index() * PORT_BLOCK
    for _ in range(PORT_BLOCK):
        port = first + next(_ports_given) % PORT_BLOCK
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # another program's: try the next
        return port
    raise RuntimeError(f"no free loopback port in {first}..{first + PORT_BLOCK - 1}")


class FailingResolver(aiohttp.abc.AbstractResolver):
    """A resolver that fails every lookup the way aiohttp's own do (no DNS here)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        """Fail like a lookup of an unknown name."""
        raise OSError(None, "Name or service not known")

    async def close(self) -> None:
        """Nothing to release."""


ROOT = Path(__file__).resolve().parent.parent


async def run_cli(*args: str, env: dict[str, str], within: float = 20) -> tuple[int, str, str]:
    """`python -m aioica_auth ARGS` in a subprocess, without blocking the event loop (a
    local server may run in it): (exit status, stdout, stderr), killed after `within` s."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioica_auth",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def calls_until_refused(
    call: Callable[[], object], error: type[Exception], limit: float = 20
) -> tuple[int, Exception | None]:
    """Call `call` (blocking; run it in a thread) every 20 ms until it raises `error`, for
    at most `limit` seconds: (the calls that succeeded, the error or None)."""
    accepted = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            call()
        except error as exc:
            return accepted, exc
        accepted += 1
        time.sleep(0.02)
    return accepted, None


class LazyModule:
    """A module imported on its first attribute read, not when the test module is.

    Every xdist worker collects every test module; libica's generated clients take about 2 s
    of CPU to import, so the modules that use them import them lazily, and only the worker that
    runs those tests pays (the tests share an ``xdist_group``).
    """

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_lazy_name", name)

    def __setattr__(self, attribute: str, value: object) -> None:
        # Setting through the proxy would change the proxy, not the module: say so.
        raise AttributeError(f"set {attribute} on the module {self._lazy_name}, not its proxy")

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._lazy_name), attribute)

    def __repr__(self) -> str:
        return f"LazyModule({self._lazy_name!r})"
