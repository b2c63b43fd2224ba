"""arrowmesh-tcp and arrowmesh-uds: our link, a `sidecar.serve` echo and a MeshClient.

The server joins the run's shared-memory directory (the shm transports in
`_arrowmesh_shm` use it); these clients turn shared memory off (`shm_dir=""`), so they
measure the network path.

The client is `BlockingMeshClient` (a blocking SyncLink, no event loop). Against
`MeshClient` on uvloop (a block of round trips per coroutine) in two runs on the 2-core VM
it was faster up to 16 MiB and slower above (4 KiB: 158/146 µs against 168/160 µs,
64 KiB: 201/195 against 222/210 µs, 1 MiB: 1.19/1.22 against 1.22/1.23 ms, 64 MiB:
37.8/37.1 against 34.0/34.7 ms, 256 MiB: 134/131 against 128/125 ms). The asyncio client
stays as the `arrowmesh-tcp-async` variant to re-check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import numpy.typing as npt

import sidecar
from bench._units import KiB
from sidecar._loop import new_event_loop
from transport import ShmStats

from ._base import DataPath, Payload, Ready, ServerArgs, time_each, time_each_async

# A message body is the tensor plus its Arrow IPC framing (a few hundred bytes), which can
# push it into the next buffer size class: warm the class the body will land in.
_FRAMING_ALLOWANCE: Final = 64 * KiB


async def _echo(inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    return {"y": inputs["x"]}


def serve(args: ServerArgs) -> None:
    """Serve the echo on TCP and a Unix socket until SIGTERM, sharing memory in `shm_dir`."""
    sidecar.serve(
        _echo,
        service="echo",
        host="127.0.0.1",
        port=0,
        uds_path=os.path.join(args.workdir, "mesh.sock"),
        ready_file=args.ready_file,
        warm_sizes=[size + _FRAMING_ALLOWANCE for size in args.sizes],
        shm_dir=args.shm_dir,
    )


class MeshEchoClient:
    """`MeshClient` to the echo service on its own uvloop loop."""

    def __init__(self, address: str) -> None:
        self._loop = new_event_loop()
        self._client = sidecar.MeshClient(address, shm_dir="")

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a read-only view on a pooled receive buffer."""
        return self._loop.run_until_complete(self._echo(payload))

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips in one coroutine, in nanoseconds each."""
        return self._loop.run_until_complete(time_each_async(self._echo, payload, reps))

    def close(self) -> None:
        """Close the links and the loop."""
        try:
            self._loop.run_until_complete(self._client.aclose())
        finally:
            self._loop.close()

    async def _echo(self, payload: Payload) -> Payload:
        out: Payload = (await self._client.infer("echo", {"x": payload}))["y"]
        return out


class BlockingEchoClient:
    """`BlockingMeshClient` to the echo service: a blocking link, no event loop."""

    def __init__(self, address: str) -> None:
        self._client = sidecar.BlockingMeshClient(address, shm_dir="")

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a read-only view on a pooled receive buffer."""
        out: Payload = self._client.infer("echo", {"x": payload})["y"]
        return out

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return time_each(self.echo, payload, reps)

    def expected_path(self, size: int) -> DataPath:
        """The network, at every size: shared memory is off."""
        return "network"

    def shm_stats(self) -> ShmStats | None:
        """None, as shared memory is off."""
        return self._client.shm_stats()

    def close(self) -> None:
        """Close the links and the loop."""
        self._client.close()


def tcp(ready: Ready) -> BlockingEchoClient:
    """A client for the server's TCP listener."""
    return BlockingEchoClient(ready["mesh"])


def uds(ready: Ready) -> BlockingEchoClient:
    """A client for the server's Unix socket."""
    return BlockingEchoClient(ready["uds"])


def tcp_async(ready: Ready) -> MeshEchoClient:
    """An asyncio client for the server's TCP listener."""
    return MeshEchoClient(ready["mesh"])
