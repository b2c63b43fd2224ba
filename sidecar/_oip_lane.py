"""The fast lanes of the local listeners: inference on the OIP app this sidecar fronts.

A client of the model this sidecar fronts (`--app-protocol oip-http`, the model under the
service's own name) asks `POST /v2/models/{service}[/versions/{v}]/infer`. Decoding that
request into tensors, carrying them over a mesh link and encoding them again for the
server is what the OIP front door does for every other model; for this one it is a round
trip through the interpreter that the server itself would do better. So the request goes
to the server as it came (its JSON header and binary tensors untouched) and the server's
answer, success or error, comes back as it was sent: Triton's own wording, status and
binary outputs. What the sidecar adds stays: admission under the queue limit, the app's
health as pings report it, request metrics, the statistics extension's counters, a W3C
traceparent, draining.

Requests naming the client's shared-memory regions (registered with the sidecar, not the
server) go on naming the server's aliases of them where the server maps our /dev/shm (see
_server_regions). The request's `timeout` parameter is a deadline here too, as at the
front door (the server may read it only as a queue limit).

Requests the lane leaves to the front door (`takes` says no): ones naming regions the
server cannot map, binary tensors to a server without the binary extension (MLServer: the
front door sends JSON), compressed bodies, all-JSON bodies over MAX_JSON_BODY, bodies over
the message size limit, and any request before the server's extensions are known. Each
is served by the full front door, as before.

The gRPC lane (`OipGrpcAppLane`, `--app-protocol oip-grpc`) does the same for ModelInfer
on the local gRPC listener: the request's bytes go to the server's ModelInfer unparsed,
its answer's bytes or its status code and message come back as they were;
ModelStreamInfer takes the front door.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import copy
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import urlsplit

import grpc
from tritonclient.grpc import service_pb2

import transport
from transport import BufferPool, ErrorCode

from ._front import LaneAnswer, LaneRequest
from ._server_regions import ALIAS_PREFIX, NotShared, ServerRegions
from ._trace import ensure_traceparent
from .oip import OipError, RegionStatus, SystemShmRegistry, oip_error_of
from .oip._grpc import SERVICE, Incoming
from .oip._grpc_messages import param_value
from .oip._grpc_wire import RAW_INPUT_CONTENTS, with_raw
from .oip._model import SHM_REGION, TIMEOUT, timeout_seconds
from .oip_upstream import upstream_error
from .oip_upstream._raw_http import RawHttp, RawHttpError

# A request that is all JSON (no binary part) over this size takes the front door: the
# lane would have to scan it for region names, which the front door parses anyway.
MAX_JSON_BODY: Final = 1 << 20
PROTOCOL: Final = "oip-http"
HEADER_LENGTH: Final = "inference-header-content-length"
_JSON: Final = ("Content-Type", "application/json")
T = TypeVar("T")
_SPELLED: Final = {"content-type": "Content-Type", HEADER_LENGTH: "Inference-Header-Content-Length"}


class AppHooks(Protocol):
    """What the lane needs from the daemon."""

    @property
    def draining(self) -> bool:
        """The sidecar is draining: no new requests."""

    def lane_request(self, service: str) -> contextlib.AbstractContextManager[None]:
        """Admit a request to the app (raises RemoteError "overloaded" over the queue limit),
        count it in flight, and tell the app's health how it ended."""

    def observe(self, service: str, protocol: str, seconds: float, outcome: str) -> None:
        """Count a finished request of the lane for `protocol` (http, grpc) in the metrics."""


class Stats(Protocol):
    """The statistics extension's counters (sidecar.oip.StatsBook)."""

    def observe(self, model: str, ok: bool, total_ns: int, now_ms: int) -> None:
        """Count one request of `model`."""


class _Answered(transport.RemoteError):
    """The server answered with an error: `answer` goes back to the client as it is."""

    def __init__(self, error: transport.RemoteError, answer: LaneAnswer) -> None:
        super().__init__(error.code, error.message, error.remote_type)
        self.answer = answer


