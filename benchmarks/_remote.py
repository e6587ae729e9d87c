"""The local server in a separate process, so its work does not share the client's event loop.

The parent talks to it over a pipe: `counts()`, `reset()`, `set(lifetime=...)`.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any


def _serve(conn: Connection, options: dict[str, Any]) -> None:
    asyncio.run(_main(conn, options))


async def _main(conn: Connection, options: dict[str, Any]) -> None:
    from aioica_auth.testing import LocalIcaServer

    loop = asyncio.get_running_loop()
    async with LocalIcaServer(**options) as server:
        conn.send((server.ica_base_url, server.base_url, server.resource_url, server.api_key))
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "stop":
                break
            if command == "counts":
                conn.send(
                    dict(server.counts) | {f"{e}:{s}": n for (e, s), n in server.statuses.items()}
                )
            elif command == "reset":
                server.reset_counters()
                conn.send(None)
            elif command == "set":
                for name, value in args.items():
                    setattr(server, name, value)
                conn.send(None)
    conn.send("stopped")


class RemoteServer:
    """A `LocalIcaServer` running in a child process."""

    def __init__(self, **options: Any) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, options), daemon=True)
        self._proc.start()
        if not self._conn.poll(30):
            raise RuntimeError("benchmark server did not start")
        self.ica_base_url, self.base_url, self.resource_url, self.api_key = self._conn.recv()

    def _ask(self, command: str, **args: Any) -> Any:
        self._conn.send((command, args))
        return self._conn.recv()

    def counts(self) -> dict[str, int]:
        return dict(self._ask("counts"))

    def reset(self) -> None:
        self._ask("reset")

    def set(self, **values: Any) -> None:
        self._ask("set", **values)

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(("stop", {}))
            self._conn.poll(10)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
