"""The CLI's commands that talk to a token endpoint: `token`, `whoami`, `details`.

`token` and `whoami` share their tokens across runs through the file store (`cache`)
unless `--no-cache`; `details` asks the console every time.

Credentials and the API root come from the same discovery as `TokenManager.from_environment`
(`_discovery`), with the command line's `--x-api-key-file`, `--base-url`, `-s/--server-url`
and `--region` first, as the icav2 CLI puts its flags before the environment. Sessions trust
the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yarl

from .._checks import MAX_TIMEOUT
from .._credentials import ApiKey, Credential, Jwt, PsToken
from .._discovery.api import (
    DiscoveredCredentials,
    credential_source,
    discover,
    given_jwt_problem,
    host_url,
)
from .._discovery.api import private_file_note as _private_file_note
from .._errors import DiscoveryError, InvalidResponseError, TokenStoreError
from .._manager import TokenManager
from .._models import converter
from .._token import Token
from .._wire.console import ConsoleTokenApi
from .base import PROG, Failure, UsageError, warn
from .cache import CliCache, cache_key, cacheable, force_refresh, invalidate, open_cache
from .decode import format_identity, identity, iso
from .progress import Watch, stderr_watch, within_timeout

__all__ = ["details_command", "resolve", "token_command", "whoami_command"]


def _key_file(path: str) -> tuple[Credential, str]:
    """The API key in `path` (`-`: stdin), surrounding whitespace dropped.

    Raises:
        UsageError: unreadable, empty, or not a usable key (the message never shows it).
    """
    if path == "-":
        text, where = sys.stdin.read(), "--x-api-key-file - (stdin)"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            msg = f"cannot read --x-api-key-file {path}: {why}"
            raise UsageError(msg) from None
        where = f"--x-api-key-file {path}"
    key = text.strip()
    if not key:
        msg = f"{where} is empty"
        raise UsageError(msg)
    try:
        credential = ApiKey(key)
    except ValueError as exc:  # names the field, never the value
        msg = f"{where}: {exc}"
        raise UsageError(msg) from None
    note = None if path == "-" else _private_file_note(Path(path))
    if note is not None:
        warn(note.message)
    return credential, where


def _given_base_url(args: argparse.Namespace, *, console: bool) -> tuple[str, str] | None:
    """The API root the command line names, and how it named it; None when it does not."""
    if args.base_url:
        return args.base_url, "--base-url"
    if args.server_url:
        return host_url(args.server_url, "" if console else "/ica/rest"), "--server-url"
    if args.region:
        if not console:
            raise UsageError("--region names a console region: add --console")
        return f"https://{args.region}.platform.illumina.com", "--region"
    return None


def resolve(
    args: argparse.Namespace, env: Mapping[str, str], *, console: bool
) -> DiscoveredCredentials:
    """The credential and API root for a command: its flags, then discovery.

    Raises:
        UsageError: a bad flag, or discovery found nothing usable (the message says what
            was tried); its warnings (deprecated names, open permissions) go to stderr.
    """
    if args.tenant is not None and not args.tenant.strip():
        raise UsageError("--tenant must not be empty")
    given = _key_file(args.x_api_key_file) if args.x_api_key_file else None
    base_url = _given_base_url(args, console=console)
    try:
        found, notes = discover(console=console, environ=env, base_url=base_url, credential=given)
    except DiscoveryError as exc:
        raise UsageError(str(exc)) from None
    for note in notes:
        warn(note.message)
    return found


def _timeouts(args: argparse.Namespace, *, watched: bool = False) -> dict[str, Any]:
    """The manager's timeouts. One request may take most of --timeout, leaving time to name
    why it failed; a `watched` wait (`within_timeout`) keeps --timeout itself, so the
    manager's own bound is a second beyond it and the person reads about --timeout."""
    timeout = min(args.timeout + 1.0, MAX_TIMEOUT) if watched else args.timeout
    return {"acquire_timeout": timeout, "request_timeout": round(min(30.0, 0.8 * args.timeout), 3)}


def _manager(
    found: DiscoveredCredentials, args: argparse.Namespace, cache: CliCache | None = None
) -> TokenManager:
    credential = found.credential
    if not found.console:
        return TokenManager.for_ica(
            credential,
            base_url=found.base_url,
            tenant=args.tenant,
            store=cache,
            **_timeouts(args, watched=True),
        )
    assert not isinstance(credential, Jwt)  # used as it is: see _fresh_token
    return TokenManager.for_console(
        credential,
        base_url=found.base_url,
        domain=args.tenant,
        store=cache,
        **_timeouts(args, watched=True),
    )


def _origin(found: DiscoveredCredentials) -> str:
    """The token endpoint's host and port, for the status line."""
    url = yarl.URL(found.base_url)
    return f"{url.host}:{url.port}" if url.port is not None else str(url.host)


def _given_jwt(found: DiscoveredCredentials, min_validity: float | None) -> Token:
    """A console JWT found (ICA_ACCESS_TOKEN, ...), as it is: no console endpoint renews one.

    Raises:
        Failure: it would not last --min-validity (its expiry and decoding are checked first,
            by `given_jwt_problem`).
    """
    assert isinstance(found.credential, Jwt)
    where = credential_source(found)
    try:
        token = Token.from_jwt(found.credential.token)
    except InvalidResponseError:
        raise Failure(f"{where} does not hold a decodable JWT; set ICAV2_X_API_KEY") from None
    left = _left(token)
    if left is not None and left <= (min_validity or 0.0):
        why = "has expired" if left <= 0 else "would not last --min-validity"
        msg = (
            f"the console JWT in {where} {why}, and the console cannot renew it; "
            "set ICAV2_X_API_KEY (an API key)"
        )
        raise Failure(msg)
    return token


