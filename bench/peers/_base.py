"""What every transport under test provides: a server for a child process, a client for us."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from bench._errors import EchoMismatch
from transport import ShmStats

Payload = npt.NDArray[np.uint8]
Ready = Mapping[str, str]  # the server's ready file, plus the run's "workdir" and "shm_dir"
DataPath = Literal["network", "inline", "copy-in", "arrow-in-shm", "by-reference"]


@dataclass(frozen=True, slots=True)
class ServerArgs:
    """What a server child is told: where to report, where to keep files, which sizes come,
    and the run's shared-memory directory ("" for none)."""

    ready_file: str
    workdir: str
    sizes: tuple[int, ...]
    shm_dir: str = ""


class Client(Protocol):
    """One connection to a server, reused for every round trip."""

    def echo(self, payload: Payload) -> Payload:
        """Send `payload`, return what came back as a numpy array (untimed checks, warm-up)."""
        ...

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips of `payload`, each in nanoseconds. Raises EchoMismatch."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


@runtime_checkable
class ShmInspectable(Protocol):
    """A client whose path is checked against arrowmesh's shared-memory counters."""

    def expected_path(self, size: int) -> DataPath:
        """The path a tensor of `size` bytes should take."""
        ...

    def shm_stats(self) -> ShmStats | None:
        """The client's shared-memory counters; None when shared memory is off."""
        ...


def time_each(echo: Callable[[Payload], Payload], payload: Payload, reps: int) -> list[int]:
    """Call `echo(payload)` `reps` times; nanoseconds per call. Raises EchoMismatch."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(reps):
        start = clock()
        out = echo(payload)
        samples.append(clock() - start)
        check_size(out, payload)
    return samples


async def time_each_async(
    echo: Callable[[Payload], Awaitable[Payload]], payload: Payload, reps: int
) -> list[int]:
    """As `time_each`, for an async `echo` (all calls in one coroutine)."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(reps):
        start = clock()
        out = await echo(payload)
        samples.append(clock() - start)
        check_size(out, payload)
    return samples


def check_size(out: Payload, payload: Payload) -> None:
    """Raise EchoMismatch unless `out` has as many bytes as `payload`."""
    if out.nbytes != payload.nbytes:
        raise EchoMismatch(f"sent {payload.nbytes} bytes, got {out.nbytes} back")


def write_ready(path: str, info: Mapping[str, object]) -> None:
    """Write the ready file as JSON, atomically (readers see all of it or nothing)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(info)))
    os.replace(tmp, target)


def recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    """Fill `view` from a blocking socket; False if the peer closed first."""
    got, want = 0, len(view)
    while got < want:
        count = sock.recv_into(view[got:])
        if count == 0:
            return False
        got += count
    return True


def host_port(address: str) -> tuple[str, int]:
    """("127.0.0.1", 8000) for "127.0.0.1:8000"."""
    host, _, port = address.rpartition(":")
    return host, int(port)
