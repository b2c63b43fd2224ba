"""MeshClient: send a dict of numpy arrays to a service, get a dict back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import numpy.typing as npt

import transport
from transport import BodyPart, BufferPool, Header, Kind, Limits, StreamLink

from ._errors import InvalidInput, translate
from ._settings import Settings
from ._trace import ensure_traceparent

Tensors = dict[str, npt.NDArray[Any]]


class _LinkPool:
    """Up to `size` links to one address, opened on demand and reopened when they close."""

    def __init__(self, address: str, size: int, limits: Limits, pool: BufferPool) -> None:
        self.address = address
        self._size = size
        self._limits = limits
        self._pool = pool
        self._links: list[StreamLink] = []
        self._opening: asyncio.Lock | None = None

    async def get(self) -> StreamLink:
        self._links[:] = [link for link in self._links if not link.closed]
        idle = min(self._links, key=lambda link: link.in_flight, default=None)
        if idle is not None and (idle.in_flight == 0 or len(self._links) >= self._size):
            return idle
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if len(self._links) < self._size:
                link = await transport.connect(self.address, limits=self._limits, pool=self._pool)
                self._links.append(link)
        return min(self._links, key=lambda link: link.in_flight)

    async def aclose(self) -> None:
        links, self._links = self._links, []
        await asyncio.gather(*(link.aclose() for link in links))


class MeshClient:
    """Calls mesh services through a sidecar's (or a `serve()` process's) mesh port.

    `sidecar` is "HOST:PORT" or "unix:/path/to/socket". One client shares a pool of up to
    `connections` links among all concurrent callers. Use as an async context manager, or
    call `aclose()`.
    """

    def __init__(
        self,
        sidecar: str,
        *,
        connections: int = 1,
        limits: Limits | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections={connections} must be at least 1")
        try:
            transport.parse_address(sidecar)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        self.limits = limits or Settings().limits()
        self.pool = pool or BufferPool()
        self._links = _LinkPool(sidecar, connections, self.limits, self.pool)

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
        header, parts = build_request(service, inputs, self.limits, affinity_key, traceparent)
        try:
            link = await self._links.get()
            reply = await link.request(header, parts, deadline=deadline)
            return decode_reply(reply, self.limits)
        except transport.TransportError as exc:
            raise translate(exc) from exc

    async def ping(self, timeout: float = 5.0) -> float:
        """Seconds for a PING round trip to the sidecar. Raises Unavailable, DeadlineExceeded."""
        try:
            link = await self._links.get()
            return await link.ping(timeout)
        except transport.TransportError as exc:
            raise translate(exc) from exc

    async def aclose(self) -> None:
        """Close every link."""
        await self._links.aclose()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def build_request(
    service: str,
    inputs: Mapping[str, object],
    limits: Limits,
    affinity_key: str | bytes | None,
    traceparent: str | None,
) -> tuple[Header, list[BodyPart]]:
    """The header and body parts of an infer request. Raises InvalidInput."""
    try:
        metas, parts, body_len = transport.encode_tensors(inputs, limits)
    except transport.TransportError as exc:
        raise InvalidInput(str(exc)) from None
    params: dict[str, object] = {} if affinity_key is None else {"affinity": _key(affinity_key)}
    header = Header(
        Kind.REQUEST,
        service=service,
        method="infer",
        traceparent=ensure_traceparent(traceparent),
        body_len=body_len,
        tensors=metas,
        params=params,
    )
    return header, parts


def decode_reply(reply: transport.Message, limits: Limits) -> Tensors:
    """The output tensors of a reply. Raises transport.FrameError."""
    return transport.decode_tensors(reply.header.tensors, reply.body_view(), limits)


def _key(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.hex()
