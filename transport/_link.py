"""Stream links: the asyncio shell around the frame codec, over TCP or a Unix socket.

One connection carries many concurrent requests, each on its own stream id. Writes respect
the transport's flow control (a sender waits while the peer is not reading); reads go
straight into pooled body buffers; a server pauses reading while `max_concurrent_streams`
requests are in progress. A cancelled or expired request sends CANCEL so the peer stops
work and drops any partial body; an expired request fails with DeadlineExceeded on both
sides. A protocol error gets a GOAWAY frame that says what was wrong, then a close.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from ._errors import (
    Cancelled,
    DeadlineExceeded,
    ErrorCode,
    FrameError,
    LimitExceeded,
    LinkClosed,
    RemoteError,
    error_code_of,
)
from ._frame import (
    FrameDecoder,
    FrameType,
    GoAway,
    Hello,
    Message,
    ShmControl,
    data_frames,
    frame_header,
    goaway_frame,
    head_frame,
    hello_frame,
    shm_frame,
)
from ._handshake import ShmHandshake
from ._header import ErrorInfo, Header, Kind, Params, check_header_size, pack_header
from ._limits import Limits, MiB
from ._pool import BufferPool
from ._shm import Ref, ShmDomain
from ._sniff import ProtocolFactory, Sniffer
from ._tensors import Placer
from ._tls import Tls, check_identity, peer_identities

logger = logging.getLogger(__name__)

BodyPart = Any  # bytes, memoryview, pyarrow.Buffer: anything exporting a contiguous buffer
Reply = tuple[Header, Sequence[BodyPart]]
Handler = Callable[[Message, float | None, "Placer | None"], Awaitable[Reply]]
# Given the caller's verified SPIFFE identities (none without TLS) and a request's header:
# None to serve it, or why it is refused (sent back as PERMISSION_DENIED).
Authorizer = Callable[[tuple[str, ...], Header], "str | None"]

_WRITE_HIGH: Final = 4 * MiB
_WRITE_LOW: Final = 1 * MiB
_CLOSE_GRACE: Final = 5.0
_RELEASE_DELAY: Final = 0.002


class _LinkProtocol(asyncio.BufferedProtocol):
    """What both ends of a link share: decoding, flow-controlled writes, HELLO, close,
    and the shared-memory handshake (see _shm.py and `ShmHandshake`)."""

    # The connecting end says HELLO at once; the serving end answers the peer's HELLO, so
    # a connection that never says one costs it no shared-memory probe.
    _hello_on_connect = True
    # A peer we dialled that breaks the protocol is a lasting problem worth a warning; what
    # anyone connecting to a listener sends is theirs (DEBUG, and counted by the server).
    _protocol_error_level = logging.WARNING

    def __init__(self, limits: Limits, pool: BufferPool, shm: ShmDomain | None = None) -> None:
        self.limits = limits
        self._pool = pool
        self.shm = ShmHandshake(shm, self._queue_release)
        self._releases: collections.deque[Ref] = collections.deque()
        self._release_scheduled = False
        self._loop_thread = threading.get_ident()
        self._decoder = FrameDecoder(limits, pool)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self._closed: LinkClosed | None = None
        self._close_when_answered = False  # a draining peer: close once replies are in
        self._peer_name: str | None = None
        self._peer_identities: tuple[str, ...] | None = None
        self._lost = self._loop.create_future()
        self.peer_hello: asyncio.Future[dict[str, object]] = self._loop.create_future()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = tp = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tp.set_write_buffer_limits(high=_WRITE_HIGH, low=_WRITE_LOW)  # type: ignore[attr-defined]
        if self._hello_on_connect:
            tp.write(hello_frame(**self.shm.hello()))  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            events = self._decoder.buffer_updated(nbytes)
            for event in events:
                if isinstance(event, Message):
                    self._on_message(event)
                elif isinstance(event, Hello):
                    self._on_hello(event.fields)
                elif isinstance(event, ShmControl):
                    self.shm.on_control(event.fields)
                else:
                    self._on_goaway(event)
        except FrameError as exc:
            self._protocol_error(exc)

    def eof_received(self) -> bool | None:
        try:
            self._decoder.eof()
        except FrameError as exc:
            self._protocol_error(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"link to {self.peer_name} closed" + (f": {exc}" if exc else "")
        self._closed = self._closed or LinkClosed(reason)
        self._decoder.close()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(self._closed)
            self._writable.exception()  # mark retrieved: nobody may be waiting
        if not self.peer_hello.done():
            self.peer_hello.set_exception(self._closed)
            self.peer_hello.exception()
        self.shm.settle()
        self.shm.close()
        if not self._lost.done():
            self._lost.set_result(None)
        self._on_lost()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # shared behaviour

    @property
    def closed(self) -> bool:
        """True once the link can carry no more messages."""
        return self._closed is not None or self._transport is None or self._transport.is_closing()

    @property
    def peer_identities(self) -> tuple[str, ...]:
        """The SPIFFE URIs of the peer's verified TLS certificate; () on a plaintext link."""
        if self._peer_identities is None:
            cert = None if self._transport is None else self._transport.get_extra_info("peercert")
            self._peer_identities = peer_identities(cert)
        return self._peer_identities

    @property
    def peer_name(self) -> str:
        """The peer's address, for messages (worked out once: callers ask per request)."""
        if self._peer_name is None:
            if self._transport is None:
                return "peer"
            name = self._transport.get_extra_info("peername")
            if isinstance(name, tuple):
                self._peer_name = f"{name[0]}:{name[1]}"
            else:
                self._peer_name = f"unix:{self._transport.get_extra_info('sockname')}"
        return self._peer_name

    async def send(self, stream: int, header: Header, parts: Sequence[BodyPart]) -> None:
        """Write one message, waiting while the peer applies back-pressure."""
        try:
            packed = pack_header(header)
            check_header_size(len(packed), self.limits)
            transport = self._transport
            if self._paused or self.closed or transport is None:
                transport = await self._ready_transport()
        except BaseException:
            self.shm.unplace(header)  # the peer never saw these descriptors
            raise
        releases = self._release_frame()
        if header.body_len or releases:
            transport.writelines([*releases, *head_frame(stream, packed)])
            if not header.body_len:
                return
        else:
            # One small buffer: uvloop writes it at once; writelines would queue two.
            transport.write(frame_header(FrameType.HEAD, stream, len(packed)) + packed)
            return
        try:
            for frame in data_frames(stream, parts, self.limits.chunk_size):
                transport = await self._ready_transport()
                transport.writelines(frame)
        except BaseException:
            # The peer holds a partial body for this stream: tell it to drop it.
            self.send_control(stream, Kind.CANCEL)
            raise

    def send_control(
        self, stream: int, kind: Kind, error: ErrorInfo | None = None, params: Params | None = None
    ) -> None:
        """Write a bodiless message now, ignoring flow control (it is a few bytes)."""
        if not self.closed:
            assert self._transport is not None
            header = Header(kind, error=error, params=params or {})
            self._transport.writelines(head_frame(stream, pack_header(header)))

    async def _ready_transport(self) -> asyncio.Transport:
        while self._paused and self._closed is None:
            if self._writable is None:
                self._writable = self._loop.create_future()
            await asyncio.shield(self._writable)
        if self.closed:
            raise self._closed or LinkClosed(f"link to {self.peer_name} is closing")
        assert self._transport is not None
        return self._transport

    def _protocol_error(self, exc: FrameError) -> None:
        logger.log(
            self._protocol_error_level,
            "link protocol error",
            extra={"peer": self.peer_name, "error": str(exc)},
        )
        self._closed = LinkClosed(f"protocol error on link to {self.peer_name}: {exc}")
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(goaway_frame(error_code_of(exc), str(exc)))
            self._transport.close()

    def _on_hello(self, fields: dict[str, object]) -> None:
        if self.peer_hello.done():
            return
        self.peer_hello.set_result(fields)
        if not self._hello_on_connect and self._transport is not None:
            self._transport.write(hello_frame(**self.shm.hello()))
        answer = self.shm.on_peer_hello(fields.get("shm"))
        if answer is not None and self._transport is not None:
            self._transport.write(shm_frame(**answer))

    @property
    def placer(self) -> Placer | None:
        """Where to put large tensors for this peer: shared memory once negotiated."""
        return self.shm.placer

    def adopt(self, message: Message) -> Message:
        """The message with its shared-memory tensors validated and mapped.

        Raises FrameError for a descriptor that is bad or that this link cannot honour.
        """
        return self.shm.adopt(message)

    def _queue_release(self, refs: list[Ref]) -> None:
        # Called when the last array of a received message goes, in any thread. Releases
        # are not urgent: they ride on the next frame we send, or go alone after
        # _RELEASE_DELAY, which saves a write (and a wake-up of the peer) per message.
        self._releases.extend(refs)
        if self._release_scheduled:
            return
        self._release_scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed: the reaper takes over
            if threading.get_ident() == self._loop_thread:
                self._loop.call_later(_RELEASE_DELAY, self._flush_releases)
            else:
                self._loop.call_soon_threadsafe(
                    self._loop.call_later, _RELEASE_DELAY, self._flush_releases
                )

    def _release_frame(self) -> list[bytes]:
        """A SHM frame with the releases waiting, if any, to go out with the next write."""
        if not self._releases:
            return []
        refs = []
        while self._releases:
            refs.append(self._releases.popleft())
        return [shm_frame(release=refs)]

    def _flush_releases(self) -> None:
        self._release_scheduled = False
        frame = self._release_frame()
        if frame and not self.closed and self._transport is not None:
            self._transport.write(frame[0])

    def _on_goaway(self, event: GoAway) -> None:
        self._closed = LinkClosed(
            f"{self.peer_name} closed the link: {event.error.code.value}: {event.error.message}"
        )
        if is_drain(event.error) and self._awaiting_replies():
            # The peer finishes what it received; no new request goes out on this link.
            self._close_when_answered = True
            return
        if self._transport is not None:
            self._transport.close()

    def _awaiting_replies(self) -> bool:
        return False

    async def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        try:
            async with asyncio.timeout(_CLOSE_GRACE):
                await asyncio.shield(self._lost)
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()

    def _on_message(self, message: Message) -> None:
        raise NotImplementedError

    def _on_lost(self) -> None:
        raise NotImplementedError


