"""The local HTTP listener's front: one kind of request in a fast lane, aiohttp for the rest.

aiohttp spends ~130 µs of interpreter time per request here (its request and response
objects, routing, a task per request), nearly half the budget of a whole hop in front of a
model server. So when a lane is set (inference on the OIP app this sidecar fronts, see
`_oip_lane`), a thin protocol owns each connection of the local HTTP listener. It reads
each request head; a request the lane wants, once its body is in, is served by the lane
and answered here; any other request is fed, byte for byte, to aiohttp's own protocol for
the connection, which parses and answers it as it always did. A lane body from POOLED_FROM
bytes on is received into a pooled, pre-faulted buffer; if the lane then declines the
request, aiohttp gets it whole.

Order: answers on a connection go out in request order. While the lane serves a request,
later ones wait. The lane takes a request only when aiohttp has answered every request fed
to it (`AnsweredLog`, aiohttp's access-log hook, runs after an answer's last byte is
written); until then aiohttp gets the next request too.

Only heads read here exactly as aiohttp reads them are split here: CRLF lines, HTTP/1.1,
at most one Content-Length, no Transfer-Encoding, Upgrade, Expect or `Connection: close`.
A connection that sends any other head (a chunked upload, an upgrade, HTTP/1.0, a head
over HEAD_LIMIT, garbage) is handed to aiohttp for good (`transport.set_protocol`), which
answers its errors and owns it from then on.

aiohttp's keep-alive timer cannot see the lane's requests, so the listener gives aiohttp
an unbounded one and this closes a connection idle for `keepalive` seconds instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from transport import BufferPool, RecvBuffer

logger = logging.getLogger(__name__)

HEAD_LIMIT: Final = 64 * 1024
# Lane bodies from this size on are received into the pool's pre-faulted buffers instead of
# growing a bytearray (fresh memory costs 4x-30x a memcpy here, see BASELINES.md).
POOLED_FROM: Final = 64 * 1024
HEAD_END: Final = b"\r\n\r\n"
# aiohttp's keep-alive for connections handed to the front (effectively never: see above).
INNER_KEEPALIVE: Final = 1e9
_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
_HANDED_TO_AIOHTTP: Final = frozenset({b"transfer-encoding", b"upgrade", b"expect"})
_REASONS: Final = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    408: "Request Timeout", 413: "Payload Too Large", 422: "Unprocessable Entity",
    429: "Too Many Requests", 499: "Client Closed Request", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


@dataclass(slots=True)
class LaneRequest:
    """A request for the lane: its target, its headers (lower-case names), its body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes | memoryview  # a memoryview on a pooled buffer from POOLED_FROM bytes on
    note: object = None  # what the lane's `takes` learnt of it, for `serve`


@dataclass(slots=True)
class LaneAnswer:
    """What the lane answers: a status, headers (Content-Length is added), a body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | memoryview = b""


class Lane(Protocol):
    """A kind of request served without aiohttp."""

    @property
    def max_body(self) -> int:
        """The largest body the lane takes; larger requests go to aiohttp."""

    def wants(self, method: bytes, target: bytes) -> bool:
        """True if the lane serves requests with this request line (a cheap check)."""

    def takes(self, request: LaneRequest) -> bool:
        """True if the lane serves this request (its body in); False sends it to aiohttp."""

    async def serve(self, request: LaneRequest) -> LaneAnswer:
        """The answer to `request` (errors too: this should not raise)."""


@dataclass(frozen=True, slots=True)
class _Head:
    method: bytes
    target: bytes
    length: int
    headers: dict[bytes, bytes]


@dataclass(slots=True)
class _Collecting:
    """A large lane request's body coming into a pooled buffer."""

    head: _Head
    raw_head: bytes  # as received, blank line included (aiohttp's if the lane says no)
    buffer: RecvBuffer
    target: memoryview
    filled: int = 0


