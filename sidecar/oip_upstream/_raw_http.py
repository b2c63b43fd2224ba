"""Keep-alive HTTP/1.1 to the fronted model server for requests already in wire form.

The fast lane (sidecar._oip_lane) passes a client's inference request on as it came, body
unread, and its answer back the same way; tritonclient's client would decode and re-encode
both (its aiohttp session alone costs more than the lane's whole budget). So this writes
the request head and body in one call on a pooled connection and reads the answer with
httptools (llhttp: lengths, chunked bodies, keep-alive), keeping the body as bytes.

A pooled connection the server closed while idle fails before any answer byte: the request
is sent once more on a new connection (the server never saw it). A request cancelled or
out of time closes its connection (its answer would otherwise be read as the next one's).
An answer must say where it ends (a length, or chunked), as model servers' answers do; one
read until the connection closes is reported as cut short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import httptools

from transport import BufferPool, RecvBuffer

# Connections kept open between requests; more run at once when needed, and close after.
IDLE_CONNECTIONS: Final = 8
# Answer headers kept (lower-case names); the rest are the server's business.
KEPT_HEADERS: Final = frozenset({b"content-type", b"inference-header-content-length"})
# Answers of a known length from this size on go into pre-faulted pooled buffers, not
# joined chunks (fresh memory costs 4x-30x a memcpy here, see BASELINES.md).
POOLED_FROM: Final = 64 * 1024


class RawHttpError(ConnectionError):
    """The server could not be reached, went away mid-answer, or answered malformed HTTP."""


class AnswerTooLarge(RawHttpError):
    """The server's answer is over the size the caller allows."""


@dataclass(slots=True)
class RawAnswer:
    """A server's answer: status, kept headers (lower-case names), body (a memoryview on a
    pooled buffer from POOLED_FROM bytes on, when the client has a pool)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | memoryview = b""


class RawHttp:
    """Pooled HTTP/1.1 connections to `host:port`; answers over `max_body` bytes are refused,
    large ones are received into `pool`'s buffers."""

    def __init__(self, host: str, port: int, max_body: int, pool: BufferPool | None = None) -> None:
        self._host, self._port = host, port
        self._authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._max_body = max_body
        self._pool = pool
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | memoryview,
    ) -> RawAnswer:
        """Send one request (`Host` and `Content-Length` added) and read its answer.

        Raises RawHttpError (AnswerTooLarge for an answer over the limit). Cancelling it
        closes the connection in use.
        """
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._authority}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        while self._idle:
            connection = self._idle.pop()
            if connection.closed:
                continue
            try:
                return await self._exchange(connection, head, body)
            except _Stale:
                continue  # closed by the server while idle: it never saw this request
        return await self._exchange(await self._connect(), head, body)

    async def aclose(self) -> None:
        """Close the idle connections (those in use close as their requests end)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body, self._pool), self._host, self._port
            )
        except OSError as exc:
            raise RawHttpError(f"cannot connect to {self._authority}: {exc}") from exc
        return connection

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes | memoryview
    ) -> RawAnswer:
        kept = False
        try:
            answer = await connection.exchange(head, body)
            kept = connection.reusable
            return answer
        except _Stale as exc:
            if connection.fresh:  # a new connection is not stale: the server hung up on it
                raise RawHttpError(f"{self._authority} closed the connection: {exc}") from None
            raise
        finally:
            if kept and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(connection)
            else:
                connection.close()


class _Stale(RawHttpError):
    """The connection closed before any byte of the answer came."""


class _Connection(asyncio.Protocol):
    """One connection: one request at a time, its answer parsed as it comes."""

    def __init__(self, max_body: int, pool: BufferPool | None) -> None:
        self._max_body = max_body
        self._pool = pool
        self._length = -1  # the answer's Content-Length, if it gave one
        self._into: RecvBuffer | None = None  # a large answer's pooled buffer
        self._target: memoryview | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[RawAnswer] | None = None
        self._answer = RawAnswer(0)
        self._chunks: list[bytes] = []
        self._size = 0
        self._seen = False  # a byte of the current answer came
        self.fresh = True  # no request has been answered on it yet
        self.closed = False
        self.reusable = False

    async def exchange(self, head: bytes, body: bytes | memoryview) -> RawAnswer:
        assert self._transport is not None and self._waiter is None
        waiter: asyncio.Future[RawAnswer] = asyncio.get_running_loop().create_future()
        self._waiter, self._seen, self.reusable = waiter, False, False
        self._answer, self._chunks, self._size = RawAnswer(0), [], 0
        self._length, self._into, self._target = -1, None, None
        self._transport.writelines([head, body])
        try:
            return await waiter
        finally:
            self._waiter = None
            self.fresh = False

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's are lookalikes

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing asked: a server talking out of turn
            self.close()
            return
        self._seen = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised (on_body: too large)
            self._fail(
                cause if isinstance(cause, RawHttpError)
                else RawHttpError(f"malformed HTTP answer: {exc}")
            )  # fmt: skip

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        why = f"{exc}" if exc is not None else "closed"
        self._fail(_Stale(why) if not self._seen else RawHttpError(f"answer cut short: {why}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in KEPT_HEADERS:
            self._answer.headers[lower.decode()] = value.decode("latin-1")
        elif lower == b"content-length" and value.strip().isdigit():
            self._length = int(value)

    def on_headers_complete(self) -> None:
        if self._length > self._max_body:
            raise AnswerTooLarge(f"the answer is over {self._max_body} bytes")
        if self._pool is not None and self._length >= POOLED_FROM:
            self._into = self._pool.acquire(self._length)
            self._target = self._into.writable

    def on_body(self, body: bytes) -> None:
        start = self._size
        self._size += len(body)
        if self._size > self._max_body:
            raise AnswerTooLarge(f"the answer is over {self._max_body} bytes")
        if self._target is not None:
            self._target[start : self._size] = body  # the parser keeps to Content-Length
        else:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._answer.status = self._parser.get_status_code()
        if self._into is not None:
            self._answer.body = self._into.memory()
            self._into = self._target = None
        else:
            chunks = self._chunks
            self._answer.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.reusable = self._parser.should_keep_alive()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._answer)

    def _fail(self, exc: RawHttpError) -> None:
        self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
