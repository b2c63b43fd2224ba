"""BlockingMeshClient: MeshClient for scripts, without `await`.

Each calling thread gets its own blocking link (transport.SyncLink): no event loop runs
per call and no call is handed to another thread, so a small request costs about what a
blocking socket round trip costs. Threads share one buffer pool.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy.typing as npt

import transport
from transport import BufferPool, Limits, ShmStats, SyncLink

from ._client import (
    MeshClient,
    Tensors,
    alloc_in,
    build_request,
    decode_reply,
    placer_for,
)
from ._errors import InvalidInput, translate
from ._links import ShmSlot
from ._settings import Settings


class _PerThread(threading.local):
    link: SyncLink | None = None


class BlockingMeshClient:
    """The same calls as MeshClient, blocking; safe to use from many threads at once.

    Use as a context manager, or call `close()` once every thread is done with it.
    """

    def __init__(
        self,
        sidecar: str,
        *,
        limits: Limits | None = None,
        pool: BufferPool | None = None,
        shm_dir: str | None = None,
        arrow_in_shm: bool = False,
    ) -> None:
        MeshClient(sidecar)  # validates the address now, not on first call
        self._sidecar = sidecar
        self.limits = limits or Settings().limits()
        self.pool = pool or BufferPool()
        self._shm = ShmSlot(shm_dir)
        self._arrow_in_shm = arrow_in_shm
        self._local = _PerThread()
        self._links: list[SyncLink] = []
        self._lock = threading.Lock()
        self._closed = False

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
        try:
            link = self._link()
            place = placer_for(link.placer, self._arrow_in_shm)
            header, parts = build_request(
                service, inputs, self.limits, affinity_key, traceparent, place
            )
            reply = link.request(header, parts, timeout=timeout)
            return decode_reply(reply, self.limits)
        except transport.TransportError as exc:
            raise translate(exc) from exc

    def ping(self, timeout: float = 5.0) -> float:
        """As `MeshClient.ping`."""
        try:
            return self._link().ping(timeout)
        except transport.TransportError as exc:
            raise translate(exc) from exc

    def alloc(self, shape: int | Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """As `MeshClient.alloc`."""
        return alloc_in(self._shm.make(), shape, dtype)

    def shm_stats(self) -> ShmStats | None:
        """As `MeshClient.shm_stats`."""
        return None if self._shm.domain is None else self._shm.domain.stats()

    def close(self) -> None:
        """Close every thread's link and leave the shared-memory directory."""
        with self._lock:
            self._closed = True
            links, self._links = self._links, []
        for link in links:
            link.close()
        domain, self._shm.domain = self._shm.domain, None
        if domain is not None:
            domain.close()

    def __enter__(self) -> BlockingMeshClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _link(self) -> SyncLink:
        link = self._local.link
        if link is not None and not link.closed:
            return link
        with self._lock:
            if self._closed:
                raise InvalidInput("this BlockingMeshClient is closed")
        link = SyncLink.connect(
            self._sidecar, limits=self.limits, pool=self.pool, shm=self._shm.make()
        )
        with self._lock:
            self._links = [ln for ln in self._links if not ln.closed] + [link]
        self._local.link = link
        return link
