"""The OIP gRPC service (`inference.GRPCInferenceService`) on the local gRPC listener.

Every RPC parses into the core's requests and is served by the same `OipServer` as the
HTTP front door, so routing, statistics, shared-memory regions and errors are shared.
Failures end the call with the gRPC code of sidecar's one status table and the core's
message; ModelStreamInfer reports a request's failure in its response's `error_message`
and keeps the stream open.

Messages come and go through tritonclient's generated classes, except the tensor bytes of
ModelInfer and ModelStreamInfer: those are cut out of the received buffer as views and
written from the outputs' arrays (see `_grpc_wire`). The call's gRPC deadline becomes the
mesh request's deadline.

Methods not served here (model repository load/unload, trace and log settings) are
answered UNIMPLEMENTED by gRPC itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import grpc
from tritonclient.grpc import service_pb2

from transport import ErrorCode, Limits

from . import _grpc_messages as messages
from ._errors import OipError, oip_error_of
from ._grpc_messages import Part, Proto
from ._grpc_wire import nested, split_raw
from ._model import DEFAULT_VERSION
from ._server import OipServer

logger = logging.getLogger(__name__)

SERVICE: Final = "inference.GRPCInferenceService"
# gRPC takes message sizes as a signed 32-bit count.
MAX_GRPC_MESSAGE: Final = 2**31 - 1
# Requests of one stream served at once (answers still go out in order).
STREAM_WINDOW: Final = 16
# Responses up to this size are joined on the loop; larger ones in a worker thread (a
# 64 MiB copy takes ~10 ms here).
JOIN_IN_THREAD: Final = 1 << 20

Context = Any  # grpc.aio.ServicerContext (grpc is untyped)
Handler = Callable[[Any, Context], Awaitable[Any]]


def grpc_options(limits: Limits) -> list[tuple[str, int]]:
    """Server options: messages up to `max_message_size` (ARROWMESH_MAX_MESSAGE_SIZE, at
    most what gRPC can count) instead of gRPC's 4 MB default; a request over the limit but
    within `max_header_size` of it is refused by `OipGrpcService` with a message naming the
    setting."""
    size = min(limits.max_message_size + limits.max_header_size, MAX_GRPC_MESSAGE)
    return [("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A received ModelInferRequest: the message without its tensor bytes and those as
    views, or why it could not be read (`error`)."""

    message: Proto | None
    raws: list[memoryview] = field(default_factory=list)
    error: OipError | None = None
    data: bytes = b""  # the request as received
    rest: bytes = b""  # the request without its tensor bytes


def _reader(limit: int) -> Callable[[bytes], Incoming]:
    def read(data: bytes) -> Incoming:
        if len(data) > limit:
            return Incoming(None, error=_too_large(len(data), limit))
        try:
            rest, raws = split_raw(data)
            message = service_pb2.ModelInferRequest.FromString(rest)
            return Incoming(message, raws, data=data, rest=rest)
        except Exception as exc:  # WireError, or protobuf's DecodeError (an Exception)
            return Incoming(None, error=OipError.invalid(f"malformed ModelInferRequest: {exc}"))

    return read


def _too_large(size: int, limit: int) -> OipError:
    return OipError(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"request message is {size} bytes, over max_message_size={limit} "
        "(ARROWMESH_MAX_MESSAGE_SIZE); send smaller tensors, pass them in shared memory, "
        "or raise it",
    )


class Lane(Protocol):
    """ModelInfer requests served without the front door (sidecar._oip_lane)."""

    def takes(self, request: Incoming) -> bool:
        """True if the lane serves this (well-formed) request."""

    async def infer(
        self, request: Incoming, timeout: float | None, traceparent: str | None
    ) -> bytes | tuple[str, str]:
        """The ModelInferResponse bytes, or an error as (status code name, message)."""