class AnsweredLog(AbstractAccessLogger):
    """aiohttp's access-log hook, called once an answer is written: tells the connection's
    front that aiohttp has one request fewer in hand."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        transport = request.transport
        front = transport.get_protocol() if transport is not None else None
        if isinstance(front, FrontProtocol):
            front.answered()


def runner_options() -> dict[str, Any]:
    """`web.AppRunner` keyword arguments of a listener whose connections have a front."""
    return {
        "access_log_class": AnsweredLog,
        "access_log": logging.getLogger("sidecar.http.access"),
        "keepalive_timeout": INNER_KEEPALIVE,
    }


class FrontProtocol(asyncio.Protocol):
    """One connection of a listener with a lane (see the module doc). `inner` is aiohttp's
    protocol for the connection (its server's `__call__()`)."""

    def __init__(
        self, inner: asyncio.Protocol, lane: Lane, keepalive: float, pool: BufferPool
    ) -> None:
        self._inner = inner
        self._lane = lane
        self._keepalive = keepalive
        self._pool = pool
        self._collecting: _Collecting | None = None
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._feeding = 0  # bytes of a request's body still to pass to aiohttp as they come
        self._with_inner = 0  # requests fed to aiohttp and not answered yet
        self._serving: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._last = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def with_aiohttp(self) -> int:
        """Requests fed to aiohttp and not answered yet."""
        return self._with_inner

    @property
    def open(self) -> bool:
        """The connection is open (handed to aiohttp or not)."""
        return self._transport is not None and not self._transport.is_closing()

    @property
    def serving(self) -> bool:
        """The lane is serving a request of this connection."""
        return self._serving is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet passed on (a head or a lane request's body)."""
        collecting = self._collecting.filled if self._collecting is not None else 0
        return len(self._buffer) + collecting

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are lookalikes
        self._inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._last = time.monotonic()
        if self._feeding:
            n = min(self._feeding, len(data))
            self._inner.data_received(data if n == len(data) else data[:n])
            self._feeding -= n
            if n == len(data):
                return
            data = data[n:]
        if self._collecting is not None:
            data = self._collect(data)
            if not data:
                return
        self._buffer += data
        self._dispatch()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._serving is not None:
            self._serving.cancel()
            self._serving = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._buffer.clear()
        self._collecting = None  # its pooled buffer goes back
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._inner.resume_writing()

    # Bookkeeping aiohttp's side calls

    def answered(self) -> None:
        """aiohttp wrote its answer to a request fed to it."""
        self._with_inner = max(self._with_inner - 1, 0)
        self._last = time.monotonic()
        if not self._with_inner:
            self._dispatch()

    # The split

    def _dispatch(self) -> None:
        buffer = self._buffer
        while buffer and self._serving is None and self._transport is not None:
            end = buffer.find(HEAD_END, 0, HEAD_LIMIT)
            if end < 0:
                if len(buffer) >= HEAD_LIMIT:
                    self._hand_over()
                return
            head = _parse(bytes(buffer[:end]))
            if head is None:
                self._hand_over()
                return
            start = end + len(HEAD_END)
            total = start + head.length
            lane = self._lane
            if (
                not self._with_inner
                and head.length <= lane.max_body
                and lane.wants(head.method, head.target)
            ):
                if head.length >= POOLED_FROM:
                    self._start_collecting(head, start)
                    return
                if len(buffer) < total:
                    return  # the body is not all in yet (less than POOLED_FROM)
                with memoryview(buffer) as view:  # one copy, not a bytearray slice's two
                    raw = bytes(view[:total])
                del buffer[:total]
                if self._offer(head, memoryview(raw)[start:]):
                    return
                self._with_inner += 1
                self._inner.data_received(raw)
                continue
            # aiohttp's: the head and what is in of the body now, the rest as it comes.
            n = min(total, len(buffer))
            self._with_inner += 1
            self._feeding = total - n
            with memoryview(buffer) as view:
                chunk = bytes(view[:n])
            del buffer[:n]
            self._inner.data_received(chunk)

    def _offer(self, head: _Head, body: bytes | memoryview) -> bool:
        """Start serving the request in the lane if it takes it; False if it does not."""
        request = LaneRequest(
            head.method.decode("ascii"),
            head.target.decode("latin-1"),
            {k.decode(): v.decode("latin-1") for k, v in head.headers.items()},
            body,
        )
        if not self._lane.takes(request):
            return False
        self._serving = asyncio.get_running_loop().create_task(self._serve(request))
        return True

    def _start_collecting(self, head: _Head, start: int) -> None:
        """Receive a large lane request's body into a pooled buffer, from what is in."""
        buffer = self._pool.acquire(head.length)
        collecting = _Collecting(head, bytes(self._buffer[:start]), buffer, buffer.writable)
        del self._buffer[:start]
        self._collecting = collecting
        rest = self._collect(bytes(self._buffer))
        self._buffer = bytearray(rest)

    def _collect(self, data: bytes) -> bytes:
        """Copy `data` into the body being collected; what is beyond it. A full body is
        offered to the lane (or fed to aiohttp, head first, if it says no)."""
        collecting = self._collecting
        assert collecting is not None
        n = min(len(data), collecting.buffer.nbytes - collecting.filled)
        collecting.target[collecting.filled : collecting.filled + n] = memoryview(data)[:n]
        collecting.filled += n
        if collecting.filled < collecting.buffer.nbytes:
            return b""
        self._collecting = None
        body = collecting.buffer.memory()
        if not self._offer(collecting.head, body):
            self._with_inner += 1
            self._inner.data_received(collecting.raw_head + bytes(body))
        return data[n:]

    def _hand_over(self) -> None:
        """Give the connection to aiohttp for good, with what is buffered."""
        transport = self._transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport.set_protocol(self._inner)
        data, self._buffer = bytes(self._buffer), bytearray()
        if self._write_paused:
            self._inner.pause_writing()
        self._inner.data_received(data)

    async def _serve(self, request: LaneRequest) -> None:
        try:
            answer = await self._lane.serve(request)
        except Exception as exc:  # a lane's bug: still an answer, in the protocol's form
            logger.exception("fast lane failed", extra={"target": request.target})
            answer = LaneAnswer(
                500, [("Content-Type", "application/json")],
                json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode(),
            )  # fmt: skip
        transport = self._transport
        if transport is None:
            return
        transport.writelines([_head(answer), answer.body])
        if self._write_paused:  # the client does not read: wait before the next request
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained
            self._drained = None
        self._serving = None
        self._last = time.monotonic()
        self._dispatch()

    # Idle connections

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + self._keepalive, self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self._transport is None:  # closed (close and hand-over cancel the timer too)
            return
        busy = (
            self._serving is not None
            or self._with_inner
            or self._feeding
            or self._buffer
            or self._collecting is not None
        )
        idle_for = time.monotonic() - self._last
        if not busy and idle_for >= self._keepalive:
            self._transport.close()
            return
        loop = asyncio.get_running_loop()
        wait = self._keepalive - idle_for if not busy else self._keepalive
        self._timer = loop.call_at(loop.time() + max(wait, 0.01), self._check_idle)


def _parse(head: bytes) -> _Head | None:
    """The request head (without its blank line) if read here as aiohttp reads it; else None."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not parts[1].startswith(b"/"):
        return None
    method, target = parts[0], parts[1]
    if _TOKEN.match(method) is None:
        return None
    headers: dict[bytes, bytes] = {}
    length = 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.match(name) is None or b"\r" in value or b"\n" in value:
            return None  # folded, bare CR/LF, no name: aiohttp decides
        name = name.lower()
        value = value.strip(b" \t")
        if name in _HANDED_TO_AIOHTTP:
            return None
        if name == b"content-length":
            if name in headers or not value.isdigit():
                return None
            length = int(value)
        elif name == b"connection" and value.lower() != b"keep-alive":
            return None
        headers[name] = value
    return _Head(method, target, length, headers)


def _head(answer: LaneAnswer) -> bytes:
    reason = _REASONS.get(answer.status, "Unknown")
    lines = [f"HTTP/1.1 {answer.status} {reason}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in answer.headers]
    lines.append(f"Content-Length: {len(answer.body)}\r\n\r\n")
    return "".join(lines).encode("latin-1")


def front_factory(
    server: Callable[[], asyncio.Protocol],
    lane: Lane,
    keepalive: float,
    pool: BufferPool | None = None,
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory for `loop.create_server`: a front over each of `server`'s
    connection protocols (an aiohttp `web.Server`); large lane bodies come into `pool`."""
    buffers = pool if pool is not None else BufferPool()
    return lambda: FrontProtocol(server(), lane, keepalive, buffers)