class StreamLink(_LinkProtocol):
    """The calling end of a link: sends requests, matches replies by stream id.

    Safe for many concurrent callers on one event loop.
    """

    def __init__(self, limits: Limits, pool: BufferPool, shm: ShmDomain | None = None) -> None:
        super().__init__(limits, pool, shm)
        self._ids = itertools.count(1)
        # A reply travels in a one-item list that the caller empties: the finished future
        # stays referenced until the loop's next step, and must not keep the body leased.
        self._pending: dict[int, asyncio.Future[list[Message]]] = {}

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    def _awaiting_replies(self) -> bool:
        return bool(self._pending)

    async def request(
        self, header: Header, parts: Sequence[BodyPart] = (), *, deadline: float | None = None
    ) -> Message:
        """Send a request and return its reply (a RESPONSE message, body still encoded).

        `deadline` is in `loop.time()` terms; the peer is told the remaining budget.
        Raises RemoteError for an ERROR reply, DeadlineExceeded, LinkClosed, Cancelled,
        LimitExceeded.
        """
        stream = next(self._ids)
        reply: asyncio.Future[list[Message]] = self._loop.create_future()
        self._pending[stream] = reply
        try:
            if deadline is None:  # no timeout context: it costs ~2 us per request
                message = await self._exchange(stream, header, parts, reply)
            else:
                async with asyncio.timeout_at(deadline):
                    header = _with_timeout(header, deadline - self._loop.time())
                    message = await self._exchange(stream, header, parts, reply)
        except TimeoutError:
            self.send_control(stream, Kind.CANCEL)
            raise DeadlineExceeded(
                f"no reply from {self.peer_name} for {header.service or 'request'} "
                "before the deadline"
            ) from None
        except asyncio.CancelledError:
            self.send_control(stream, Kind.CANCEL)
            raise
        finally:
            del self._pending[stream]
            if self._close_when_answered and not self._pending and self._transport is not None:
                self._transport.close()
        return check_reply(message, self.peer_name)

    async def _exchange(
        self,
        stream: int,
        header: Header,
        parts: Sequence[BodyPart],
        reply: asyncio.Future[list[Message]],
    ) -> Message:
        await self.send(stream, header, parts)
        return (await reply).pop()

    async def ping(self, timeout: float = 5.0) -> float:
        """Round-trip a PING; returns the seconds it took. Raises DeadlineExceeded, LinkClosed."""
        start = time.perf_counter()  # uvloop's clock ticks in milliseconds
        await self.request(Header(Kind.PING), deadline=self._loop.time() + timeout)
        return time.perf_counter() - start

    async def aclose(self) -> None:
        """Close the link; requests still in flight fail with LinkClosed."""
        await self._close()

    def _on_message(self, message: Message) -> None:
        kind = message.header.kind
        if kind == Kind.PING:
            self.send_control(message.stream, Kind.PONG)
            return
        reply = self._pending.get(message.stream)
        try:
            message = self.adopt(message)
        except FrameError as exc:
            if reply is not None and not reply.done():
                reply.set_exception(exc)
            return
        if reply is None or reply.done():
            return  # a reply to a request we gave up on: its body and leases go back now
        if kind in (Kind.RESPONSE, Kind.ERROR, Kind.PONG):
            reply.set_result([message])
        elif kind == Kind.CANCEL:
            reply.set_exception(Cancelled(f"{self.peer_name} cancelled the request"))
        else:
            self._protocol_error(FrameError(f"a caller cannot accept a {kind.name} message"))

    def _on_lost(self) -> None:
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(self._closed or LinkClosed("link closed"))


