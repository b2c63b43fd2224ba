"""BlockingMeshClient: MeshClient for scripts, without `await`.

Each calling thread drives its own event loop and links in that thread: handing every call
to a shared loop thread costs two thread wake-ups, several times a small request's round
trip on a 2-core machine. Threads share one buffer pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from transport import BufferPool, Limits

from ._client import MeshClient, Tensors
from ._errors import InvalidInput
from ._loop import new_event_loop

T = TypeVar("T")


class _PerThread(threading.local):
    loop: asyncio.AbstractEventLoop | None = None
    client: MeshClient | None = None


class BlockingMeshClient:
    """The same calls as MeshClient, blocking; safe to use from many threads at once.

    Use as a context manager, or call `close()` once every thread is done with it.
    """

    def __init__(
        self,
        sidecar: str,
        *,
        connections: int = 1,
        limits: Limits | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        MeshClient(sidecar)  # validates the address now, not on first call
        self._sidecar = sidecar
        self._connections = connections
        self._limits = limits or Limits()
        self._pool = pool or BufferPool()
        self._local = _PerThread()
        self._all: list[tuple[asyncio.AbstractEventLoop, MeshClient]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None

    def infer(
        self,
        service: str,
        inputs: Mapping[str, object],
        *,
        timeout: float | None = None,
        affinity_key: str | bytes | None = None,
        traceparent: str | None = None,
    ) -> Tensors:
        """As `MeshClient.infer`, blocking until the outputs arrive."""
        return self._run(
            lambda client: client.infer(
                service, inputs, timeout=timeout, affinity_key=affinity_key, traceparent=traceparent
            )
        )

    def ping(self, timeout: float = 5.0) -> float:
        """As `MeshClient.ping`."""
        return self._run(lambda client: client.ping(timeout))

    def _run(self, call: Callable[[MeshClient], Coroutine[Any, Any, T]]) -> T:
        if _loop_running():
            # Called from async code (a notebook, say): this thread's loop is busy, so
            # the call runs on a worker thread with a loop of its own.
            return self._worker().submit(self._run, call).result()
        loop, client = self._mine()
        return loop.run_until_complete(call(client))

    def _worker(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="arrowmesh-client")
            return self._executor

    def close(self) -> None:
        """Close every thread's links and loop."""
        if _loop_running():  # as in _run: this thread's loop is busy
            with ThreadPoolExecutor(1) as closer:
                closer.submit(self.close).result()
            return
        with self._lock:
            self._closed = True
            pairs, self._all = self._all, []
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown()
        for loop, client in pairs:
            loop.run_until_complete(client.aclose())
            loop.close()

    def __enter__(self) -> BlockingMeshClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _mine(self) -> tuple[asyncio.AbstractEventLoop, MeshClient]:
        local = self._local
        if local.loop is None or local.loop.is_closed():
            with self._lock:
                if self._closed:
                    raise InvalidInput("this BlockingMeshClient is closed")
                local.loop = new_event_loop()
                local.client = _run(local.loop, self._make())
                self._all.append((local.loop, local.client))
        assert local.client is not None
        return local.loop, local.client

    async def _make(self) -> MeshClient:
        return MeshClient(
            self._sidecar, connections=self._connections, limits=self._limits, pool=self._pool
        )


def _run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(coro)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
