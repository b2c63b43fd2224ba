"""tcp-raw, the network floor: a length-prefixed echo over blocking sockets.

Both ends receive with `recv_into` into one pre-faulted buffer reused for every message,
send the header with the first chunk in one `sendmsg` (never joining them) and the rest in
1 MiB `sendall`s, and set TCP_NODELAY. Sending 64 MiB in one call took 58 ms against 36 ms
in 1-2 MiB calls on the 2-core VM (256 KiB: 57 ms, 8 MiB: 55 ms), so the floor chunks.
"""

from __future__ import annotations

import socket
import struct
from typing import Final

import numpy as np

from bench._errors import EchoMismatch
from bench._memory import ReusedBuffer
from bench._units import MiB

from ._base import Payload, Ready, ServerArgs, host_port, recv_exactly, time_each, write_ready

_LENGTH: Final = struct.Struct("!Q")
_CHUNK: Final = 1 * MiB


def serve(args: ServerArgs) -> None:
    """Echo every message back on each connection, one connection at a time, until killed."""
    buffer = ReusedBuffer(max(args.sizes, default=0))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        write_ready(args.ready_file, {"address": f"127.0.0.1:{listener.getsockname()[1]}"})
        while True:
            conn, _ = listener.accept()
            with conn:
                _nodelay(conn)
                _echo_until_eof(conn, buffer)


def _echo_until_eof(conn: socket.socket, buffer: ReusedBuffer) -> None:
    header = bytearray(_LENGTH.size)
    while recv_exactly(conn, memoryview(header)):
        (nbytes,) = _LENGTH.unpack(header)
        body = buffer.view(nbytes)
        if not recv_exactly(conn, body):
            return
        _send(conn, header, body)


class RawTcpClient:
    """The client end of the length-prefixed echo."""

    def __init__(self, ready: Ready) -> None:
        self._sock = socket.create_connection(host_port(ready["address"]))
        _nodelay(self._sock)
        self._header = bytearray(_LENGTH.size)
        self._buffer = ReusedBuffer()

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a view on the reused receive buffer."""
        _LENGTH.pack_into(self._header, 0, payload.nbytes)
        _send(self._sock, self._header, payload.data)
        if not recv_exactly(self._sock, memoryview(self._header)):
            raise EchoMismatch("tcp-raw server closed the connection")
        (nbytes,) = _LENGTH.unpack(self._header)
        body = self._buffer.view(nbytes)
        if not recv_exactly(self._sock, body):
            raise EchoMismatch("tcp-raw server closed the connection mid-message")
        return np.frombuffer(body, dtype=np.uint8)

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return time_each(self.echo, payload, reps)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def _nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _send(sock: socket.socket, header: bytearray, body: memoryview) -> None:
    first = body[:_CHUNK]
    sent = sock.sendmsg([header, first])
    if sent < len(header):
        sock.sendall(memoryview(header)[sent:])
        sent = len(header)
    if sent < len(header) + len(first):
        sock.sendall(first[sent - len(header) :])
    for start in range(_CHUNK, len(body), _CHUNK):
        sock.sendall(body[start : start + _CHUNK])