DRAINING: Final = "draining: requests already sent are served; send new ones elsewhere"


def is_drain(error: ErrorInfo) -> bool:
    """True for the GOAWAY of a peer that drains (as opposed to one that fails the link)."""
    return error.code is ErrorCode.UNAVAILABLE and error.message == DRAINING


def _with_timeout(header: Header, remaining: float) -> Header:
    return dataclasses.replace(header, timeout=max(remaining, 0.0))


def check_reply(message: Message, peer: str) -> Message:
    error = message.header.error
    if message.header.kind != Kind.ERROR:
        return message
    if error is None:
        raise RemoteError(ErrorCode.INTERNAL, f"{peer} sent an error without details")
    if error.code == ErrorCode.DEADLINE_EXCEEDED:
        raise DeadlineExceeded(f"{peer}: {error.message}")
    raise RemoteError(error.code, error.message, error.remote_type)


class _ServerProtocol(_LinkProtocol):
    """The serving end of one connection: runs the handler per request, one task each.

    A peer has `server.hello_timeout` seconds to say HELLO (else the link is closed with a
    GOAWAY that says so), and as long again to answer our shared-memory probe (else the
    probe's lease is given back and the link stays on the network path).
    """

    _hello_on_connect = False
    _protocol_error_level = logging.DEBUG

    def __init__(self, server: LinkServer) -> None:
        super().__init__(server.limits, server.pool, server.shm)
        self._server = server
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._waiting: dict[int, Message] = {}  # decoded in the read that hit the limit
        self._reading_paused = False
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._server._connections.add(self)
        self._handshake_timer = self._loop.call_later(
            self._server.hello_timeout, self._handshake_overdue
        )

    def _on_hello(self, fields: dict[str, object]) -> None:
        first = not self.peer_hello.done()
        super()._on_hello(fields)
        if first and self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
            if not self.shm.is_settled:
                self._handshake_timer = self._loop.call_later(
                    self._server.hello_timeout, self._handshake_overdue
                )

    def _protocol_error(self, exc: FrameError) -> None:
        if not self.closed:
            self._server.refused += 1
            if self._server._on_refused is not None:
                self._server._on_refused()
        super()._protocol_error(exc)

    def _handshake_overdue(self) -> None:
        self._handshake_timer = None
        if not self.peer_hello.done():
            seconds = self._server.hello_timeout
            self._protocol_error(FrameError(f"no HELLO within {seconds:g} s of connecting"))
        elif not self.shm.is_settled:
            self.shm.settle()  # the probe's lease goes back; the network path stays

    def _on_message(self, message: Message) -> None:
        kind = message.header.kind
        if kind == Kind.REQUEST:
            authorize = self._server.authorize
            refusal = None if authorize is None else authorize(self.peer_identities, message.header)
            if refusal:
                # Refused before its descriptors are even looked at: nothing is mapped.
                error = ErrorInfo(ErrorCode.PERMISSION_DENIED, refusal)
                self.send_control(message.stream, Kind.ERROR, error)
                return
            try:
                message = self.adopt(message)
            except FrameError as exc:
                self.send_control(message.stream, Kind.ERROR, _error_info(exc))
                return
            self._start(message)
        elif kind == Kind.CANCEL:
            task = self._tasks.get(message.stream)
            if task is not None:
                task.cancel()
            self._waiting.pop(message.stream, None)
        elif kind == Kind.PING:
            pong = self._server.pong  # what the replica tells callers' checks: load, health
            self.send_control(message.stream, Kind.PONG, params=None if pong is None else pong())
        else:
            self._protocol_error(FrameError(f"a server cannot accept a {kind.name} message"))

    def _start(self, message: Message) -> None:
        if message.stream in self._tasks or message.stream in self._waiting:
            self._protocol_error(FrameError(f"stream {message.stream} is already in use"))
            return
        if len(self._tasks) >= self.limits.max_concurrent_streams:
            self._waiting[message.stream] = message
            return
        timeout = message.header.timeout
        deadline = None if timeout is None else self._loop.time() + timeout
        task = self._loop.create_task(self._serve(message, deadline))
        self._tasks[message.stream] = task
        self._server._request_started()
        task.add_done_callback(lambda _: self._finished(message.stream))
        if len(self._tasks) >= self.limits.max_concurrent_streams and self._transport:
            self._transport.pause_reading()
            self._reading_paused = True

    def _finished(self, stream: int) -> None:
        del self._tasks[stream]
        self._server._request_finished()
        if self._waiting and self._closed is None:
            self._start(self._waiting.pop(next(iter(self._waiting))))
        elif self._reading_paused and len(self._tasks) < self.limits.max_concurrent_streams:
            self._reading_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    async def _serve(self, message: Message, deadline: float | None) -> None:
        stream = message.stream
        try:
            if deadline is None:
                header, parts = await self._server.handler(message, deadline, self.placer)
            else:
                async with asyncio.timeout_at(deadline):
                    header, parts = await self._server.handler(message, deadline, self.placer)
        except TimeoutError:
            budget = message.header.timeout
            self.send_control(stream, Kind.ERROR, _deadline_error(message.header, budget))
            return
        except Exception as exc:
            self.send_control(stream, Kind.ERROR, _error_info(exc))
            return
        finally:
            del message  # the request body goes back to the pool now, not after the reply
        try:
            await self.send(stream, header, parts)
        except LinkClosed:
            logger.debug("reply not sent: link closed", extra={"stream": stream})
        except LimitExceeded as exc:
            self.send_control(stream, Kind.ERROR, _error_info(exc))

    def send_drain(self) -> None:
        """Tell the peer we are draining: it sends no new requests on this link."""
        if not self.closed and self._transport is not None:
            self._transport.write(goaway_frame(ErrorCode.UNAVAILABLE, DRAINING))

    def _on_lost(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._waiting.clear()
        for task in self._tasks.values():
            task.cancel()
        self._server._connections.discard(self)

    async def aclose(self) -> None:
        await self._close()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_GRACE)


