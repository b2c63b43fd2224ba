"""arrowmesh-shm-copy, -zerocopy and -arrow: the `_arrowmesh` echo, over shared memory.

Each client joins the run's shared-memory directory, as the server does, so the link
negotiates shared memory in its handshake. Tensors of at least `inline_threshold` (64 KiB)
then travel as descriptors; smaller ones go inline in the header, as on the network path.

- copy: an ordinary numpy input, copied into a pre-faulted arena on every call;
- zerocopy: the input is a `client.alloc()` array, allocated and filled once per size
  (neither is timed), sent by reference;
- arrow: `arrow_in_shm=True`, the message written as one Arrow IPC stream into the arena.

The echo hands the client's own lease back by reference, so copy pays one memcpy per
round trip and zerocopy none. The link runs over the server's Unix socket: shared memory
means the same host, and the shm floors hand off over a Unix socket too.
"""

from __future__ import annotations

from typing import Final, Literal

import sidecar
from transport import ShmStats

from ._base import DataPath, Payload, Ready, time_each

ShmMode = Literal["copy", "zerocopy", "arrow"]

_PATHS: Final[dict[ShmMode, DataPath]] = {
    "copy": "copy-in",
    "zerocopy": "by-reference",
    "arrow": "arrow-in-shm",
}


class ShmEchoClient:
    """`BlockingMeshClient` with shared memory on, in one of the three modes."""

    def __init__(self, ready: Ready, mode: ShmMode) -> None:
        self._mode = mode
        self._client = sidecar.BlockingMeshClient(
            ready["uds"], shm_dir=ready["shm_dir"], arrow_in_shm=mode == "arrow"
        )
        self._threshold = self._client.limits.inline_threshold
        self._source: Payload | None = None
        self._input: Payload | None = None
        self._client.ping()  # link, handshake and arena now, not in the first round trip

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a read-only view on the client's own lease."""
        return self._send(self._staged(payload))

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each (staging the input is not timed)."""
        return time_each(self._send, self._staged(payload), reps)

    def expected_path(self, size: int) -> DataPath:
        """The path of a `size`-byte tensor: inline up to the threshold, else the mode's."""
        # An Arrow body of exactly the threshold still goes inline: it is the message's total.
        over = size > self._threshold if self._mode == "arrow" else size >= self._threshold
        return _PATHS[self._mode] if over else "inline"

    def shm_stats(self) -> ShmStats | None:
        """The client's shared-memory counters."""
        return self._client.shm_stats()

    def close(self) -> None:
        """Drop the staged input, close the link and leave the shared-memory directory."""
        self._source = self._input = None
        self._client.close()

    def _send(self, array: Payload) -> Payload:
        out: Payload = self._client.infer("echo", {"x": array})["y"]
        return out

    def _staged(self, payload: Payload) -> Payload:
        """The input to send: `payload`, or for zerocopy its copy in an `alloc()` array."""
        if self._mode != "zerocopy":
            return payload
        if payload is not self._source or self._input is None:
            self._input = None  # the previous size's lease goes back first
            staged: Payload = self._client.alloc(payload.shape, payload.dtype)
            staged[...] = payload
            self._source, self._input = payload, staged
        return self._input


def copy(ready: Ready) -> ShmEchoClient:
    """Ordinary numpy input, copied into shared memory on each call."""
    return ShmEchoClient(ready, "copy")


def zerocopy(ready: Ready) -> ShmEchoClient:
    """Input allocated in shared memory, sent by reference."""
    return ShmEchoClient(ready, "zerocopy")


def arrow(ready: Ready) -> ShmEchoClient:
    """Ordinary numpy input, written as an Arrow IPC stream into shared memory."""
    return ShmEchoClient(ready, "arrow")
