"""The load on one route: callers that send requests, block by block, and time each one.

- mesh, 1 caller: `BlockingMeshClient`, a blocking link and no event loop (the cheapest
  client; bench/peers/_arrowmesh.py measured it against MeshClient). Shared memory is off
  for 4 KiB callers: the tensor goes inline either way (on, the costs measured the same).
- mesh, N callers: N `MeshClient`s as tasks on one uvloop loop, each with its own link, as
  N apps on the host would have. One thread per caller with its own BlockingMeshClient was
  tried first: on the one CPU the client is pinned to, 16 threads hand the GIL around, and
  in a trial on the 2-core VM the direct route's p99 went from 0.55 to 13-20 ms and its
  throughput from 41k to 15k-30k requests/s between rounds; the tasks kept both steady.
- HTTP: the lean client of `_http1` (a pre-built request, a small parser), blocking for
  1 caller, asyncio streams for N.
- large: `BlockingMeshClient` in the run's shared-memory directory, its input either an
  `alloc()` array (sent by reference) or an ordinary one (copied in on every call).

Every reply's size is checked; `check()` compares one whole reply with what was sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from bench._errors import BenchError, EchoMismatch
from bench.peers._base import DataPath, host_port
from sidecar import BlockingMeshClient, MeshClient
from sidecar._loop import new_event_loop
from transport import ShmStats

from ._http1 import Response, ResponseParser, build_request

Array = npt.NDArray[Any]
LargeMode = Literal["alloc", "copy"]

MESH_NBYTES: Final = 4096
LARGE_NBYTES: Final = 64 << 20
_HTTP_TYPE: Final = "application/json"
_READ_SIZE: Final = 65536


class Load(Protocol):
    """Callers on one route."""

    @property
    def concurrency(self) -> int:
        """How many callers send at once."""
        ...

    def check(self) -> None:
        """One request per caller, each reply compared with what was sent.

        Raises EchoMismatch, or BenchError if the route fails.
        """
        ...

    def block(self, per_caller: int) -> list[int]:
        """Each caller sends `per_caller` requests, one after another; every request's
        latency in nanoseconds. Raises EchoMismatch, BenchError."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


def mesh_payload(nbytes: int) -> Array:
    """`nbytes` of random float32, the same in every run."""
    return np.random.default_rng(nbytes).random(nbytes // 4, dtype=np.float32)


def http_body() -> bytes:
    """A small JSON body (an OIP-style request of 16 numbers), the same in every run."""
    data = [round(float(v), 6) for v in mesh_payload(64)]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [16], "data": data}]}
    return json.dumps(body).encode()


def _same(out: Array, sent: Array, route: str) -> None:
    if out.shape != sent.shape or not np.array_equal(out, sent):
        raise EchoMismatch(f"{route} returned a different tensor ({out.nbytes} bytes)")


def _nbytes(out: Array, sent: Array, route: str) -> None:
    if out.nbytes != sent.nbytes:
        raise EchoMismatch(f"{route}: sent {sent.nbytes} bytes, got {out.nbytes} back")


class BlockingMesh:
    """One caller with a BlockingMeshClient; with `shm_dir`, a large-tensor caller."""

    concurrency = 1

    def __init__(
        self,
        route: str,
        address: str,
        service: str,
        payload: Array,
        *,
        shm_dir: str = "",
        mode: LargeMode = "copy",
    ) -> None:
        self._route, self._service = route, service
        self._client = BlockingMeshClient(address, shm_dir=shm_dir)
        self._mode = mode
        self._sent = payload
        if shm_dir and mode == "alloc":
            self._client.ping()  # link, handshake and arena first
            staged: Array = self._client.alloc(payload.shape, payload.dtype)
            staged[...] = payload
            self._sent = staged

    def check(self) -> None:
        """One request, its reply compared whole."""
        _same(self._infer(), self._sent, self._route)

    def block(self, per_caller: int) -> list[int]:
        """`per_caller` timed requests."""
        samples: list[int] = []
        clock = time.perf_counter_ns
        for _ in range(per_caller):
            start = clock()
            out = self._infer()
            samples.append(clock() - start)
            _nbytes(out, self._sent, self._route)
        return samples

    def expected_path(self, size: int) -> DataPath:
        """How the tensor should travel: by reference if allocated in shared memory."""
        return "by-reference" if self._mode == "alloc" else "copy-in"

    def shm_stats(self) -> ShmStats | None:
        """The client's shared-memory counters (None when shared memory is off)."""
        return self._client.shm_stats()

    def close(self) -> None:
        """Drop the staged input, close the link, leave the shared-memory directory."""
        self._sent = np.empty(0, np.float32)
        self._client.close()

    def _infer(self) -> Array:
        out: Array = self._client.infer(self._service, {"x": self._sent})["y"]
        return out