class _Lane(abc.ABC):
    """What both lanes share: requests in flight (draining waits for them), admitted to
    the app and counted in the metrics and statistics when done, the client's regions
    aliased on the server (when a registry is given)."""

    protocol = ""

    def __init__(
        self, model: str, hooks: AppHooks, stats: Stats, registry: SystemShmRegistry | None
    ) -> None:
        self._model = model
        self._hooks = hooks
        self._stats = stats
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._registry = registry
        self.server_regions: ServerRegions | None = None
        if registry is not None:
            self.server_regions = ServerRegions(
                self._register_region, self._unregister_region, registry.directory
            )
            registry.on_release.append(self.server_regions.released)

    async def wait_idle(self) -> None:
        """Return once no request is in the lane."""
        await self._idle.wait()

    async def _run(self, forward: Callable[[], Awaitable[T]], deadline: float | None) -> T:
        """`forward()`, admitted to the app (refused while draining), counted when done by
        how it ended; raises what it raised. `deadline`: the seconds it was given, to tell
        a cancellation at the caller's deadline (gRPC cancels the call then) from others."""
        self._in_flight += 1
        self._idle.clear()
        started = time.perf_counter()
        outcome = "ok"
        try:
            if self._hooks.draining:
                raise transport.RemoteError(ErrorCode.UNAVAILABLE, "the sidecar is draining")
            with self._hooks.lane_request(self._model):
                return await forward()
        except asyncio.CancelledError:
            late = deadline is not None and time.perf_counter() - started >= deadline * 0.99
            outcome = (ErrorCode.DEADLINE_EXCEEDED if late else ErrorCode.CANCELLED).value
            raise
        except Exception as exc:
            outcome = transport.error_code_of(exc).value
            raise
        finally:
            seconds = time.perf_counter() - started
            now_ms = time.time_ns() // 1_000_000
            self._stats.observe(self._model, outcome == "ok", int(seconds * 1e9), now_ms)
            self._hooks.observe(self._model, self.protocol, seconds, outcome)
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def _regions_ready(self) -> bool:
        """True if the server maps our shared memory (else a probe is started once)."""
        regions = self.server_regions
        if regions is None or self._registry is None:
            return False
        if regions.shared is not True:
            regions.start_probe()
            return False
        return True

    @abc.abstractmethod
    async def _register_region(self, name: str, region: RegionStatus) -> None:
        """Register `region` with the server as `name`. Raises NotShared (refused)."""

    @abc.abstractmethod
    async def _unregister_region(self, name: str) -> None:
        """Unregister `name` from the server."""


