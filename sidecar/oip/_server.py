"""`OipServer`: what both OIP front doors (HTTP, gRPC) serve, independent of the wire.

A front door parses its protocol into an `InferRequest` and hands it here; the inputs
(read in place from shared-memory regions where the caller put them there) go to the model
as one mesh request through the daemon, the same way mesh callers' requests go: to the app
this sidecar fronts, or through the router to an endpoint of the service. The reply's
outputs are picked as asked, written in place into regions where asked, and come back as
an `InferResponse` for the front door to encode.

Inputs read from a region are views on it; a mesh link that shares memory with the next
hop copies them once into its arena (the caller's region is not one of our arenas), a
network link sends them from the view.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import numpy as np

import transport
from transport import ErrorCode, Header, Kind, Limits, Message, Placer, StreamLink

from .._signature import TensorSpec
from .._trace import ensure_traceparent
from ._datatypes import Array, datatype_of, from_raw, raw_parts, raw_size
from ._errors import OipError, oip_error_of, unknown_model
from ._model import (
    DEFAULT_VERSION,
    SEQUENCE_ID,
    TIMEOUT,
    InferRequest,
    InferResponse,
    ModelMetadata,
    OutputTensor,
    RequestedOutput,
    ServerMetadata,
    ShmRef,
    timeout_seconds,
)
from ._shm import SHM_DIRECTORY, SystemShmRegistry
from ._stats import ModelStats, StatsBook

Send = Callable[[StreamLink, Placer | None], Awaitable[Message]]

SERVER_NAME: Final = "arrowmesh"
PLATFORM: Final = "arrowmesh_mesh"
EXTENSIONS: Final = ("binary_tensor_data", "parameters", "statistics", "system_shared_memory")
METADATA_TIMEOUT: Final = 10.0
# Copies into a caller's region above this size run in a worker thread, not on the loop
# (a 64 MiB memcpy takes ~10 ms here).
COPY_IN_THREAD: Final = 1 << 20
# The rule discovery applies to service names: anything else cannot be a model here.
_MODEL_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Request parameters the protocol itself reads; the rest travel to the model.
_RESERVED: Final = frozenset(
    {"binary_data_output", TIMEOUT, "priority", SEQUENCE_ID, "sequence_start", "sequence_end"}
)


class Mesh(Protocol):
    """What the front doors need from the daemon."""

    @property
    def ready(self) -> bool:
        """The sidecar is ready to serve."""

    async def serves(self, service: str) -> bool:
        """True if requests for `service` can go somewhere: our app, or listed endpoints."""

    async def call(
        self, service: str, send: Send, *, key: bytes | None, deadline: float | None
    ) -> Message:
        """Call `send` on a link to `service` (our app or an endpoint); its reply."""


class OipServer:
    """The Open Inference Protocol served over the mesh (see the module doc).

    `own_model` is the service this sidecar fronts, if any. Call `aclose()` at shutdown:
    it unmaps every shared-memory region still registered.
    """

    def __init__(
        self,
        mesh: Mesh,
        limits: Limits,
        *,
        own_model: str | None = None,
        version: str = "",
        shm_directory: str = SHM_DIRECTORY,
    ) -> None:
        self.mesh = mesh
        self.limits = limits
        self.own_model = own_model
        self.version = version
        self.regions = SystemShmRegistry(shm_directory)
        self.stats = StatsBook()

    # Health and metadata

    def server_metadata(self) -> ServerMetadata:
        """Name, version and the protocol extensions served."""
        return ServerMetadata(SERVER_NAME, self.version, EXTENSIONS)

    @property
    def ready(self) -> bool:
        """The sidecar is ready (listening, registered, its app healthy, not draining)."""
        return self.mesh.ready

    async def model_ready(self, model: str) -> bool:
        """True if requests for `model` can be served now: our own app while the sidecar is
        ready, another service while the registry lists endpoints of it. Raises OipError
        (unknown model) otherwise."""
        await self.check_model(model)
        return self.mesh.ready if model == self.own_model else True

    async def check_model(self, model: str) -> None:
        """Raise OipError (Triton's unknown-model wording) unless `model` can be served."""
        if _MODEL_NAME.match(model) is None or not await self.mesh.serves(model):
            raise unknown_model(model)

    async def model_metadata(self, model: str) -> ModelMetadata:
        """The model's inputs and outputs as its replica declares them (none if it
        declares nothing). Raises OipError."""
        await self.check_model(model)
        deadline = asyncio.get_running_loop().time() + METADATA_TIMEOUT

        async def send(link: StreamLink, placer: Placer | None) -> Message:
            header = Header(
                Kind.REQUEST, service=model, method="metadata",
                traceparent=ensure_traceparent(None),
            )  # fmt: skip
            return await link.request(header, [], deadline=deadline)

        try:
            reply = await self.mesh.call(model, send, key=None, deadline=deadline)
            params = reply.header.params
        except transport.RemoteError as exc:
            if exc.code is not ErrorCode.NOT_FOUND or "unknown method" not in exc.message:
                raise oip_error_of(exc) from exc
            params = {}  # a replica from before signatures: it declares nothing
        except Exception as exc:
            raise oip_error_of(exc) from exc
        return ModelMetadata(
            name=model,
            versions=(DEFAULT_VERSION,),
            platform=PLATFORM,
            inputs=_specs(params.get("inputs")),
            outputs=_specs(params.get("outputs")),
        )

    async def model_stats(self, model: str = "", version: str = "") -> list[ModelStats]:
        """Statistics of `model`, or of every model seen (and our own). Raises OipError."""
        version = version or DEFAULT_VERSION
        if model:
            if model not in self.stats.models() and model != self.own_model:
                await self.check_model(model)
            return [self.stats.stats(model, version)]
        names = set(self.stats.models())
        if self.own_model is not None:
            names.add(self.own_model)
        return [self.stats.stats(name, version) for name in sorted(names)]

    async def aclose(self) -> None:
        """Unmap every region still registered."""
        await self.regions.aclose()

    # Inference

    async def infer(
        self,
        request: InferRequest,
        *,
        deadline: float | None = None,
        traceparent: str | None = None,
    ) -> InferResponse:
        """Serve `request`; `deadline` in loop.time() terms (the request's own `timeout`
        parameter, in microseconds, may shorten it). Raises OipError."""
        model = request.model_name
        await self.check_model(model)
        deadline = _deadline(request, deadline)
        clock = [time.perf_counter_ns()]
        ok = False
        try:
            with contextlib.ExitStack() as held:
                inputs = self._inputs(request, held)
                clock.append(time.perf_counter_ns())
                reply = await self._call(request, inputs, deadline, traceparent)
                del inputs
                clock.append(time.perf_counter_ns())
                outputs = await self._outputs(request, reply, held)
            response = InferResponse(
                model_name=model,
                model_version=request.model_version or DEFAULT_VERSION,
                id=request.id,
                outputs=outputs,
            )
            ok = True
            return response
        except Exception as exc:
            raise oip_error_of(exc) from exc
        finally:
            clock += [time.perf_counter_ns()] * (4 - len(clock))
            self.stats.observe(
                model, ok, clock[3] - clock[0], time.time_ns() // 1_000_000,
                input_ns=clock[1] - clock[0], infer_ns=clock[2] - clock[1],
                output_ns=clock[3] - clock[2],
            )  # fmt: skip

    def _inputs(self, request: InferRequest, held: contextlib.ExitStack) -> dict[str, Array]:
        inputs: dict[str, Array] = {}
        for tensor in request.inputs:
            if tensor.name in inputs:
                raise OipError.invalid(f"input '{tensor.name}' is given more than once")
            if tensor.shm is not None:
                view = held.enter_context(self.regions.borrow(tensor.shm))
                array = from_raw(tensor.name, tensor.datatype, tensor.shape, view.data)
                if array.dtype != object:
                    array.flags.writeable = False
            elif tensor.data is not None:
                array = tensor.data
            else:
                raise OipError.invalid(f"input '{tensor.name}' has no data")
            inputs[tensor.name] = array
        return inputs

    async def _call(
        self,
        request: InferRequest,
        inputs: dict[str, Array],
        deadline: float | None,
        traceparent: str | None,
    ) -> Message:
        # The caller's own parameters travel as the mesh request's (an OIP app's upstream
        # client passes them on to its server); the protocol's own stay here.
        params: dict[str, object] = {
            k: v for k, v in request.parameters.items() if k not in _RESERVED
        }
        sequence = request.parameters.get(SEQUENCE_ID)
        key = None
        if sequence not in (None, 0, ""):
            # A sequence's requests go to the same replica (with a ring_hash balancer).
            params["affinity"] = str(sequence)
            key = str(sequence).encode()
        trace = ensure_traceparent(traceparent)
        from_regions = {t.name for t in request.inputs if t.shm is not None}
        staged: dict[str, Array] = {}  # made on the first try to a shm hop, kept for retries

        async def send(link: StreamLink, placer: Placer | None) -> Message:
            tensors = inputs
            if from_regions and isinstance(placer, transport.ShmPlacer):
                tensors = await _staged(inputs, from_regions, placer.domain, staged)
            try:
                metas, parts, body_len, body_ref = transport.encode_message(
                    tensors, self.limits, placer
                )
            except transport.TransportError as exc:
                raise OipError.invalid(str(exc)) from None
            header = Header(
                Kind.REQUEST, service=request.model_name, method="infer", traceparent=trace,
                body_len=body_len, tensors=metas, params=params, body_ref=body_ref,
            )  # fmt: skip
            return await link.request(header, parts, deadline=deadline)

        return await self.mesh.call(request.model_name, send, key=key, deadline=deadline)

    async def _outputs(
        self, request: InferRequest, reply: Message, held: contextlib.ExitStack
    ) -> tuple[OutputTensor, ...]:
        try:
            produced = transport.decode_tensors(
                reply.header.tensors, reply.body_view(), self.limits, reply.shared
            )
        except transport.TransportError as exc:
            raise OipError.internal(f"the model's reply cannot be read: {exc}") from exc
        del reply
        wanted = request.outputs or tuple(RequestedOutput(name) for name in produced)
        outputs = []
        for want in wanted:
            array = produced.get(want.name)
            if array is None:
                raise OipError.invalid(
                    f"unexpected inference output '{want.name}' for model '{request.model_name}'"
                )
            binary = request.binary_output if want.binary is None else want.binary
            datatype = datatype_of(array)
            shape = tuple(array.shape)
            if want.shm is not None:
                await self._write(want.name, array, want.shm, held)
                outputs.append(OutputTensor(want.name, datatype, shape, None, shm=want.shm))
            else:
                outputs.append(OutputTensor(want.name, datatype, shape, array, binary))
        return tuple(outputs)

    async def _write(
        self, name: str, array: Array, ref: ShmRef, held: contextlib.ExitStack
    ) -> None:
        size = raw_size(array)
        if size > ref.byte_size:
            raise OipError.invalid(
                f"shared memory size specified with the request for output '{name}' "
                f"({ref.byte_size} bytes) should be at least {size} bytes to hold the results"
            )
        target = held.enter_context(self.regions.borrow(ref))[:size]
        if size >= COPY_IN_THREAD:
            await asyncio.to_thread(_copy_into, target, array)
        else:
            _copy_into(target, array)


def _copy_into(target: Any, array: Array) -> None:
    """Write `array` in raw form into the uint8 array `target` (exactly its size)."""
    if array.dtype.hasobject or array.dtype.kind in "SU":
        at = 0
        for part in raw_parts(array):
            target[at : at + part.nbytes] = np.frombuffer(part, dtype=np.uint8)
            at += part.nbytes
        return
    if _plain(array):
        transport.copy_parallel(target, array.reshape(-1).view(np.uint8))
        return
    np.copyto(target.view(array.dtype.newbyteorder("<")).reshape(array.shape), array)


def _plain(array: Array) -> bool:
    """True for a C-contiguous array whose bytes are already its raw (little-endian) form."""
    little = array.dtype == array.dtype.newbyteorder("<")
    return bool(array.flags.c_contiguous) and little and not array.dtype.hasobject


def _stage(domain: transport.ShmDomain, array: Array) -> Array | None:
    """A copy of `array` in an arena of `domain` (blocking), or None if there is no room."""
    copy = domain.alloc(array.shape, array.dtype)
    if copy is not None:
        transport.copy_parallel(copy.reshape(-1).view(np.uint8), array.reshape(-1).view(np.uint8))
    return copy


async def _staged(
    inputs: dict[str, Array], names: set[str], domain: transport.ShmDomain, staged: dict[str, Array]
) -> dict[str, Array]:
    """`inputs` with the large ones read from client regions copied into our arena (in a
    worker thread, split across cores), so the next hop gets them by reference: the one
    copy is off the event loop and twice as fast as the placer's own on it."""
    for name in names:
        array = inputs[name]
        if name in staged or array.nbytes < COPY_IN_THREAD or not _plain(array):
            continue
        copy = await asyncio.to_thread(_stage, domain, array)  # alloc may make an arena
        if copy is None:  # the arenas are full: the placer copies, or the network carries it
            continue
        staged[name] = copy
    return {**inputs, **staged}


def _deadline(request: InferRequest, deadline: float | None) -> float | None:
    timeout = timeout_seconds(request.parameters.get(TIMEOUT))
    if timeout is None:
        return deadline
    own = asyncio.get_running_loop().time() + timeout
    return own if deadline is None else min(own, deadline)


def _specs(value: object) -> tuple[TensorSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise OipError.internal(f"the model's metadata reply is malformed: {value!r:.80}")
    return tuple(_spec(item) for item in value)


def _spec(value: object) -> TensorSpec:
    if isinstance(value, list) and len(value) == 3:
        name, datatype, shape = value
        if isinstance(name, str) and isinstance(datatype, str) and isinstance(shape, list):
            try:
                return TensorSpec(name, datatype, tuple(shape))
            except ValueError as exc:
                raise OipError.internal(f"the model declares a bad tensor: {exc}") from None
    raise OipError.internal(f"the model's metadata reply is malformed: {value!r:.80}")
