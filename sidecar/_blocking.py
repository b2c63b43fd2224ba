"""BlockingMeshClient: MeshClient for scripts, without `await`.

Through a sidecar, each calling thread gets its own blocking link (transport.SyncLink): no
event loop runs per call and no call is handed to another thread, so a small request costs
about what a blocking socket round trip costs. Threads share one buffer pool.

Proxyless (`discovery=`), it needs what MeshClient has (a registry watch, a router with its
active checks, links shared by all callers): a MeshClient runs on an event loop in a thread
of the client's own, and calls are handed to it.
"""

from __future__ import annotations

import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import numpy.typing as npt

import transport
from transport import BufferPool, Limits, ShmStats, SyncLink, TlsFiles

from ._background import LoopThread
from ._client import MeshClient, Tensors, alloc_in, decode_reply
from ._errors import InvalidInput, translate
from ._links import ShmSlot
from ._request import build_request, placer_for
from ._router import RoutePolicy
from ._settings import DEFAULT_TRUST_DOMAIN, Settings

T = TypeVar("T")


class _PerThread(threading.local):
    link: SyncLink | None = None


class BlockingMeshClient:
    """The same calls as MeshClient, blocking; safe to use from many threads at once.

    `sidecar` ("HOST:PORT", "unix:/path") or, proxyless, `discovery` (a `--discovery` URI)
    with `policy` and `connections` as for MeshClient. Use as a context manager, or call
    `close()` once every thread is done with it. Raises InvalidInput for a bad address.
    """

    def __init__(
        self,
        sidecar: str | None = None,
        *,
        discovery: str | None = None,
        connections: int = 1,
        limits: Limits | None = None,
        pool: BufferPool | None = None,
        shm_dir: str | None = None,
        arrow_in_shm: bool = False,
        policy: RoutePolicy | None = None,
        tls: TlsFiles | None = None,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> None:
        limits = limits or Settings().limits()
        pool = pool or BufferPool()
        # Validates the address or URI now, not on first call.
        client = MeshClient(
            sidecar,
            discovery=discovery,
            connections=connections,
            limits=limits,
            pool=pool,
            shm_dir=shm_dir,
            arrow_in_shm=arrow_in_shm,
            policy=policy,
            tls=tls,
            trust_domain=trust_domain,
        )
        self._sidecar = sidecar or ""
        self.limits = limits
        self.pool = pool
        self._shm = ShmSlot(shm_dir)
        self._arrow_in_shm = arrow_in_shm
        self._local = _PerThread()
        self._links: list[SyncLink] = []
        self._lock = threading.Lock()
        self._closed = False
        self._proxyless: tuple[MeshClient, LoopThread] | None = None
        if discovery is not None:
            self._proxyless = client, LoopThread("arrowmesh-client")

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
        if self._proxyless is not None:
            client, loop = self._proxyless
            call = client.infer(
                service, inputs, timeout=timeout, affinity_key=affinity_key, traceparent=traceparent
            )
            return self._on_loop(loop, call)
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
        if self._proxyless is not None:
            raise InvalidInput("a proxyless client has no sidecar to ping")
        try:
            return self._link().ping(timeout)
        except transport.TransportError as exc:
            raise translate(exc) from exc

    def alloc(self, shape: int | Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """As `MeshClient.alloc`."""
        if self._proxyless is not None:
            client, loop = self._proxyless
            return self._on_loop(loop, client.alloc(shape, dtype))
        return alloc_in(self._shm.make(), shape, dtype)

    def shm_stats(self) -> ShmStats | None:
        """As `MeshClient.shm_stats`."""
        if self._proxyless is not None:
            return self._proxyless[0].shm_stats()
        return None if self._shm.domain is None else self._shm.domain.stats()

    def close(self) -> None:
        """Close every thread's link (proxyless: the registry watch and the event loop's
        thread) and leave the shared-memory directory."""
        with self._lock:
            closed, self._closed = self._closed, True
            links, self._links = self._links, []
        if self._proxyless is not None and not closed:
            client, loop = self._proxyless
            try:
                loop.call(client.aclose())
            finally:
                loop.close()
        for link in links:
            link.close()
        domain, self._shm.domain = self._shm.domain, None
        if domain is not None:
            domain.close()

    def __enter__(self) -> BlockingMeshClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _on_loop(self, loop: LoopThread, call: Coroutine[Any, Any, T]) -> T:
        """Run `call` on the proxyless client's loop. Raises InvalidInput once closed."""
        with self._lock:
            closed = self._closed
        if closed:
            call.close()
            raise InvalidInput("this BlockingMeshClient is closed")
        return loop.call(call)

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
