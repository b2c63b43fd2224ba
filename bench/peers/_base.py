"""What every transport under test provides: a server for a child process, a client for us."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bench._errors import EchoMismatch

Payload = npt.NDArray[np.uint8]
Ready = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ServerArgs:
    """What a server child is told: where to report, where to keep files, which sizes come."""

    ready_file: str
    workdir: str
    sizes: tuple[int, ...]


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


def host_port(address: str) -> tuple[str, int]:
    """("127.0.0.1", 8000) for "127.0.0.1:8000"."""
    host, _, port = address.rpartition(":")
    return host, int(port)
