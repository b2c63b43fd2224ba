"""The pipeline program of the multi-host tests: driven over stdin and stdout, it calls
services with MeshClient and reads HTTP endpoints from inside its host's network namespace.

    python -m tests.multihost._caller

It prints {"id": 0, "result": "ready"} once imported, then reads one JSON command a line on
stdin, runs each as a task of its own, and answers on stdout with {"id": N, "result": R} or
{"id": N, "error": "..."} (and {"id": N, "progress": K} lines while a load runs). Commands,
by their "op":

    infer      {"sidecar", "service", "count", "workers", "elements", "timeout", "time_limit",
                "progress"}: `count` requests of `elements` float32 through the sidecar at
               HOST:PORT by `workers` concurrent callers, stopping early after `time_limit`
               seconds; every answer is checked (y == 2 x). A progress line every `progress`
               answers (0: none). R = {"ok", "failed", "errors" (the first ten)}.
    shm_stats  {"sidecar"}: the shared-memory counters of the client of that sidecar.
    http       {"method", "url"}: R = {"status", "text"} (admin endpoints, Consul's HTTP API).
    connect    {"address", "timeout"}: R = true if a TCP connection to HOST:PORT opens in time.

The end of stdin ends it: commands still running are cancelled, every client is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
from typing import Any

import aiohttp
import numpy as np

from sidecar import MeshClient

HTTP_TIMEOUT = 5.0
MAX_ERRORS = 10


class Caller:
    """The program's state: one MeshClient per sidecar address, one HTTP session."""

    def __init__(self, session: aiohttp.ClientSession, stack: contextlib.AsyncExitStack) -> None:
        self._session = session
        self._stack = stack
        self._clients: dict[str, MeshClient] = {}

    async def client(self, sidecar: str) -> MeshClient:
        if sidecar not in self._clients:
            self._clients[sidecar] = await self._stack.enter_async_context(MeshClient(sidecar))
        return self._clients[sidecar]

    async def run(self, command: dict[str, Any]) -> None:
        ident = command.pop("id")
        op = command.pop("op")
        try:
            if op == "infer":
                result: object = await self.infer(ident, **command)
            elif op == "shm_stats":
                stats = (await self.client(command["sidecar"])).shm_stats()
                result = None if stats is None else dataclasses.asdict(stats)
            elif op == "http":
                result = await self.http(**command)
            elif op == "connect":
                result = await connect(**command)
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # answered to the test, which fails on it
            emit(id=ident, error=f"{type(exc).__name__}: {exc}")
        else:
            emit(id=ident, result=result)

    async def infer(
        self,
        ident: int,
        *,
        sidecar: str,
        service: str,
        count: int,
        workers: int,
        elements: int,
        timeout: float,
        time_limit: float,
        progress: int = 0,
    ) -> dict[str, object]:
        client = await self.client(sidecar)
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + time_limit
        counts = {"ok": 0, "failed": 0}
        errors: list[str] = []
        numbers = iter(range(count))

        async def one(i: int) -> None:
            x = np.arange(elements, dtype=np.float32) + i
            try:
                y = (await client.infer(service, {"x": x}, timeout=timeout))["y"]
            except Exception as exc:  # counted and reported: the test asserts on it
                errors.append(f"request {i}: {type(exc).__name__}: {exc}")
                counts["failed"] += 1
                return
            if np.array_equal(y, x * 2):
                counts["ok"] += 1
            else:
                errors.append(f"request {i}: wrong answer {y[:4]}...")
                counts["failed"] += 1

        async def worker() -> None:
            for i in numbers:  # shared: each request is sent once, by one worker
                if loop.time() > stop_at:
                    return
                await one(i)
                done = counts["ok"] + counts["failed"]
                if progress and done % progress == 0:
                    emit(id=ident, progress=done)

        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
        return {**counts, "errors": errors[:MAX_ERRORS]}

    async def http(self, method: str, url: str) -> dict[str, object]:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with self._session.request(method, url, timeout=timeout) as response:
            return {"status": response.status, "text": await response.text()}


async def connect(address: str, timeout: float) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, int(port))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def emit(**fields: object) -> None:
    # Short lines to a pipe the test reads all the time: the write does not stall the loop.
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        caller = Caller(session, stack)
        emit(id=0, result="ready")
        running: set[asyncio.Task[None]] = set()
        while line := await reader.readline():
            task = asyncio.create_task(caller.run(json.loads(line)))
            running.add(task)
            task.add_done_callback(running.discard)
        for task in running:  # the test has gone: what it left running is moot
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