class OipAppLane(_Lane):
    """The lane (sidecar._front.Lane) for `model`, the OIP HTTP server at `url`.

    `binary` says whether the server takes the binary tensor extension (None: not known
    yet; the app's probe finds out)."""

    protocol = "http"

    def __init__(
        self,
        model: str,
        url: str,
        binary: Callable[[], bool | None],
        hooks: AppHooks,
        stats: Stats,
        max_answer: int,
        registry: SystemShmRegistry | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the fast lane takes an http:// app, not {url!r}")
        self._url = url
        self._base = parts.path.rstrip("/")
        self._binary = binary
        self.max_body = max_answer  # the message size limit, both ways
        self._raw = RawHttp(parts.hostname, parts.port or 80, max_answer, pool)
        name = re.escape(model.encode())
        self._path = re.compile(rb"/v2/models/%s(?:/versions/[^/?#]+)?/infer(?:\?.*)?\Z" % name)
        super().__init__(model, hooks, stats, registry)

    @staticmethod
    def applies(model: str, app_model: str | None, url: str) -> bool:
        """True if a lane can serve the app: plain http, the model under the service's name."""
        return (app_model in (None, "", model)) and urlsplit(url).scheme == "http"

    async def _register_region(self, name: str, region: RegionStatus) -> None:
        body = json.dumps(
            {"key": region.key, "offset": region.offset, "byte_size": region.byte_size}
        ).encode()
        path = f"{self._base}/v2/systemsharedmemory/region/{name}/register"
        answer = await self._raw.request("POST", path, [_JSON], body)
        if answer.status != 200:
            raise NotShared(_message(answer.body))

    async def _unregister_region(self, name: str) -> None:
        path = f"{self._base}/v2/systemsharedmemory/region/{name}/unregister"
        await self._raw.request("POST", path, [_JSON], b"")

    # Lane

    def wants(self, method: bytes, target: bytes) -> bool:
        """POST to this model's infer path."""
        return method == b"POST" and self._path.match(target) is not None

    def takes(self, request: LaneRequest) -> bool:
        """False for what the front door must serve (see the module doc)."""
        headers = request.headers
        if headers.get("content-encoding", "identity").lower() != "identity":
            return False
        length = headers.get(HEADER_LENGTH)
        if length is not None:
            if self._binary() is not True or not length.isdigit():
                return False
            if not 0 < int(length) <= len(request.body):
                return False  # the front door answers what is wrong with it
            body = bytes(request.body[: int(length)])  # the JSON part (a pooled body's view)
        elif len(request.body) > MAX_JSON_BODY:
            return False
        else:
            body = bytes(request.body)
        regions = b"shared_memory" in body
        if not regions and b'"timeout"' not in body:
            return True
        try:
            document = json.loads(body)
            noted = _Noted(
                document if regions else None, timeout_seconds(_parameter(document, TIMEOUT))
            )
            if regions and not self._takes_regions(document):
                return False
        except (ValueError, TypeError, OipError):
            return False  # the front door says what is wrong with it
        request.note = noted
        return True

    def _takes_regions(self, document: Any) -> bool:
        """True if the server maps our shared memory and every region the request's JSON
        names is registered here (`serve` then names the server's aliases)."""
        if not self._regions_ready():
            return False
        assert self._registry is not None
        for name in _named_regions(document):
            self._registry.status(name)  # raises OipError for one not registered
        return True

    async def serve(self, request: LaneRequest) -> LaneAnswer:
        """The server's answer to `request`, or ours when it cannot be had."""
        noted = request.note
        timeout = noted.timeout if isinstance(noted, _Noted) else None
        try:
            return await self._run(lambda: self._within(request, timeout), None)
        except _Answered as exc:
            return exc.answer
        except Exception as exc:
            error = oip_error_of(exc)
            return LaneAnswer(error.http_status, [_JSON], _error_body(error.message))

    async def _within(self, request: LaneRequest, timeout: float | None) -> LaneAnswer:
        """`_forward`, cut short by the request's own `timeout` (seconds) if it has one."""
        try:
            async with asyncio.timeout(timeout):
                return await self._forward(request)
        except TimeoutError:
            assert timeout is not None
            raise transport.RemoteError(
                ErrorCode.DEADLINE_EXCEEDED,
                f"the request's timeout ({timeout * 1e6:.0f} us) passed before the app answered",
            ) from None

    async def aclose(self) -> None:
        """Unregister the regions' aliases on the server, close the connections to it."""
        if self.server_regions is not None:
            await self.server_regions.aclose()
        await self._raw.aclose()

    async def _forward(self, request: LaneRequest) -> LaneAnswer:
        noted = request.note
        if not isinstance(noted, _Noted) or noted.document is None:
            return await self._send(request, request.body, request.headers.get(HEADER_LENGTH))
        try:
            return await self._send_aliased(request)
        except _Answered as exc:
            if not _lost_region(exc.message):
                raise
            assert self.server_regions is not None
            self.server_regions.forget()  # the server restarted: register them again
            return await self._send_aliased(request)

    async def _send_aliased(self, request: LaneRequest) -> LaneAnswer:
        """`request` naming the server's aliases of its regions instead of ours."""
        assert self.server_regions is not None and self._registry is not None
        assert isinstance(request.note, _Noted)
        document = copy.deepcopy(request.note.document)
        for params in _region_params(document):
            status = self._registry.status(params[SHM_REGION])[0]  # gone: OipError
            try:
                params[SHM_REGION] = await self.server_regions.alias(status)
            except NotShared as exc:
                why = f"the app cannot map region '{status.name}': {exc}"
                raise OipError.invalid(why) from None
        header = json.dumps(document, separators=(",", ":")).encode()
        length = request.headers.get(HEADER_LENGTH)
        rest = request.body[int(length) :] if length is not None else b""
        new_length = str(len(header)) if length is not None else None
        return await self._send(request, header + rest, new_length)

    async def _send(
        self, request: LaneRequest, body: bytes | memoryview, length: str | None
    ) -> LaneAnswer:
        headers = request.headers
        out = [("traceparent", ensure_traceparent(headers.get("traceparent")))]
        if length is not None:
            out.append(("Inference-Header-Content-Length", length))
            if "content-type" in headers:
                out.append(("Content-Type", headers["content-type"]))
        else:
            out.append(_JSON)  # FastAPI-based servers (MLServer) read JSON only with it
        try:
            raw = await self._raw.request("POST", self._base + request.target, out, body)
        except RawHttpError as exc:
            raise transport.RemoteError(
                ErrorCode.UNAVAILABLE, f"the app at {self._url} cannot be reached: {exc}"
            ) from exc
        answer = LaneAnswer(raw.status, [], raw.body)
        for name, value in raw.headers.items():
            answer.headers.append((_SPELLED.get(name, name), value))
        if raw.status >= 400:
            raise _Answered(upstream_error(PROTOCOL, str(raw.status), _message(raw.body)), answer)
        return answer


@dataclass(frozen=True, slots=True)
class _Noted:
    """What `takes` read of a request's JSON for `serve`: the JSON when it names regions,
    and its `timeout` parameter in seconds (the protocol's deadline, which the front door
    honours too; the server may read it only as a queue limit)."""

    document: Any
    timeout: float | None


def _parameter(document: Any, name: str) -> object:
    """The request-level parameter `name` of a request's JSON, if it has one."""
    params = document.get("parameters") if isinstance(document, dict) else None
    return params.get(name) if isinstance(params, dict) else None


def _lost_region(message: str) -> bool:
    """True for the server's answer to a region it does not know (Triton: "Unable to find
    shared memory region: 'NAME'"), NAME one of our aliases: it lost them."""
    return "Unable to find" in message and f"region: '{ALIAS_PREFIX}-" in message


def _region_params(document: Any) -> list[dict[str, Any]]:
    """The parameter objects of the inputs and outputs that name a region."""
    found = []
    for key in ("inputs", "outputs"):
        entries = document.get(key) or []
        if not isinstance(entries, list):
            raise TypeError(f"'{key}' is not an array")
        for entry in entries:
            params = entry.get("parameters") if isinstance(entry, dict) else None
            if isinstance(params, dict) and SHM_REGION in params:
                found.append(params)
    return found


def _named_regions(document: Any) -> list[str]:
    """The region names a request's JSON names. Raises TypeError when it is malformed."""
    if not isinstance(document, dict):
        raise TypeError("not a JSON object")
    names = []
    for params in _region_params(document):
        name = params[SHM_REGION]
        if not isinstance(name, str):
            raise TypeError("a region name is not a string")
        names.append(name)
    return names


def _message(answer: bytes | memoryview) -> str:
    """The `error` of a server's JSON error answer, else the body as text."""
    body = bytes(answer)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:4096].decode("utf-8", "replace")
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    return body[:4096].decode("utf-8", "replace")


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class OipGrpcAppLane(_Lane):
    """The gRPC lane for `model`, the OIP gRPC server at `url` (grpc://host:port)."""

    protocol = "grpc"

    def __init__(
        self,
        model: str,
        url: str,
        hooks: AppHooks,
        stats: Stats,
        max_message: int,
        registry: SystemShmRegistry | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "grpc" or not parts.netloc:
            raise ValueError(f"the gRPC fast lane takes a grpc:// app, not {url!r}")
        self._url = url
        self._target = parts.netloc
        self._max_message = min(max_message, 2**31 - 1)
        self._channel: grpc.aio.Channel | None = None  # made on first use, in the loop
        self._calls: dict[str, Any] = {}
        super().__init__(model, hooks, stats, registry)

    @staticmethod
    def applies(model: str, app_model: str | None, url: str) -> bool:
        """True if a lane can serve the app: plaintext gRPC, the model under its name."""
        return (app_model in (None, "", model)) and urlsplit(url).scheme == "grpc"

    def takes(self, request: Incoming) -> bool:
        """True for ModelInfer of this model, naming regions only where the server maps
        our shared memory and each is registered here."""
        message = request.message
        if message is None or message.model_name != self._model:
            return False
        if b"shared_memory" not in request.rest:
            return True
        if not self._regions_ready():
            return False
        assert self._registry is not None
        try:
            for tensor in (*message.inputs, *message.outputs):
                if SHM_REGION in tensor.parameters:
                    self._registry.status(tensor.parameters[SHM_REGION].string_param)
        except OipError:
            return False  # the front door says which
        return True

    async def infer(
        self, request: Incoming, timeout: float | None, traceparent: str | None
    ) -> bytes | tuple[str, str]:
        """The server's ModelInferResponse bytes, or its error as (status code name,
        message); ours when it cannot be reached."""
        assert request.message is not None  # `takes` said yes
        own = timeout_seconds(param_value(request.message.parameters.get(TIMEOUT)))
        if own is not None:  # the protocol's deadline, as on HTTP
            timeout = own if timeout is None else min(own, timeout)
        try:
            return await self._run(lambda: self._forward(request, timeout, traceparent), timeout)
        except _GrpcAnswered as exc:
            return exc.status, exc.details
        except Exception as exc:
            error = oip_error_of(exc)
            return error.grpc_code, error.message

    async def aclose(self) -> None:
        """Unregister the regions' aliases on the server, close the channel to it."""
        if self.server_regions is not None:
            await self.server_regions.aclose()
        if self._channel is not None:
            channel, self._channel, self._calls = self._channel, None, {}
            await channel.close()

    def _method(self, name: str, message: Any = None) -> Any:
        """A callable for `name` of the inference service: raw request bytes, or an
        instance of the protobuf class `message`; the answer comes as bytes, unread."""
        call = self._calls.get(name)
        if call is None:
            if self._channel is None:
                size = self._max_message
                self._channel = grpc.aio.insecure_channel(
                    self._target,
                    options=[
                        ("grpc.max_receive_message_length", size),
                        ("grpc.max_send_message_length", size),
                        ("grpc.max_reconnect_backoff_ms", 1000),
                    ],
                )
            serialize = None if message is None else message.SerializeToString
            call = self._channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=serialize)
            self._calls[name] = call
        return call

    async def _register_region(self, name: str, region: RegionStatus) -> None:
        kind = service_pb2.SystemSharedMemoryRegisterRequest
        request = kind(name=name, key=region.key, offset=region.offset, byte_size=region.byte_size)
        call = self._method("SystemSharedMemoryRegister", kind)
        try:
            await call(request, timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                raise ConnectionError(exc.details() or "unavailable") from None
            raise NotShared(exc.details() or exc.code().name) from None

    async def _unregister_region(self, name: str) -> None:
        kind = service_pb2.SystemSharedMemoryUnregisterRequest
        await self._method("SystemSharedMemoryUnregister", kind)(kind(name=name), timeout=10.0)

    async def _forward(
        self, request: Incoming, timeout: float | None, traceparent: str | None
    ) -> bytes:
        if b"shared_memory" not in request.rest:
            return await self._send(request.data, timeout, traceparent)
        try:
            return await self._send(await self._aliased(request), timeout, traceparent)
        except _GrpcAnswered as exc:
            if not _lost_region(exc.details):
                raise
            assert self.server_regions is not None
            self.server_regions.forget()  # the server restarted: register them again
            return await self._send(await self._aliased(request), timeout, traceparent)

    async def _aliased(self, request: Incoming) -> bytes:
        """The request naming the server's aliases of its regions instead of ours."""
        assert self.server_regions is not None and self._registry is not None
        message = service_pb2.ModelInferRequest()
        message.CopyFrom(request.message)
        for tensor in (*message.inputs, *message.outputs):
            if SHM_REGION not in tensor.parameters:
                continue
            status = self._registry.status(tensor.parameters[SHM_REGION].string_param)[0]
            try:
                alias = await self.server_regions.alias(status)
            except NotShared as exc:
                why = f"the app cannot map region '{status.name}': {exc}"
                raise OipError.invalid(why) from None
            tensor.parameters[SHM_REGION].string_param = alias
        head = message.SerializeToString()
        return b"".join(with_raw(head, request.raws, RAW_INPUT_CONTENTS))

    async def _send(self, request: bytes, timeout: float | None, traceparent: str | None) -> bytes:
        call = self._method("ModelInfer")
        metadata = (("traceparent", ensure_traceparent(traceparent)),)
        try:
            answer: bytes = await call(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            status, details = exc.code().name, exc.details() or ""
            if status == "UNAVAILABLE":
                raise transport.RemoteError(
                    ErrorCode.UNAVAILABLE, f"the app at {self._url} cannot be reached: {details}"
                ) from None
            error = upstream_error("oip-grpc", f"StatusCode.{status}", details)
            raise _GrpcAnswered(error, status, details) from None
        return answer


class _GrpcAnswered(transport.RemoteError):
    """The server answered with an error status: it goes back to the client as it is."""

    def __init__(self, error: transport.RemoteError, status: str, details: str) -> None:
        super().__init__(error.code, error.message, error.remote_type)
        self.status = status
        self.details = details
