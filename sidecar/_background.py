"""An event loop in a thread of its own, for blocking callers of asyncio code.

A proxyless BlockingMeshClient needs what MeshClient has: a registry watch, a router with
its active checks, links shared by every caller. They live on one loop in one daemon
thread, made with the client; calling threads hand it coroutines and block on the result.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._loop import run

T = TypeVar("T")


class LoopThread:
    """A running event loop in a daemon thread; `call` runs a coroutine there and blocks.

    `close()` stops it: tasks still running are cancelled, worker threads joined.
    """

    def __init__(self, name: str) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._loop is None:
            raise RuntimeError(f"the event loop of {name!r} did not start")

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and return what it returns (raise what it raises).

        Raises RuntimeError once closed. If the caller is interrupted, `coro` is cancelled.
        """
        if self._loop is None or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("the event loop is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop and join its thread; idempotent."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join()

    def _run(self) -> None:
        try:
            run(self._serve())  # cancels what is left, shuts down worker threads
        finally:
            self._started.set()  # also when the loop could not start: __init__ raises

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._started.set()
        await self._stop.wait()