def _deadline_error(header: Header, budget: float | None) -> ErrorInfo:
    return ErrorInfo(
        ErrorCode.DEADLINE_EXCEEDED,
        f"deadline of {budget:.3f} s passed while {header.service or 'the service'} "
        "was handling the request",
    )


def _error_info(exc: Exception) -> ErrorInfo:
    remote_type = exc.remote_type if isinstance(exc, RemoteError) else type(exc).__qualname__
    message = exc.message if isinstance(exc, RemoteError) else str(exc)
    return ErrorInfo(error_code_of(exc), message, remote_type)


class LinkServer:
    """Accepts links on TCP and/or a Unix socket and serves each request with `handler`.

    With `tls`, TCP listeners take only mutual-TLS links (Unix sockets stay local and
    plaintext); with `authorize`, every request is checked against the caller's identity.
    `pong()` gives the params a PONG carries (a replica's load and app health). A
    connection that has not said HELLO within `hello_timeout` seconds is closed (a
    slow-loris peer holds nothing for long). Use as an async context manager, or call
    `aclose()`.
    """

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        pool: BufferPool,
        shm: ShmDomain | None = None,
        *,
        tls: Tls | None = None,
        authorize: Authorizer | None = None,
        pong: Callable[[], Params] | None = None,
        hello_timeout: float = 10.0,
        on_refused: Callable[[], object] | None = None,
    ) -> None:
        if hello_timeout <= 0:
            raise ValueError(f"hello_timeout={hello_timeout} must be positive")
        self.handler = handler
        self.pong = pong
        self.hello_timeout = hello_timeout
        self.refused = 0
        """Connections closed for breaking the protocol (malformed frames, no HELLO); each
        also calls `on_refused` (a metric's inc, say)."""
        self._on_refused = on_refused
        self.tls = tls
        self.authorize = authorize
        self.limits = limits
        self.pool = pool
        self.shm = shm
        self._servers: list[asyncio.Server] = []
        self._connections: set[_ServerProtocol] = set()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.addresses: list[str] = []

    @property
    def connections(self) -> int:
        """Open downstream connections."""
        return len(self._connections)

    @property
    def in_flight(self) -> int:
        """Requests being handled right now."""
        return self._active

    def _request_started(self) -> None:
        self._active += 1
        self._idle.clear()

    def _request_finished(self) -> None:
        self._active -= 1
        if not self._active:
            self._idle.set()

    async def listen_tcp(
        self,
        host: str,
        port: int,
        *,
        other: ProtocolFactory | None = None,
        plaintext: bool = False,
    ) -> str:
        """Start accepting on host:port (0 picks a free port); returns the bound "host:port".

        With `plaintext`, this listener takes plain links even when the server has `tls`
        (a loopback listener for a local app); its callers present no identity.

        With `other`, connections that do not open with a mesh frame (HTTP, say) are
        handed to a protocol from `other` instead.
        """
        loop = asyncio.get_running_loop()

        def mesh() -> _ServerProtocol:
            return _ServerProtocol(self)

        def factory() -> asyncio.BaseProtocol:
            return mesh() if other is None else Sniffer(mesh, other, self.hello_timeout)

        try:
            ssl = None if self.tls is None or plaintext else self.tls.listener_context
            server = await loop.create_server(factory, host, port, ssl=ssl)
        except OSError as exc:
            raise LinkClosed(f"cannot listen on {host}:{port}: {exc}") from exc
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        address = f"{_host_literal(bound[0])}:{bound[1]}"
        self.addresses.append(address)
        return address

    async def listen_unix(self, path: str) -> str:
        """Start accepting on a Unix socket at `path`; returns "unix:<path>"."""
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_unix_server(lambda: _ServerProtocol(self), path)
        except OSError as exc:
            raise LinkClosed(f"cannot listen on unix:{path}: {exc}") from exc
        self._servers.append(server)
        address = f"unix:{path}"
        self.addresses.append(address)
        return address

    async def drain(self, timeout: float) -> bool:
        """Stop accepting and wait up to `timeout` for requests in progress to finish.

        Every open link is told (a GOAWAY "draining") to send nothing new; requests already
        on their way are still served. Returns True if none were left. Links stay open so
        replies can be written.
        """
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.send_drain()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        """Stop accepting, cancel requests in progress, close every connection."""
        for server in self._servers:
            server.close()
        await asyncio.gather(*(c.aclose() for c in list(self._connections)))
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE):
                    await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> LinkServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _host_literal(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_address(address: str) -> tuple[str, int] | str:
    """("host", port) for "host:port" or "[v6]:port", the path for "unix:/path".

    Raises ValueError for anything else.
    """
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError(f"address {address!r} has no socket path")
        return path
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address {address!r} is not HOST:PORT or unix:PATH")
    return host.strip("[]"), int(port)


async def connect(
    address: str,
    *,
    limits: Limits | None = None,
    pool: BufferPool | None = None,
    shm: ShmDomain | None = None,
    timeout: float = 10.0,
    tls: Tls | None = None,
    expect_identity: str | None = None,
) -> StreamLink:
    """Open a link to a "host:port" or "unix:/path" address and exchange HELLO.

    With `tls`, a TCP link is mutual TLS; with `expect_identity` too, the peer's
    certificate must carry that SPIFFE URI. Raises LinkClosed if the peer cannot be
    reached, does not speak the protocol or is not who it should be, ValueError for a
    malformed address.
    """
    loop = asyncio.get_running_loop()
    limits = limits or Limits()
    pool = pool or BufferPool()
    target = parse_address(address)

    made: list[StreamLink] = []

    def factory() -> StreamLink:
        made.append(StreamLink(limits, pool, shm))
        return made[-1]

    try:
        async with asyncio.timeout(timeout):
            if isinstance(target, str):
                _, link = await loop.create_unix_connection(factory, target)
            else:
                ssl = None if tls is None else tls.client_context()
                _, link = await loop.create_connection(factory, target[0], target[1], ssl=ssl)
                if tls is not None:
                    assert link._transport is not None
                    peercert = link._transport.get_extra_info("peercert")
                    check_identity(peercert, expect_identity, address)
            await link.peer_hello
            if link.shm.settled is not None:  # so the first request can go by reference
                await link.shm.settled
    except BaseException as exc:
        # Timed out, refused, cancelled (a caller's deadline, a hedge's loser) after the
        # socket was made: close it, or its descriptor and our shm probe lease stay held.
        for opened in made:
            if opened._transport is not None:
                opened._transport.abort()
        if isinstance(exc, OSError | TimeoutError):
            raise LinkClosed(f"cannot connect to {address}: {str(exc) or 'timed out'}") from exc
        raise
    return link
