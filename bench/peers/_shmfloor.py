"""shm-2memcpy-floor and shm-descriptor-floor: the least a shared-memory round trip costs.

On each connection the server creates its shared files in the run directory (on /dev/shm),
unlinks them at once and passes their descriptors over the Unix socket (SCM_RIGHTS), so
nothing is left behind even if a process is killed. Both ends map them and fault every page
in before timing. A round trip, as BASELINES' shm-prefaulted and shm-nocopy:

- 2memcpy: the client copies the payload into the request file and sends its length
  (8 bytes) over the socket; the server copies it into its reply file and sends the length
  back; the client ends with a read-only numpy view of the reply: two memcpy into
  pre-faulted memory and a Unix-socket handoff each way.
- descriptor: the payload already lives in the request file (put there once per size,
  untimed, as a zero-copy client fills its `alloc()` array); only the length goes each
  way, and the client ends with a read-only view of the request file.
"""

from __future__ import annotations

import mmap
import os
import secrets
import socket
import struct
import threading
from typing import Final

import numpy as np

from bench._errors import EchoMismatch
from bench._memory import prefault_shared

from ._base import Payload, Ready, ServerArgs, recv_exactly, time_each, write_ready

_LENGTH: Final = struct.Struct("<Q")
_SOCKET: Final = "shmfloor.sock"
_COPY: Final = b"c"
_HANDOFF: Final = b"d"


def serve(args: ServerArgs) -> None:
    """Accept connections on a Unix socket, each served by its own thread, until killed."""
    capacity = max(max(args.sizes, default=0), 1)
    path = os.path.join(args.workdir, _SOCKET)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        write_ready(args.ready_file, {"address": path})
        while True:
            conn, _ = listener.accept()
            threading.Thread(
                target=_serve_connection, args=(conn, args.workdir, capacity), daemon=True
            ).start()


def _serve_connection(conn: socket.socket, workdir: str, capacity: int) -> None:
    with conn:
        mode = conn.recv(1)
        if mode not in (_COPY, _HANDOFF):
            return
        fds: list[int] = []
        try:
            for _ in range(2 if mode == _COPY else 1):
                fds.append(_shared_file(workdir, capacity))
            socket.send_fds(conn, [mode], fds)
            regions = [_mapped(fd) for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        if mode == _COPY:
            _copy_until_eof(conn, regions[0], regions[1])
        else:
            _hand_back_until_eof(conn)


def _copy_until_eof(conn: socket.socket, request: Payload, reply: Payload) -> None:
    header = bytearray(_LENGTH.size)
    while recv_exactly(conn, memoryview(header)):
        (nbytes,) = _LENGTH.unpack(header)
        np.copyto(reply[:nbytes], request[:nbytes])
        conn.sendall(header)


def _hand_back_until_eof(conn: socket.socket) -> None:
    header = bytearray(_LENGTH.size)
    while recv_exactly(conn, memoryview(header)):
        conn.sendall(header)


class ShmFloorClient:
    """The client end: `copy` for the 2-memcpy floor, else the descriptor-only floor."""

    def __init__(self, ready: Ready, copy: bool) -> None:
        self._copy = copy
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(ready["address"])
        self._sock.sendall(_COPY if copy else _HANDOFF)
        _, fds, _, _ = socket.recv_fds(self._sock, 1, 2)
        try:
            regions = [_mapped(fd) for fd in fds]
        finally:
            for fd in fds:
                os.close(fd)
        if len(regions) != (2 if copy else 1):
            raise EchoMismatch(f"shm floor server passed {len(regions)} shared files")
        self._request = regions[0]
        self._result = regions[-1].view()  # the reply file; for the descriptor floor, the request
        self._result.flags.writeable = False
        self._header = bytearray(_LENGTH.size)
        self._staged: Payload | None = None

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a read-only view of the shared file."""
        if self._copy:
            return self._copy_round_trip(payload)
        self._stage(payload)
        return self._handoff(payload.nbytes)

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each (staging the input is not timed)."""
        if self._copy:
            return time_each(self._copy_round_trip, payload, reps)
        self._stage(payload)
        return time_each(self._handoff_of, payload, reps)

    def close(self) -> None:
        """Close the socket; the mappings go with the arrays."""
        self._sock.close()

    def _copy_round_trip(self, payload: Payload) -> Payload:
        np.copyto(self._request[: payload.nbytes], payload)
        return self._handoff(payload.nbytes)

    def _handoff_of(self, payload: Payload) -> Payload:
        return self._handoff(payload.nbytes)

    def _handoff(self, nbytes: int) -> Payload:
        _LENGTH.pack_into(self._header, 0, nbytes)
        self._sock.sendall(self._header)
        if not recv_exactly(self._sock, memoryview(self._header)):
            raise EchoMismatch("shm floor server closed the connection")
        return self._result[: _LENGTH.unpack(self._header)[0]]

    def _stage(self, payload: Payload) -> None:
        if payload is not self._staged:
            np.copyto(self._request[: payload.nbytes], payload)
            self._staged = payload


def copy_floor(ready: Ready) -> ShmFloorClient:
    """Two memcpy into pre-faulted shared memory and a Unix-socket handoff each way."""
    return ShmFloorClient(ready, copy=True)


def descriptor_floor(ready: Ready) -> ShmFloorClient:
    """A Unix-socket handoff each way, no copy."""
    return ShmFloorClient(ready, copy=False)


def _shared_file(directory: str, nbytes: int) -> int:
    """A file of `nbytes` in `directory`, already unlinked: only its descriptor knows it."""
    path = os.path.join(directory, f".shmfloor-{secrets.token_hex(8)}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(path)
    os.ftruncate(fd, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)
    return fd


def _mapped(fd: int) -> Payload:
    """The whole file behind `fd`, mapped shared and faulted in, as a uint8 array."""
    memory = mmap.mmap(fd, 0, mmap.MAP_SHARED)
    prefault_shared(memory)
    return np.frombuffer(memory, dtype=np.uint8)