class _AsyncCallers:
    """`calls[i]()` is one request of caller i; callers run as tasks on one uvloop loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def run_block(
        self, calls: Sequence[Callable[[], Awaitable[None]]], per_caller: int
    ) -> list[int]:
        return self._loop.run_until_complete(self._block(calls, per_caller))

    async def _block(
        self, calls: Sequence[Callable[[], Awaitable[None]]], per_caller: int
    ) -> list[int]:
        samples: list[int] = []
        clock = time.perf_counter_ns

        async def caller(call: Callable[[], Awaitable[None]]) -> None:
            for _ in range(per_caller):
                start = clock()
                await call()
                samples.append(clock() - start)

        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(caller(call))
        return samples


class AsyncMesh:
    """`concurrency` MeshClients, one per caller, each with its own link."""

    def __init__(
        self, route: str, address: str, service: str, payload: Array, concurrency: int
    ) -> None:
        self.concurrency = concurrency
        self._route, self._service, self._sent = route, service, payload
        self._loop = new_event_loop()
        self._callers = _AsyncCallers(self._loop)
        self._clients = [MeshClient(address, shm_dir="") for _ in range(concurrency)]
        self._calls = [self._caller(client) for client in self._clients]

    def check(self) -> None:
        """One request per caller (each opens its link), every reply compared whole."""

        async def all_callers() -> None:
            outs = await asyncio.gather(*(self._infer(c) for c in self._clients))
            for out in outs:
                _same(out, self._sent, self._route)

        self._loop.run_until_complete(all_callers())

    def block(self, per_caller: int) -> list[int]:
        """Every caller sends `per_caller` timed requests."""
        return self._callers.run_block(self._calls, per_caller)

    def close(self) -> None:
        """Close every client, then the loop."""
        try:
            self._loop.run_until_complete(self._aclose())
        finally:
            self._loop.close()

    async def _aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))

    def _caller(self, client: MeshClient) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            _nbytes(await self._infer(client), self._sent, self._route)

        return call

    async def _infer(self, client: MeshClient) -> Array:
        out: Array = (await client.infer(self._service, {"x": self._sent}))["y"]
        return out


def _checked(response: Response, body: bytes, route: str, whole: bool) -> None:
    if response.status != 200:
        raise EchoMismatch(f"{route} answered {response.status}: {response.body[:200]!r}")
    if len(response.body) != len(body) or (whole and response.body != body):
        raise EchoMismatch(f"{route}: sent {len(body)} bytes, got {len(response.body)} back")


class BlockingHttp:
    """One caller on one keep-alive connection, blocking."""

    concurrency = 1

    def __init__(self, route: str, address: str, path: str, body: bytes) -> None:
        self._route, self._body = route, body
        self._request = build_request(address, path, body, _HTTP_TYPE)
        self._parser = ResponseParser()
        try:
            self._sock = socket.create_connection(host_port(address), timeout=None)
        except OSError as exc:
            raise BenchError(f"{route}: cannot connect to {address}: {exc}") from exc
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def check(self) -> None:
        """One request, its reply compared whole."""
        _checked(self._round_trip(), self._body, self._route, whole=True)

    def block(self, per_caller: int) -> list[int]:
        """`per_caller` timed requests."""
        samples: list[int] = []
        clock = time.perf_counter_ns
        for _ in range(per_caller):
            start = clock()
            response = self._round_trip()
            samples.append(clock() - start)
            _checked(response, self._body, self._route, whole=False)
        return samples

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def _round_trip(self) -> Response:
        self._sock.sendall(self._request)
        while (response := self._parser.next_response()) is None:
            data = self._sock.recv(_READ_SIZE)
            if not data:
                raise BenchError(f"{self._route}: the server closed the connection")
            self._parser.feed(data)
        return response


class _HttpConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = ResponseParser()

    async def round_trip(self, request: bytes, route: str) -> Response:
        self.writer.write(request)
        while (response := self.parser.next_response()) is None:
            data = await self.reader.read(_READ_SIZE)
            if not data:
                raise BenchError(f"{route}: the server closed the connection")
            self.parser.feed(data)
        return response


class AsyncHttp:
    """`concurrency` callers, each on its own keep-alive connection, on one uvloop loop."""

    def __init__(self, route: str, address: str, path: str, body: bytes, concurrency: int) -> None:
        self.concurrency = concurrency
        self._route, self._body = route, body
        self._request = build_request(address, path, body, _HTTP_TYPE)
        self._loop = new_event_loop()
        self._callers = _AsyncCallers(self._loop)
        host, port = host_port(address)
        try:
            self._connections = self._loop.run_until_complete(self._connect(host, port))
        except OSError as exc:
            self._loop.close()
            raise BenchError(f"{route}: cannot connect to {address}: {exc}") from exc
        self._calls = [self._caller(connection) for connection in self._connections]

    def check(self) -> None:
        """One request per caller, every reply compared whole."""

        async def all_callers() -> None:
            for c in self._connections:
                response = await c.round_trip(self._request, self._route)
                _checked(response, self._body, self._route, whole=True)

        self._loop.run_until_complete(all_callers())

    def block(self, per_caller: int) -> list[int]:
        """Every caller sends `per_caller` timed requests."""
        return self._callers.run_block(self._calls, per_caller)

    def close(self) -> None:
        """Close every connection, then the loop."""
        try:
            self._loop.run_until_complete(self._aclose())
        finally:
            self._loop.close()

    async def _aclose(self) -> None:
        for connection in self._connections:
            connection.writer.close()
        closed = (c.writer.wait_closed() for c in self._connections)
        await asyncio.gather(*closed, return_exceptions=True)

    async def _connect(self, host: str, port: int) -> list[_HttpConnection]:
        connections = []
        for _ in range(self.concurrency):
            # asyncio and uvloop set TCP_NODELAY on every TCP connection themselves.
            reader, writer = await asyncio.open_connection(host, port, limit=4 * _READ_SIZE)
            connections.append(_HttpConnection(reader, writer))
        return connections

    def _caller(self, connection: _HttpConnection) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            response = await connection.round_trip(self._request, self._route)
            _checked(response, self._body, self._route, whole=False)

        return call