def _left(token: Token) -> float | None:
    if token.expires_at is None:
        return None
    return (token.expires_at - dt.datetime.now(dt.UTC)).total_seconds()


async def _from_manager(
    found: DiscoveredCredentials,
    args: argparse.Namespace,
    cache: CliCache | None,
    min_validity: float | None,
) -> Token:
    async with _manager(found, args, cache) as manager:
        # A cached token short of --min-validity is renewed by the manager itself.
        return await manager.token(min_validity=min_validity)


async def _force_refresh(
    found: DiscoveredCredentials,
    args: argparse.Namespace,
    cache: CliCache,
    min_validity: float | None,
    watch: Watch,
) -> Token:
    """A new token, minted under the cache's lease (or one another run published since this
    one started), cached for the next runs; without the cache when the cache fails."""

    async def mint() -> Token:
        return await _from_manager(found, args, None, min_validity)

    started = getattr(args, "started", None)
    try:
        return await force_refresh(
            cache,
            cache_key(found, args.tenant),
            mint,
            since=time.time() if started is None else started,
            lease_ttl=2 * _timeouts(args)["request_timeout"] + 2,
            waiting=watch.waiting,
        )
    except (TokenStoreError, OSError):  # said once on stderr by CliCache
        return await mint()


def _invalidate(
    found: DiscoveredCredentials, args: argparse.Namespace, env: Mapping[str, str]
) -> int:
    """`token --invalidate`: drop the cached token, saying what was done on stderr."""
    if args.header or args.json or args.min_validity is not None:
        raise UsageError("--invalidate prints no token: drop --header, --json, --min-validity")
    if not cacheable(found):
        _say(
            args, f"no cached token to drop: tokens of {credential_source(found)} are never cached"
        )
        return 0

    async def drop() -> bool | None:
        cache = open_cache(found, args, env)
        if cache is None:
            return None
        try:
            return await invalidate(cache, cache_key(found, args.tenant))
        except (TokenStoreError, OSError):  # said once on stderr by CliCache
            return None
        finally:
            await cache.aclose()

    dropped = asyncio.run(drop())
    if dropped is None:
        _say(args, "no cached token to drop")
    elif dropped:
        _say(args, "cached token dropped: the next run mints a new one")
    else:
        _say(args, "the cached token was replaced meanwhile by another run: left in place")
    return 0


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {message}", file=sys.stderr)


def _fresh_token(
    found: DiscoveredCredentials, args: argparse.Namespace, env: Mapping[str, str]
) -> Token:
    """A token valid for `--min-validity` seconds (when the command has it), from `found`:
    the cached one while it lasts that long (unless --no-cache), else a new one."""
    min_validity: float | None = getattr(args, "min_validity", None) or None
    problem = given_jwt_problem(found)  # a JWT found that does not decode or has expired
    if problem is not None:
        raise Failure(problem)
    if found.console and isinstance(found.credential, Jwt):
        return _given_jwt(found, min_validity)

    async def fetch() -> Token:
        loop = asyncio.get_running_loop()
        quiet = bool(getattr(args, "quiet", False))
        watch = stderr_watch(_origin(found), args.timeout, quiet=quiet, started=loop.time())
        cache = open_cache(found, args, env)
        try:
            if cache is not None and getattr(args, "force_refresh", False):
                work = _force_refresh(found, args, cache, min_validity, watch)
            else:
                work = _from_manager(found, args, cache, min_validity)
            return await within_timeout(work, watch)
        finally:
            if cache is not None:
                await cache.aclose()

    token = asyncio.run(fetch())
    left = _left(token)
    if min_validity is not None and left is not None and left < min_validity:
        lifetime = "" if token.lifetime is None else f" (its tokens last {token.lifetime:g} s)"
        msg = (
            f"the freshest token the server gives is valid for {left:.0f} s, less than "
            f"--min-validity {min_validity:g} s{lifetime}"
        )
        raise Failure(msg)
    return token


def token_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`aioica-auth token`: print a fresh JWT (or its header, or JSON); with --invalidate,
    drop the cached one instead."""
    found = resolve(args, env, console=args.console)
    if args.invalidate:
        return _invalidate(found, args, env)
    token = _fresh_token(found, args, env)
    if args.header:
        print(f"Authorization: {token.authorization}")
    elif args.json:
        left = _left(token)
        expires_in = None if left is None else max(0, int(left))
        data = {"token": token.value, "expires_at": iso(token.expires_at), "expires_in": expires_in}
        print(json.dumps(data))
    else:
        print(token.value)
    return 0


def whoami_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`aioica-auth whoami`: who a fresh token speaks for, from its claims."""
    found = resolve(args, env, console=args.console)
    token = _fresh_token(found, args, env)
    now = dt.datetime.now(dt.UTC)
    who = identity(token, now)
    if args.json:
        print(json.dumps({**who, "source": found.source}, indent=2, default=str))
    else:
        print(format_identity(who, token, now, found.source))
    return 0


def details_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`aioica-auth details`: the console's token details, as JSON."""
    found = resolve(args, env, console=True)
    credential = found.credential

    async def fetch() -> Any:
        import aiohttp

        async with aiohttp.ClientSession(trust_env=True) as session:
            api = ConsoleTokenApi(
                session, found.base_url, timeout=_timeouts(args)["request_timeout"]
            )
            if isinstance(credential, PsToken | Jwt):
                return await api.get_token_details(credential)
            async with TokenManager.for_console(
                credential,
                base_url=found.base_url,
                session=session,
                domain=args.tenant,
                **_timeouts(args),
            ) as manager:
                token = await manager.token()
            return await api.get_token_details(Jwt(token.value))

    details = asyncio.run(fetch())
    print(json.dumps(converter.unstructure(details), indent=2))
    return 0
