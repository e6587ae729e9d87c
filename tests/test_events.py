"""Named log events: every log call names a member of the one registry (`_events.Event`), real
scenarios against the local server log only registered events with no secret in them, and the
docs' table of events (docs/observability.md) is the registry."""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from aioica_auth import (
    ApiKey,
    BasicAuth,
    ConsoleTokenApi,
    FileTokenStore,
    PsToken,
    TokenManager,
    TokenUnavailableError,
)
from aioica_auth._events import Event, fields
from aioica_auth.testing import LocalIcaServer

from .fleet.test_fleet import FlakyStore
from .support import find_secret, wait_until

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aioica_auth"
METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})
# Every attribute a plain record has: what is left of a record's __dict__ is its `extra`.
PLAIN = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}
REQUIRED = {
    Event.TOKEN_RENEWED,
    Event.TOKEN_RENEWAL_FAILED,
    Event.TOKEN_INVALIDATED,
    Event.TOKEN_EXPIRED_UNAVAILABLE,
    Event.STORE_DEGRADED,
    Event.STORE_RECOVERED,
    Event.SESSION_KEEPALIVE_FAILED,
    Event.HTTP_REQUEST,
}


# -- (a) every log call names a registered event ----------------------------------------------


def _event_of(node: ast.expr | None) -> str | None:
    """The member named by `fields(Event.X, ...)` (or `fields(Event.X if c else Event.Y)`:
    each branch), as "X" or "X|Y"; None when `node` is no such call."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    if node.func.id != "fields" or not node.args:
        return None
    first = node.args[0]
    branches = [first.body, first.orelse] if isinstance(first, ast.IfExp) else [first]
    names = []
    for branch in branches:
        if not (
            isinstance(branch, ast.Attribute)
            and isinstance(branch.value, ast.Name)
            and branch.value.id == "Event"
        ):
            return None
        names.append(branch.attr)
    return "|".join(names)


def _log_calls() -> Iterator[tuple[str, ast.Call | ast.Attribute, str | None]]:
    """Each logging call of the package (outside `testing/`), and each logging method taken
    without being called (an alias would hide a call from this scan): where, the node, and
    the event it names ("X" for `Event.X`, None for none)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if "testing" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        loggers = {"logger"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and "getLogger" in ast.unparse(node.value):
                loggers |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        # `extra = fields(Event.X, ...)` (or any name) in a function, then `extra=extra`.
        bound: dict[tuple[int, str], str | None] = {}
        called: set[int] = set()
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target = node.targets[0]
                    if isinstance(target, ast.Name):
                        bound[(id(func), target.id)] = _event_of(node.value)
            for node in ast.walk(func):
                if not isinstance(node, ast.Call) or not _is_method(node.func, loggers):
                    continue
                called.add(id(node.func))
                extra = next((k.value for k in node.keywords if k.arg == "extra"), None)
                if isinstance(extra, ast.Name):
                    event = bound.get((id(func), extra.id))
                else:
                    event = _event_of(extra)
                yield f"{path.relative_to(ROOT)}:{node.lineno}", node, event
        for node in ast.walk(tree):
            if _is_method(node, loggers) and id(node) not in called:
                assert isinstance(node, ast.Attribute)
                yield f"{path.relative_to(ROOT)}:{node.lineno}", node, None


def _is_method(node: ast.AST, loggers: set[str]) -> bool:
    if not isinstance(node, ast.Attribute) or node.attr not in METHODS:
        return False
    target = node.value
    if isinstance(target, ast.Name):
        return target.id in loggers
    return isinstance(target, ast.Call) and ast.unparse(target.func).endswith("getLogger")


def test_every_log_call_passes_a_registered_event() -> None:
    """Every `logger.debug/info/warning/error/exception/critical/log` of the package (outside
    `testing/`) passes `extra=fields(Event.X, ...)` with a member of the registry, and every
    member is written somewhere (no dead names)."""
    calls = list(_log_calls())
    assert len(calls) >= 30, "the scan found too few logging calls: is it still looking?"
    wrong = [
        where
        for where, node, event in calls
        if event is None or not set(event.split("|")) <= set(Event.__members__)
    ]
    assert not wrong, "a logging call without extra=fields(Event.X, ...):\n" + "\n".join(wrong)
    used = {name for _, _, event in calls if event for name in event.split("|")}
    assert set(Event.__members__) - used == set()


def test_fields_refuses_what_logging_reserves() -> None:
    """`fields` names the event and refuses a key `makeRecord` would choke on at log time."""
    assert fields(Event.TOKEN_INVALIDATED, token_id="abcd1234") == {
        "event": "token.invalidated",
        "token_id": "abcd1234",
    }
    for key in ("message", "asctime", "msg", "args", "name", "levelname", "event"):
        with pytest.raises(ValueError, match=key):
            fields(Event.TOKEN_INVALIDATED, **{key: 1})


def test_the_registry_names_are_stable_dotted_and_documented() -> None:
    """Names are `area.what` in lower case, unique, and each says its level, when and fields."""
    assert len(set(Event)) == len(Event.__members__)
    for event in Event:
        assert re.fullmatch(r"[a-z]+\.[a-z_]+", event.value), event
        assert event.name == event.value.replace(".", "_").upper(), event
        assert event.when, event
        levels = set(re.findall(r"[A-Z]+", event.level))
        assert levels, event
        assert levels <= {"DEBUG", "INFO", "WARNING", "ERROR"}, event


# -- (b) real scenarios log registered events, and no secret ---------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _recorded() -> Iterator[list[logging.LogRecord]]:
    """Every record of `aioica_auth` and its children, DEBUG included."""
    logger = logging.getLogger("aioica_auth")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _ps_token(srv: LocalIcaServer) -> str:
    async with aiohttp.ClientSession() as s:
        answer = await ConsoleTokenApi(s, srv.base_url).create_token(
            ApiKey(srv.api_key), return_session_token=True
        )
    assert answer.access_token
    return answer.access_token


async def _scenarios(
    srv: LocalIcaServer, tmp_path: Path, records: list[logging.LogRecord]
) -> list[str]:
    """Mint, refresh, fail, recover, invalidate, starve, share through a failing store and
    keep a psToken session alive through a 503: the secrets used, for the scan."""
    basic = BasicAuth(srv.username, srv.password)
    async with TokenManager.for_ica(basic, base_url=srv.ica_base_url, maturity=0) as m:
        first = await m.token()  # minted
        await wait_until(lambda: m.stats.refreshes >= 1, 10)  # refreshed
        fault = srv.outage("*")  # renewals fail while the token is still valid
        await wait_until(lambda: m.stats.failures >= 2, 10)
        srv.remove_fault(fault)
        await wait_until(lambda: m.stats.refreshes + m.stats.mints >= 3, 10)
        token = await m.token()
        assert m.invalidate(token)  # a resource's 401
        assert (await m.token()).value not in (token.value, first.value)
    async with TokenManager.for_ica(
        ApiKey(srv.api_key), base_url=srv.ica_base_url, acquire_timeout=0.5, retry_max=0.2
    ) as m:
        srv.outage("ica.create")  # no token at all: a caller is refused
        with pytest.raises(TokenUnavailableError):
            await m.token()
        srv.clear_faults()
    flaky = FlakyStore(FileTokenStore(tmp_path))
    flaky.mode = "raise"
    store_manager = TokenManager.for_ica(
        ApiKey(srv.api_key), base_url=srv.ica_base_url, store=flaky, request_timeout=0.5
    )
    async with store_manager as m:
        await m.token()  # minted alone, the store failing
        flaky.mode = "ok"
        mints = m.stats.mints
        await wait_until(lambda: m.stats.mints > mints, 10)  # through the store again
    ps = await _ps_token(srv)
    console = TokenManager.for_console(PsToken(ps), base_url=srv.base_url, keepalive_interval=0.2)
    async with console as m:
        await m.headers()
        srv.inject("console.refresh", status=503)
        failed = Event.SESSION_KEEPALIVE_FAILED
        await wait_until(lambda: any(getattr(r, "event", 0) == failed for r in records), 5)
    return [srv.api_key, srv.password, ps]


async def test_scenarios_log_only_registered_events_without_secrets(tmp_path: Path) -> None:
    """Every record the scenarios make (the test server's own aside) carries a registered
    `event`; each required event is seen; no message, argument or field holds a secret."""
    with _recorded() as records:
        async with LocalIcaServer(lifetime=1.5) as srv:
            secrets = await _scenarios(srv, tmp_path, records)
    ours = [r for r in records if not r.name.startswith("aioica_auth.testing")]
    assert ours
    unnamed = [r.getMessage() for r in ours if getattr(r, "event", None) not in set(Event)]
    assert not unnamed, unnamed
    seen: set[str] = {r.event for r in ours}  # type: ignore[attr-defined]
    missing = {event.value for event in REQUIRED} - seen
    assert not missing, sorted(missing)
    for record in ours:
        data = {k: v for k, v in record.__dict__.items() if k not in PLAIN}
        text = f"{record.getMessage()} {record.args!r} {data!r}"
        assert find_secret(text, secrets) is None, record.event  # type: ignore[attr-defined]
    failed = [r for r in ours if r.event == Event.TOKEN_RENEWAL_FAILED]  # type: ignore[attr-defined]
    assert {r.status for r in failed} >= {503}  # type: ignore[attr-defined]
    renewed = {r.provenance for r in ours if r.event == Event.TOKEN_RENEWED}  # type: ignore[attr-defined]
    assert renewed >= {"minted", "refreshed"}


# -- (c) the docs' table is the registry -----------------------------------------------------


def _row(event: Event) -> str:
    return f"| `{event.value}` | {event.level} | {event.when} | {event.fields or '—'} |"


def test_the_docs_table_of_events_is_the_registry() -> None:
    """The "Log events" table of docs/observability.md lists the registry's events, in its
    order, with its levels, descriptions and fields (`_row` writes them)."""
    page = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    section = page.split("\n## Log events\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [_row(event) for event in Event]


def test_the_docs_filter_example_reads_the_event_and_its_fields() -> None:
    """The docs' example filter (docs/observability.md, "Log events") sees a `store.degraded`
    record's event and reason."""
    page = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    section = page.split("\n## Log events\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    alerts: list[tuple[str, str]] = []
    namespace: dict[str, object] = {"logging": logging, "alert": lambda *a: alerts.append(a)}
    logger = logging.getLogger("aioica_auth")
    exec(code, namespace)  # our own docs
    try:
        extra = fields(Event.STORE_DEGRADED, store="FileTokenStore()", reason="timed out")
        logger.warning("token store failed", extra=extra)
        logger.warning("another line", extra=fields(Event.TOKEN_INVALIDATED, token_id="ab"))
    finally:
        logger.removeFilter(namespace["alert_on_trouble"])  # type: ignore[arg-type]
    assert alerts == [("store.degraded", "timed out")]