class OipGrpcService:
    """The `inference.GRPCInferenceService` methods over an `OipServer`; `handler()` is
    what a grpc.aio server adds. With a `lane`, the ModelInfer requests it takes skip the
    front door."""

    def __init__(self, server: OipServer, lane: Lane | None = None) -> None:
        self._server = server
        self._lane = lane
        self._front_door = _answering_errors(self._model_infer)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler serving every method this front door implements."""
        unary: dict[str, tuple[Handler, Any]] = {
            "ServerLive": (self.server_live, service_pb2.ServerLiveRequest),
            "ServerReady": (self.server_ready, service_pb2.ServerReadyRequest),
            "ModelReady": (self.model_ready, service_pb2.ModelReadyRequest),
            "ServerMetadata": (self.server_metadata, service_pb2.ServerMetadataRequest),
            "ModelMetadata": (self.model_metadata, service_pb2.ModelMetadataRequest),
            "ModelConfig": (self.model_config, service_pb2.ModelConfigRequest),
            "ModelStatistics": (self.model_statistics, service_pb2.ModelStatisticsRequest),
            "RepositoryIndex": (self.repository_index, service_pb2.RepositoryIndexRequest),
            "SystemSharedMemoryStatus": (
                self.shm_status, service_pb2.SystemSharedMemoryStatusRequest),
            "SystemSharedMemoryRegister": (
                self.shm_register, service_pb2.SystemSharedMemoryRegisterRequest),
            "SystemSharedMemoryUnregister": (
                self.shm_unregister, service_pb2.SystemSharedMemoryUnregisterRequest),
            "CudaSharedMemoryStatus": (
                self.cuda_status, service_pb2.CudaSharedMemoryStatusRequest),
            "CudaSharedMemoryRegister": (
                self.cuda_register, service_pb2.CudaSharedMemoryRegisterRequest),
            "CudaSharedMemoryUnregister": (
                self.cuda_unregister, service_pb2.CudaSharedMemoryUnregisterRequest),
        }  # fmt: skip
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                _answering_errors(method),
                request_deserializer=request.FromString,
                response_serializer=_serialize,
            )
            for name, (method, request) in unary.items()
        }
        read = _reader(self._server.limits.max_message_size)
        methods["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
            self.model_infer, request_deserializer=read
        )
        methods["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer, request_deserializer=read
        )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    # Health and metadata

    async def server_live(self, request: Proto, context: Context) -> Proto:
        return service_pb2.ServerLiveResponse(live=True)

    async def server_ready(self, request: Proto, context: Context) -> Proto:
        return service_pb2.ServerReadyResponse(ready=self._server.ready)

    async def model_ready(self, request: Proto, context: Context) -> Proto:
        try:
            ready = await self._server.model_ready(request.name)
        except OipError:
            ready = False  # an unknown model is not ready, as Triton answers
        return service_pb2.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: Proto, context: Context) -> Proto:
        return messages.server_metadata(self._server.server_metadata())

    async def model_metadata(self, request: Proto, context: Context) -> Proto:
        return messages.model_metadata(await self._server.model_metadata(request.name))

    async def model_config(self, request: Proto, context: Context) -> Proto:
        return messages.model_config(await self._server.model_metadata(request.name))

    async def model_statistics(self, request: Proto, context: Context) -> Proto:
        stats = await self._server.model_stats(request.name, request.version)
        return messages.model_stats(stats)

    async def repository_index(self, request: Proto, context: Context) -> Proto:
        # What this sidecar knows of: the model it fronts and every model it was asked for.
        names = set(self._server.stats.models())
        if self._server.own_model is not None:
            names.add(self._server.own_model)
        return messages.repository_index(sorted(names), DEFAULT_VERSION)

    # Inference

    async def model_infer(self, request: Incoming, context: Context) -> bytes:
        lane = self._lane
        if lane is not None and request.message is not None and lane.takes(request):
            remaining = context.time_remaining()
            answer = await lane.infer(request, remaining, _traceparent(context))
            if isinstance(answer, tuple):  # the server's status, as it answered
                await context.abort(grpc.StatusCode[answer[0]], answer[1])
            assert isinstance(answer, bytes)
            return answer
        answered: bytes = await self._front_door(request, context)
        return answered

    async def _model_infer(self, request: Incoming, context: Context) -> bytes:
        return await _joined(await self._infer(request, context))

    async def model_stream_infer(self, requests: AsyncIterator[Incoming], context: Context) -> None:
        """Serve each request of the stream (up to STREAM_WINDOW at once) and answer in
        order; a failed request is answered with its `error_message`."""
        window: asyncio.Queue[asyncio.Task[bytes] | None] = asyncio.Queue(STREAM_WINDOW)

        async def read(group: asyncio.TaskGroup) -> None:
            async for request in requests:
                await window.put(group.create_task(self._stream_one(request, context)))
            await window.put(None)

        async with asyncio.TaskGroup() as group:
            group.create_task(read(group))
            while (answer := await window.get()) is not None:
                await context.write(await answer)

    async def _stream_one(self, request: Incoming, context: Context) -> bytes:
        try:
            return await _joined(nested(await self._infer(request, context)))
        except OipError as exc:
            request_id = str(request.message.id) if request.message is not None else ""
            return messages.stream_error(exc.message, request_id)
        except Exception as exc:
            logger.exception("oip grpc stream request failed")
            return messages.stream_error(oip_error_of(exc).message, "")

    async def _infer(self, request: Incoming, context: Context) -> list[Part]:
        if request.error is not None:
            raise request.error
        infer_request = messages.infer_request(request.message, request.raws)
        del request
        response = await self._server.infer(
            infer_request, deadline=_deadline(context), traceparent=_traceparent(context)
        )
        del infer_request
        return messages.infer_response(response)

    # System shared memory

    async def shm_status(self, request: Proto, context: Context) -> Proto:
        return messages.shm_status(self._server.regions.status(request.name))

    async def shm_register(self, request: Proto, context: Context) -> Proto:
        await self._server.regions.register(
            request.name, request.key, int(request.offset), int(request.byte_size)
        )
        return service_pb2.SystemSharedMemoryRegisterResponse()

    async def shm_unregister(self, request: Proto, context: Context) -> Proto:
        self._server.regions.unregister(request.name)
        return service_pb2.SystemSharedMemoryUnregisterResponse()

    # CUDA shared memory: this server has no GPUs; it registers nothing and says so.

    async def cuda_status(self, request: Proto, context: Context) -> Proto:
        if request.name:
            raise OipError.not_found(f"Unable to find cuda shared memory region: '{request.name}'")
        return service_pb2.CudaSharedMemoryStatusResponse()

    async def cuda_register(self, request: Proto, context: Context) -> Proto:
        raise OipError.invalid(
            f"failed to register CUDA shared memory region: '{request.name}', GPUs not "
            "supported (this sidecar serves system shared memory only)"
        )

    async def cuda_unregister(self, request: Proto, context: Context) -> Proto:
        return service_pb2.CudaSharedMemoryUnregisterResponse()  # nothing is ever registered


def _answering_errors(method: Handler) -> Handler:
    async def answer(request: Any, context: Context) -> Any:
        try:
            return await method(request, context)
        except Exception as exc:
            if not isinstance(exc, OipError):
                logger.exception("oip grpc request failed")
            error = oip_error_of(exc)
            # Only the code and message outlive this block: the traceback holds the
            # request's frames, and with them views on the caller's shared memory, which
            # must be unmapped when the region is unregistered.
            code, message = grpc.StatusCode[error.grpc_code], error.message
            del error
        await context.abort(code, message)

    return answer


def _serialize(message: Proto) -> bytes:
    data: bytes = message.SerializeToString()
    return data


async def _joined(parts: list[Part]) -> bytes:
    size = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
    if size >= JOIN_IN_THREAD:
        return await asyncio.to_thread(b"".join, parts)
    return b"".join(parts)


def _deadline(context: Context) -> float | None:
    """The call's gRPC deadline in loop.time() terms (None without one)."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + max(float(remaining), 0.0)


def _traceparent(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent" and isinstance(value, str):
            return value
    return None
