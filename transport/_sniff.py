"""One port, two protocols: a mesh link, or whatever else the listener also serves.

A mesh link's first bytes are the frame magic (b"AM"); anything else (an HTTP request
line, say) goes to the other protocol the listener was given. The connection is handed
over with `transport.set_protocol` and the bytes read so far are fed to the new protocol,
so neither side sees the sniffing. Both ends of a mesh link send HELLO at once, so a
server that speaks only after the first bytes adds no round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

from ._frame import MAGIC

_NEED: Final = len(MAGIC)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class Sniffer(asyncio.Protocol):
    """Reads a connection's first bytes, then hands it to the protocol they call for.

    A connection that has not said enough to tell within `timeout` seconds is closed; one
    handed to the other protocol (HTTP) is closed too unless its first request head (up to
    the blank line) is in by then: a slow-loris peer holds a connection for `timeout`, not
    for ever. (A mesh link has its own HELLO deadline.)
    """

    def __init__(self, mesh: ProtocolFactory, other: ProtocolFactory, timeout: float) -> None:
        self._mesh, self._other = mesh, other
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._seen = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only lookalikes.
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(self._timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        self._seen += data
        if len(self._seen) < _NEED and self._seen == MAGIC[: len(self._seen)]:
            return  # not enough to tell yet
        assert self._transport is not None
        protocol: asyncio.BaseProtocol
        if self._seen.startswith(MAGIC):
            self._stop_timer()
            protocol = self._mesh()
        else:
            assert self._timer is not None
            protocol, self._timer = _HeadDeadline(self._other(), self._timer), None
        self._transport.set_protocol(protocol)
        protocol.connection_made(self._transport)
        _feed(protocol, self._seen)
        self._seen = b""

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _HeadDeadline(asyncio.Protocol):
    """Passes everything to `inner`; cancels `timer` (which closes the connection) once the
    first request head has ended (a blank line), or the connection has."""

    def __init__(self, inner: asyncio.BaseProtocol, timer: asyncio.TimerHandle) -> None:
        self._inner = cast(asyncio.Protocol, inner)
        self._timer: asyncio.TimerHandle | None = timer
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            seen = self._tail + data
            if _HEAD_END in seen:
                self._timer.cancel()
                self._timer = None
            self._tail = seen[-(len(_HEAD_END) - 1) :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


_HEAD_END: Final = b"\r\n\r\n"


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    if isinstance(protocol, asyncio.BufferedProtocol):
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
    elif isinstance(protocol, asyncio.Protocol):
        protocol.data_received(data)
