"""MeshClient: send a dict of numpy arrays to a service, get a dict back."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import transport
from discovery import open_registry, parse_discovery_uri
from transport import BufferPool, Limits, Placer, ShmDomain, ShmStats, StreamLink, Tls, TlsFiles

from ._errors import InvalidInput, translate
from ._links import LinkPool, ShmSlot
from ._request import EncodedRequest, affinity, build_request, placer_for
from ._router import RoutePolicy, Router
from ._settings import DEFAULT_TRUST_DOMAIN, Settings

logger = logging.getLogger(__name__)

Tensors = dict[str, npt.NDArray[Any]]


class MeshClient:
    """Calls mesh services through a sidecar's (or a `serve()` process's) mesh port, or
    proxyless: finding, choosing and linking to endpoints itself.

    `sidecar` is "HOST:PORT" or "unix:/path/to/socket"; `discovery` (instead) is a
    `--discovery` URI (consul://, mdns://, static://) for the proxyless mode, where
    `policy` says how requests are spread and retried (peak-EWMA P2C by default). One client
    shares a pool of up to `connections` links per address among all concurrent callers.
    Tensors go through shared memory when the peer proves it shares `shm_dir` (default
    ARROWMESH_SHM_DIR, /dev/shm/arrowmesh; "" turns it off): each large tensor by
    descriptor, or with `arrow_in_shm` a large message as one Arrow IPC stream written
    into shared memory.
    Use as an async context manager, or call `aclose()`.
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
        if connections < 1:
            raise ValueError(f"connections={connections} must be at least 1")
        if (sidecar is None) == (discovery is None):
            raise InvalidInput("give MeshClient a sidecar address or a discovery URI, not both")
        if tls is not None and discovery is None:
            raise InvalidInput(
                "tls= is for proxyless clients; the local sidecar takes its app in plaintext"
                " on its --local-mesh-addr"
            )
        self._tls_files = tls
        self._trust_domain = trust_domain
        try:
            if sidecar is not None:
                transport.parse_address(sidecar)
            else:
                parse_discovery_uri(discovery, os.environ)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        self.limits = limits or Settings().limits()
        self.pool = pool or BufferPool()
        self._shm = ShmSlot(shm_dir)
        self._arrow_in_shm = arrow_in_shm
        self._discovery = discovery
        self._connections = connections
        self._policy = policy or RoutePolicy()
        self._router: Router | None = None
        self._opening: asyncio.Lock | None = None
        self._links = (
            None
            if sidecar is None
            else LinkPool(sidecar, connections, self.limits, self.pool, self._shm)
        )

    async def infer(
        self,
        service: str,
        inputs: Mapping[str, object],
        *,
        timeout: float | None = None,
        affinity_key: str | bytes | None = None,
        traceparent: str | None = None,
    ) -> Tensors:
        """Send `inputs` to `service` and return its outputs as read-only numpy arrays.

        Raises InvalidInput, Unavailable, DeadlineExceeded, RemoteError (HandlerError when
        the service's handler raised).
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            if self._links is not None:
                link = await self._links.get()
                place = placer_for(link.placer, self._arrow_in_shm)
                header, parts = build_request(
                    service, inputs, self.limits, affinity_key, traceparent, place
                )
                reply = await link.request(header, parts, deadline=deadline)
            else:
                reply = await self._routed(service, inputs, deadline, affinity_key, traceparent)
            return decode_reply(reply, self.limits)
        except transport.TransportError as exc:
            raise translate(exc) from exc

    async def _routed(
        self,
        service: str,
        inputs: Mapping[str, object],
        deadline: float | None,
        affinity_key: str | bytes | None,
        traceparent: str | None,
    ) -> transport.Message:
        """Proxyless: the request encoded once, sent on every try the router makes."""
        router = await self._proxyless()
        request = EncodedRequest(
            service,
            inputs,
            self.limits,
            affinity_key=affinity_key,
            traceparent=traceparent,
            arrow_in_shm=self._arrow_in_shm,
        )

        async def send(link: StreamLink, placer: Placer | None) -> transport.Message:
            header, parts = request.for_link(placer)
            return await link.request(header, parts, deadline=deadline)

        key = None if affinity_key is None else affinity(affinity_key).encode()
        try:
            return await router.send(service, send, key=key, deadline=deadline)
        finally:
            request.close()

    async def _proxyless(self) -> Router:
        """The in-process router, made (and its registry opened) on first use."""
        if self._router is not None:
            return self._router
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._router is None:
                tls = None
                if self._tls_files is not None:
                    try:
                        tls = await asyncio.to_thread(Tls, self._tls_files)
                    except transport.LinkClosed as exc:
                        raise InvalidInput(str(exc)) from None
                registry = open_registry(self._discovery, os.environ)
                await registry.__aenter__()
                self._router = Router(
                    registry,
                    limits=self.limits,
                    pool=self.pool,
                    shm=self._shm,
                    connections=self._connections,
                    owns_registry=True,
                    policy=lambda service: self._policy,
                    tls=tls,
                    trust_domain=self._trust_domain,
                )
        return self._router

    async def ping(self, timeout: float = 5.0) -> float:
        """Seconds for a PING round trip to the sidecar. Raises Unavailable, DeadlineExceeded."""
        if self._links is None:
            raise InvalidInput("a proxyless client has no sidecar to ping")
        try:
            link = await self._links.get()
            return await link.ping(timeout)
        except transport.TransportError as exc:
            raise translate(exc) from exc

    async def alloc(self, shape: int | Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """An array to fill and send without a copy: it lives in shared memory.

        Falls back to ordinary memory (sent by copy) when shared memory is off or full.
        """
        domain = await self._shm.get()
        return alloc_in(domain, shape, dtype)

    def shm_stats(self) -> ShmStats | None:
        """Shared-memory counters and occupancy, or None when shared memory is off."""
        return None if self._shm.domain is None else self._shm.domain.stats()

    async def aclose(self) -> None:
        """Close every link (and the registry) and leave the shared-memory directory."""
        if self._links is not None:
            await self._links.aclose()
        if self._router is not None:
            router, self._router = self._router, None
            await router.aclose()
        await self._shm.aclose()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def decode_reply(reply: transport.Message, limits: Limits) -> Tensors:
    """The output tensors of a reply. Raises transport.FrameError."""
    return transport.decode_tensors(reply.header.tensors, reply.body_view(), limits, reply.shared)


def alloc_in(
    domain: ShmDomain | None, shape: int | Sequence[int], dtype: npt.DTypeLike
) -> npt.NDArray[Any]:
    """An array in `domain`'s arenas, or in ordinary memory if there is no room."""
    array = None if domain is None else domain.alloc(shape, dtype)
    return np.empty(shape, dtype) if array is None else array
