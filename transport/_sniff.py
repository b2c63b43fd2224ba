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

    A connection that has not said enough to tell within `timeout` seconds is closed.
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
        self._stop_timer()
        factory = self._mesh if self._seen.startswith(MAGIC) else self._other
        protocol = factory()
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
