"""tritonclient's sync clients as `bench.peers._base.Client`s: one round trip per call.

A round trip is what a program does per request, numpy array in, numpy array out:
- inline: build the input from the array (`set_data_from_numpy`; HTTP with the binary
  tensor extension), infer, take the output as an array (`as_numpy`, a view on the reply);
- system shm: write the array into the client's input region (`set_shared_memory_region`,
  one copy), infer naming that region and an output region, take the output as an array
  (`get_contents_as_numpy`, a view on the region), as Triton's shm examples do.
Regions are made and registered for a size when it first comes (in the untimed echo),
then reused; they are unregistered and destroyed on close.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Final

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from bench.peers._base import Payload, check_size

from ._paths import OipPath
from ._replica import INPUT, OUTPUT, SERVICE

MODEL: Final = SERVICE  # the Triton echo model has the same name and tensor names
NETWORK_TIMEOUT_S: Final = 300.0  # the watchdog bounds calls; this only must not come first
ROUND_TRIP: Final = (
    "numpy in, numpy out: inline, set_data_from_numpy + infer + as_numpy (HTTP with the "
    "binary extension); system shm, the input written into a registered region + infer "
    "naming it and an output region + get_contents_as_numpy (a view)"
)


class OipEcho:
    """tritonclient.http or .grpc to `address`, echoing through model `echo`."""

    def __init__(self, path: OipPath, address: str) -> None:
        self._path = path
        self._module: Any = httpclient if path.protocol == "http" else grpcclient
        if path.protocol == "http":
            self._client: Any = httpclient.InferenceServerClient(
                url=address, connection_timeout=NETWORK_TIMEOUT_S, network_timeout=NETWORK_TIMEOUT_S
            )
        else:
            self._client = grpcclient.InferenceServerClient(url=address)
        self._regions: tuple[Any, Any] | None = None  # input, output handles
        self._region_size = 0
        self._names = ("", "")

    def echo(self, payload: Payload) -> Payload:
        """One round trip; returns a copy of the output (untimed: the echo check)."""
        if self._path.shm:
            self._ensure_regions(payload.nbytes)
        return np.array(self._round_trip(payload.reshape(1, -1))).reshape(-1)

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds. Raises EchoMismatch."""
        if self._path.shm:
            self._ensure_regions(payload.nbytes)
        matrix = payload.reshape(1, -1)
        samples: list[int] = []
        clock = time.perf_counter_ns
        for _ in range(reps):
            start = clock()
            out = self._round_trip(matrix)
            samples.append(clock() - start)
            check_size(out, payload)
            del out  # a view on the output region must be gone before the region is
        return samples

    def close(self) -> None:
        """Unregister and destroy the regions, close the connection."""
        try:
            self._drop_regions()
        finally:
            self._client.close()

    def _round_trip(self, matrix: Payload) -> Payload:
        m = self._module
        tensor = m.InferInput(INPUT, list(matrix.shape), "UINT8")
        wanted = m.InferRequestedOutput(OUTPUT)
        if not self._path.shm:
            tensor.set_data_from_numpy(matrix)  # HTTP: binary_data=True by default
            result = self._client.infer(MODEL, [tensor], outputs=[wanted])
            out: Payload = result.as_numpy(OUTPUT)
            return out
        assert self._regions is not None
        source, target = self._regions
        shm.set_shared_memory_region(source, [matrix])
        tensor.set_shared_memory(self._names[0], matrix.nbytes)
        wanted.set_shared_memory(self._names[1], matrix.nbytes)
        result = self._client.infer(MODEL, [tensor], outputs=[wanted])
        view: Payload = shm.get_contents_as_numpy(target, np.uint8, _shape(result))
        return view

    def _ensure_regions(self, size: int) -> None:
        if self._regions is not None and self._region_size == size:
            return
        self._drop_regions()
        # HTTP and gRPC clients of one server share its registry: names tell paths apart.
        base = f"{self._path.protocol}-{self._path.route}"
        names = (f"{base}-in", f"{base}-out")
        keys = [f"/arrowmesh-bench-oip-{os.getpid()}-{name}" for name in names]
        made = []
        try:
            for name, key in zip(names, keys, strict=True):
                made.append(shm.create_shared_memory_region(name, key, size))
                self._client.register_system_shared_memory(name, key, size)
        except BaseException:
            for handle in made:
                shm.destroy_shared_memory_region(handle)
            raise
        self._regions, self._region_size, self._names = (made[0], made[1]), size, names

    def _drop_regions(self) -> None:
        regions, self._regions = self._regions, None
        if regions is None:
            return
        for name, handle in zip(self._names, regions, strict=True):
            with contextlib.suppress(Exception):  # a server already gone forgets it anyway
                self._client.unregister_system_shared_memory(name)
            shm.destroy_shared_memory_region(handle)


def _shape(result: Any) -> list[int]:
    """The output's shape as the server reported it (HTTP: JSON, gRPC: a message)."""
    output = result.get_output(OUTPUT)
    shape = output["shape"] if isinstance(output, dict) else output.shape
    return [int(d) for d in shape]
