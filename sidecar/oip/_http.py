"""The OIP REST API on the local HTTP listener (KServe v2 / Triton paths), over `OipServer`.

Every failure is answered as the protocol says: a JSON `{"error": message}` with a 4xx/5xx
status from sidecar's one status table. Request bodies are read into pooled, pre-faulted
buffers (no fresh memory per request), and binary outputs are written from the arrays the
model's reply decoded to, without joining them into one buffer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from transport import BufferPool, ErrorCode

from .._http_server import route
from . import _json
from ._errors import OipError, unknown_model
from ._server import OipServer

logger = logging.getLogger(__name__)

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
# Bodies up to this size are read into plain bytes; larger ones into the buffer pool.
_POOLED_FROM: Final = 64 * 1024
# A model's path whose name no `{model}` route matched (it holds a '/').
_MODEL_PATH: Final = re.compile(
    r"^/v2/models/(?P<model>.+?)(?:/versions/[^/]+)?(?:/(?:infer|ready|config|stats))?$"
)
# Responses up to this size are sent as one buffer; larger ones part by part.
_JOIN_UP_TO: Final = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def oip_routes(server: OipServer, pool: BufferPool | None = None) -> list[web.RouteDef]:
    """The routes of the OIP REST API (health, metadata, infer, statistics, shared memory)."""
    h = _Handlers(server, pool or BufferPool())
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/v2/health/live", h.live),
        ("GET", "/v2/health/ready", h.ready),
        ("GET", "/v2", h.server_metadata),
        ("GET", "/v2/", h.server_metadata),
        ("GET", "/v2/models/stats", h.stats),
        ("GET", "/v2/systemsharedmemory/status", h.shm_status),
        ("GET", "/v2/systemsharedmemory/region/{name}/status", h.shm_status),
        ("POST", "/v2/systemsharedmemory/region/{name}/register", h.shm_register),
        ("POST", "/v2/systemsharedmemory/unregister", h.shm_unregister),
        ("POST", "/v2/systemsharedmemory/region/{name}/unregister", h.shm_unregister),
        ("GET", "/v2/cudasharedmemory/status", h.cuda_status),
        ("GET", "/v2/cudasharedmemory/region/{name}/status", h.cuda_status),
        ("POST", "/v2/cudasharedmemory/region/{name}/register", h.cuda_register),
        ("POST", "/v2/cudasharedmemory/unregister", h.cuda_unregister),
        ("POST", "/v2/cudasharedmemory/region/{name}/unregister", h.cuda_unregister),
    ]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [
            ("GET", prefix, h.model_metadata),
            ("GET", prefix + "/ready", h.model_ready),
            ("GET", prefix + "/config", h.model_config),
            ("GET", prefix + "/stats", h.stats),
            ("POST", prefix + "/infer", h.infer),
        ]
    routes.append(("*", "/v2/{tail:.*}", h.no_route))  # last: what no route above matches
    return [route(method, path, _answering_errors(handler)) for method, path, handler in routes]


def _answering_errors(handler: Handler) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except OipError as exc:
            return _error(request, exc)
        except web.HTTPException as exc:  # aiohttp's own refusals (a body over its limit)
            refused = web.json_response({"error": exc.text or exc.reason}, status=exc.status)
            refused.force_close()
            return refused
        except Exception as exc:
            logger.exception("oip request failed", extra={"path": request.path})
            return _error(request, OipError.internal(f"{type(exc).__name__}: {exc}"))

    return answer


def _error(request: web.Request, exc: OipError) -> web.Response:
    response = web.json_response({"error": exc.message}, status=exc.http_status)
    if not request.content.at_eof():
        # Refused before its body was read (too large): the rest of it must not be taken
        # for the connection's next request.
        response.force_close()
    return response


def _json_response(document: object) -> web.Response:
    return web.Response(body=_json.dumps(document), content_type="application/json")


class _Handlers:
    def __init__(self, server: OipServer, pool: BufferPool) -> None:
        self._server = server
        self._pool = pool
        self._limit = server.limits.max_message_size

    # Health and metadata

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._server.ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json_response(_json.server_metadata(self._server.server_metadata()))

    async def model_metadata(self, request: web.Request) -> web.Response:
        meta = await self._server.model_metadata(request.match_info["model"])
        return _json_response(_json.model_metadata(meta))

    async def model_config(self, request: web.Request) -> web.Response:
        meta = await self._server.model_metadata(request.match_info["model"])
        return _json_response(_json.model_config(meta))

    async def model_ready(self, request: web.Request) -> web.Response:
        ready = await self._server.model_ready(request.match_info["model"])
        return web.Response(status=200 if ready else 503)

    async def stats(self, request: web.Request) -> web.Response:
        info = request.match_info
        stats = await self._server.model_stats(info.get("model", ""), info.get("version", ""))
        return _json_response(_json.model_stats(stats))

    async def no_route(self, request: web.Request) -> web.Response:
        model = _MODEL_PATH.match(request.path)
        if model is not None:  # a model name with a '/' in it: no service has one
            raise unknown_model(model["model"])
        raise OipError.not_found(f"no such endpoint: {request.method} {request.path}")

    # Inference

    async def infer(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        body = await self._body(request)
        header_length = _header_length(request, body.nbytes)
        infer_request = _json.parse_infer_request(
            info["model"],
            info.get("version", ""),
            body[:header_length],
            body[header_length:] if header_length < body.nbytes else None,
        )
        del body  # the inputs hold what they need of it
        response = await self._server.infer(
            infer_request, traceparent=request.headers.get("traceparent")
        )
        del infer_request
        header, parts = _json.infer_response(response)
        del response
        return await _send(request, header, parts)

    async def _body(self, request: web.Request) -> memoryview:
        length = request.content_length
        if length is not None and length > self._limit:
            raise _too_large(length, self._limit)
        if length is None:  # chunked: gathered up to the limit
            chunks, total = [], 0
            async for chunk in request.content.iter_any():
                total += len(chunk)
                if total > self._limit:
                    raise _too_large(total, self._limit)
                chunks.append(chunk)
            return await self._decoded(request, memoryview(b"".join(chunks)))
        if length < _POOLED_FROM:
            return await self._decoded(request, memoryview(await request.read()))
        buffer = self._pool.acquire(length)
        target = buffer.writable
        at = 0
        async for chunk in request.content.iter_any():
            end = at + len(chunk)
            if end > length:
                raise OipError.invalid(f"the request body is longer than its {length} bytes")
            target[at:end] = chunk
            at = end
        if at != length:
            raise OipError.invalid(f"the request body ended after {at} of its {length} bytes")
        del target
        return await self._decoded(request, buffer.memory()[:length])

    async def _decoded(self, request: web.Request, body: memoryview) -> memoryview:
        encoding = request.headers.get("Content-Encoding", "identity").lower()
        if encoding == "identity":
            return body
        if encoding not in ("gzip", "deflate"):
            raise OipError.invalid(
                f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none"
            )
        return memoryview(await asyncio.to_thread(_inflate, body, self._limit))

    # System shared memory

    async def shm_status(self, request: web.Request) -> web.Response:
        regions = self._server.regions.status(request.match_info.get("name", ""))
        return _json_response(_json.shm_status(regions))

    async def shm_register(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        doc = _json.parse_json(await request.read(), "register request")
        if not isinstance(doc, dict) or not isinstance(doc.get("key"), str):
            raise OipError.invalid(
                f"registering region '{name}' takes a JSON object with 'key', 'offset' and "
                "'byte_size'"
            )
        await self._server.regions.register(
            name, doc["key"], doc.get("offset", 0), doc.get("byte_size", 0)
        )
        return web.Response(status=200)

    async def shm_unregister(self, request: web.Request) -> web.Response:
        self._server.regions.unregister(request.match_info.get("name", ""))
        return web.Response(status=200)

    # CUDA shared memory: this server has no GPUs; it registers nothing and says so.

    async def cuda_status(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name")
        if name:
            raise OipError.not_found(f"Unable to find cuda shared memory region: '{name}'")
        return _json_response([])

    async def cuda_register(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raise OipError.invalid(
            f"failed to register CUDA shared memory region: '{name}', GPUs not supported "
            "(this sidecar serves system shared memory only)"
        )

    async def cuda_unregister(self, request: web.Request) -> web.Response:
        return web.Response(status=200)  # nothing is ever registered


def _header_length(request: web.Request, body_size: int) -> int:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return body_size
    if not value.isdigit() or not 0 < int(value) <= body_size:
        raise OipError.invalid(
            f"{HEADER_LENGTH} is {value!r}: it must be the length of the JSON object at the "
            f"start of the {body_size}-byte body"
        )
    return int(value)


def _too_large(size: int, limit: int) -> OipError:
    return OipError(
        ErrorCode.RESOURCE_EXHAUSTED,
        f"request body is {size} bytes, over max_message_size={limit} "
        "(ARROWMESH_MAX_MESSAGE_SIZE); send smaller tensors, pass them in shared memory, "
        "or raise it",
    )


def _inflate(data: memoryview, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib framing, detected
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise OipError.invalid(f"the request body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise _too_large(len(out), limit)
    return out


async def _send(request: web.Request, header: bytes, parts: list[memoryview]) -> web.StreamResponse:
    if not parts:
        return web.Response(body=header, content_type="application/json")
    headers = {HEADER_LENGTH: str(len(header))}
    total = len(header) + sum(p.nbytes for p in parts)
    if total <= _JOIN_UP_TO:
        body = b"".join([header, *parts])
        return web.Response(body=body, content_type="application/octet-stream", headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/octet-stream"
    response.content_length = total
    await response.prepare(request)
    await response.write(header)
    for part in parts:
        await response.write(part)
    await response.write_eof()
    return response
