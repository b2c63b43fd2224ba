"""Plain HTTP passthrough: `{prefix}/{service}/{path}` relayed, as bytes, to the service.

The same handler runs on the sending sidecar (upstream: a peer sidecar's
`.../svc/{service}`) and on the receiving one (upstream: its local app).

Invariants:
- Bodies stream both ways a chunk at a time and are never held whole: the request body
  goes up as the caller sends it, the response comes back as the upstream produces it.
  Back-pressure is aiohttp's: each side pauses reading while the other is not draining.
- Bytes are not reinterpreted: the raw path and query pass unchanged, nothing is
  decompressed, `Content-Length` is kept when known (else the body goes chunked).
- The caller gets one answer. Before the response is prepared a failure becomes a JSON
  error (`{"error", "service", "endpoint"}`); after it, a failure can only break the
  caller's connection, so the caller sees a short body, never a clean end.
- A caller that goes away cancels the upstream exchange (its connection is closed).
  aiohttp 3 tells a handler only by cancelling it, and only on a listener built with
  `handler_cancellation=True` (see `listener_options`); a timer covers other listeners.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, TypedDict

import aiohttp
from aiohttp import web
from yarl import URL

from ._errors import STATUS, DeadlineExceeded, InvalidInput, MeshError, RemoteError, Unavailable
from ._http_hop import (
    ENDPOINT_HEADER,
    check_base_url,
    downstream_response_headers,
    header_bytes,
    upstream_request_headers,
    upstream_url,
)
from ._http_server import route

logger = logging.getLogger(__name__)

DEFAULT_MAX_HEADER_SIZE: Final = 64 * 1024
# Same rule as discovery's service names (discovery/_endpoint.py).
_SERVICE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# How often a request checks that its caller is still connected, for listeners that do not
# cancel handlers themselves: one timer per request per interval, no task.
_CALLER_CHECK_INTERVAL: Final = 0.5
_RETRY_AFTER_UNAVAILABLE: Final = "1"
# Status recorded when no response reached the caller (nginx's "client closed request").
_NO_RESPONSE: Final = 499
# Headers the client library would otherwise invent; the caller's own pass unchanged.
_SKIP_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")

PassthroughError = Literal[
    "",
    "bad_request",
    "headers_too_large",
    "unavailable",
    "deadline",
    "resolve_failed",
    "connect_failed",
    "connect_timeout",
    "upstream_failed",
    "upstream_aborted",
    "downstream_disconnected",
    "cancelled",
    "internal",
]


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a service's request goes: `base_url` (http[s], no query) plus the path after it.

    Raises ValueError for a base_url that is not an absolute http(s) URL without query.
    """

    base_url: str  # "http://10.99.0.5:7700/svc/embedder" or "http://127.0.0.1:8080"
    endpoint_id: str  # for metrics and logs

    def __post_init__(self) -> None:
        check_base_url(self.base_url)


Resolve = Callable[[str], Awaitable[Upstream]]


@dataclass(frozen=True, slots=True)
class PassthroughResult:
    """One finished passthrough request, for metrics.

    `status` is what the caller was sent (499 if nothing was); `bytes_in` and `bytes_out`
    count relayed body bytes; `error` is "" or one short `PassthroughError` token.
    """

    service: str
    endpoint_id: str
    method: str
    status: int
    bytes_in: int
    bytes_out: int
    seconds: float
    error: PassthroughError


class ListenerOptions(TypedDict):
    """Keyword arguments for `web.AppRunner` (or `web.Server`) of a passthrough listener."""

    auto_decompress: bool
    handler_cancellation: bool
    max_line_size: int
    max_field_size: int


def listener_options(max_header_size: int = DEFAULT_MAX_HEADER_SIZE) -> ListenerOptions:
    """What a listener serving `passthrough_routes` needs from aiohttp's server.

    Request bodies stay compressed (else a gzip body would be forwarded inflated under its
    original `Content-Encoding`), handlers are cancelled as soon as their caller goes away,
    and one header line may be as long as the whole header budget, so that headers over
    budget get the passthrough's 431 (a single line longer than the whole budget still
    gets the parser's 400).
    """
    return ListenerOptions(
        auto_decompress=False,
        handler_cancellation=True,
        max_line_size=max_header_size,
        max_field_size=max_header_size,
    )


def passthrough_routes(
    resolve: Resolve,
    session: aiohttp.ClientSession,
    *,
    prefix: str = "/svc",
    connect_timeout: float = 5.0,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    on_done: Callable[[PassthroughResult], None] | None = None,
) -> list[web.RouteDef]:
    """Routes for every method on `{prefix}/{service}` and `{prefix}/{service}/{path}`.

    `session` is shared by all requests and owned by the caller; it must keep no cookies
    (`cookie_jar=aiohttp.DummyCookieJar()`), else one caller's cookies would reach the next.
    Serve the routes on a listener built with `listener_options()`.
    Raises ValueError for a bad prefix, limit or session.
    """
    if prefix and (not prefix.startswith("/") or prefix.endswith("/") or "{" in prefix):
        raise ValueError(f"prefix {prefix!r} must be empty or start, and not end, with '/'")
    if connect_timeout <= 0:
        raise ValueError(f"connect_timeout={connect_timeout} must be positive")
    if max_header_size <= 0:
        raise ValueError(f"max_header_size={max_header_size} must be positive")
    if not isinstance(session.cookie_jar, aiohttp.DummyCookieJar):
        raise ValueError(
            "the passthrough session keeps cookies, which would leak between callers; "
            "create it with cookie_jar=aiohttp.DummyCookieJar()"
        )
    handler = _Passthrough(
        resolve,
        session,
        depth=prefix.count("/"),
        connect_timeout=connect_timeout,
        max_header_size=max_header_size,
        on_done=on_done,
    ).handle
    return [
        route("*", f"{prefix}/{{service}}", handler),
        route("*", f"{prefix}/{{service}}/{{path:.*}}", handler),
    ]


def _mesh_status(exc: MeshError) -> tuple[int, PassthroughError]:
    if isinstance(exc, InvalidInput):
        return 400, "bad_request"
    if isinstance(exc, Unavailable):
        return 503, "unavailable"
    if isinstance(exc, DeadlineExceeded):
        return 504, "deadline"
    if isinstance(exc, RemoteError):
        return STATUS[exc.code][0], "resolve_failed"
    return 500, "resolve_failed"


class _CallerGone(Exception):
    """The caller's connection closed before the exchange finished."""


class _RequestBody:
    """The caller's request body as an async iterator of chunks, counted as they pass."""

    __slots__ = ("_reader", "count", "failed")

    def __init__(self, reader: aiohttp.StreamReader) -> None:
        self._reader = reader
        self.count = 0
        self.failed = False

    def __aiter__(self) -> _RequestBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._reader.readany()
        except Exception:
            self.failed = True  # the caller's connection broke mid-body
            raise
        if not chunk:
            raise StopAsyncIteration
        self.count += len(chunk)
        return chunk


class _CallerWatch:
    """Cancel the current task once the request's connection has closed.

    Like `asyncio.timeout`: the cancellation it caused leaves the block as `_CallerGone`,
    any other cancellation stays a `CancelledError`.
    """

    __slots__ = ("_cancelling", "_handle", "_loop", "_request", "_task", "gone")

    def __init__(self, request: web.BaseRequest) -> None:
        self._request = request
        self.gone = False

    def __enter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(_CALLER_CHECK_INTERVAL, self._check)

    def _check(self) -> None:
        if _caller_gone(self._request):
            self.gone = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_later(_CALLER_CHECK_INTERVAL, self._check)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._handle.cancel()
        if (
            self.gone
            and exc_type is asyncio.CancelledError
            and self._task.uncancel() <= self._cancelling
        ):
            raise _CallerGone from exc


def _caller_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _break_downstream(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """End a prepared response so the caller can tell it is incomplete.

    A framed body (Content-Length, or chunked on HTTP/1.1) is visibly short when the
    connection closes early, and closing keeps what was sent. An unframed one (HTTP/1.0)
    ends where the connection ends, so it must end in a reset, not a FIN: lingering 0 s
    makes close send RST.
    """
    transport = request.transport
    if transport is None:
        return
    if response.content_length is not None or request.version >= aiohttp.HttpVersion11:
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Progress:
    """What one request has done so far; becomes its `PassthroughResult`."""

    __slots__ = ("body", "bytes_out", "endpoint_id", "error", "response", "status")

    def __init__(self) -> None:
        self.endpoint_id = ""
        self.status = 0
        self.bytes_out = 0
        self.error: PassthroughError = ""
        self.body: _RequestBody | None = None
        self.response: web.StreamResponse | None = None


def _lost_caller(request: web.BaseRequest, progress: _Progress) -> bool:
    """Whether an upstream failure is the echo of the caller's connection breaking."""
    return _caller_gone(request) or (progress.body is not None and progress.body.failed)


class _Passthrough:
    def __init__(
        self,
        resolve: Resolve,
        session: aiohttp.ClientSession,
        *,
        depth: int,
        connect_timeout: float,
        max_header_size: int,
        on_done: Callable[[PassthroughResult], None] | None,
    ) -> None:
        self._resolve = resolve
        self._session = session
        self._depth = depth
        self._connect_timeout = connect_timeout
        self._max_header_size = max_header_size
        self._on_done = on_done
        # No total or read timeout: a stream may legitimately run, or pause, for long.
        # `connect` also bounds the wait for a free connection of the session's pool.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_connect=connect_timeout
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        service = request.match_info["service"]
        progress = _Progress()
        try:
            return await self._handle(request, service, progress)
        except asyncio.CancelledError:
            gone = _caller_gone(request)
            progress.error = progress.error or ("downstream_disconnected" if gone else "cancelled")
            raise
        except Exception:
            progress.error = "internal"
            progress.status = progress.status or 500
            raise
        finally:
            if self._on_done is not None:
                self._report(request, service, progress, loop.time() - started)

    def _report(
        self, request: web.Request, service: str, progress: _Progress, seconds: float
    ) -> None:
        assert self._on_done is not None
        result = PassthroughResult(
            service=service,
            endpoint_id=progress.endpoint_id,
            method=request.method,
            status=progress.status or _NO_RESPONSE,
            bytes_in=progress.body.count if progress.body is not None else 0,
            bytes_out=progress.bytes_out,
            seconds=seconds,
            error=progress.error,
        )
        try:
            self._on_done(result)
        except Exception:
            logger.exception("passthrough on_done failed", extra={"service": service})

    async def _handle(
        self, request: web.Request, service: str, progress: _Progress
    ) -> web.StreamResponse:
        if not _SERVICE_NAME.match(service):
            message = (
                f"service name {service!r} is not valid: use 1-63 characters of "
                "[A-Za-z0-9_.-] starting with a letter or digit"
            )
            return _error(progress, 400, "bad_request", service, message)
        size = header_bytes(request.raw_headers)
        if size > self._max_header_size:
            message = (
                f"request headers are {size} bytes, over the passthrough's "
                f"max_header_size={self._max_header_size}; send fewer or smaller headers"
            )
            return _error(progress, 431, "headers_too_large", service, message)
        try:
            with _CallerWatch(request):
                return await self._forward(request, service, progress)
        except _CallerGone:
            # An earlier failure (the upstream's) is what ended the exchange.
            progress.error = progress.error or "downstream_disconnected"
            # Whatever is returned meets a closed transport; aiohttp drops it quietly.
            if progress.response is not None:
                return progress.response
            return web.Response(status=_NO_RESPONSE)

    async def _forward(
        self, request: web.Request, service: str, progress: _Progress
    ) -> web.StreamResponse:
        try:
            upstream = await self._resolve(service)
        except MeshError as exc:
            status, token = _mesh_status(exc)
            retry = _RETRY_AFTER_UNAVAILABLE if status == 503 else None
            return _error(progress, status, token, service, str(exc), retry_after=retry)
        progress.endpoint_id = upstream.endpoint_id
        if request.body_exists:
            progress.body = _RequestBody(request.content)
        return await self._exchange(request, service, upstream, progress)

    async def _exchange(
        self, request: web.Request, service: str, upstream: Upstream, progress: _Progress
    ) -> web.StreamResponse:
        url = upstream_url(upstream.base_url, request.rel_url, self._depth)
        headers = upstream_request_headers(
            request.headers,
            peer=request.remote,
            scheme=request.scheme,
            host=request.headers.get("Host"),
        )
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=progress.body,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                allow_redirects=False,
                raise_for_status=False,
                auto_decompress=False,
                timeout=self._timeout,
                max_line_size=self._max_header_size,
                max_field_size=self._max_header_size,
            ) as answer:
                try:
                    return await self._relay(request, answer, progress)
                except BaseException:
                    answer.close()  # a half-read connection must not go back to the pool
                    raise
        except (aiohttp.ClientError, OSError) as exc:
            if progress.response is not None:  # raised closing an exchange that has ended
                return progress.response
            if _lost_caller(request, progress):
                raise _CallerGone from exc
            return self._upstream_failed(progress, service, url, exc)

    def _upstream_failed(
        self, progress: _Progress, service: str, url: URL, exc: BaseException
    ) -> web.Response:
        logger.debug(
            "passthrough upstream failed",
            extra={"service": service, "endpoint": progress.endpoint_id, "error": repr(exc)},
        )
        if isinstance(exc, asyncio.TimeoutError):
            message = (
                f"no connection to {url.origin()} within connect_timeout="
                f"{self._connect_timeout} s; the endpoint may be overloaded or unreachable"
            )
            return _error(progress, 504, "connect_timeout", service, message)
        if isinstance(exc, aiohttp.ClientConnectorError):
            message = f"cannot connect to {url.origin()}: {exc.strerror or exc}"
            return _error(progress, 502, "connect_failed", service, message)
        message = f"{url.origin()} failed before answering: {exc!r}"
        return _error(progress, 502, "upstream_failed", service, message)

    async def _relay(
        self, request: web.Request, answer: aiohttp.ClientResponse, progress: _Progress
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=answer.status,
            reason=answer.reason,
            headers=downstream_response_headers(answer.headers, progress.endpoint_id),
        )
        progress.status = answer.status
        try:
            await response.prepare(request)
        except ConnectionError as exc:
            raise _CallerGone from exc
        progress.response = response
        while True:
            try:
                chunk = await answer.content.readany()
            except (aiohttp.ClientError, OSError) as exc:
                if _lost_caller(request, progress):
                    raise _CallerGone from exc
                logger.debug(
                    "passthrough upstream broke mid-body",
                    extra={"endpoint": progress.endpoint_id, "error": repr(exc)},
                )
                answer.close()
                progress.error = "upstream_aborted"
                _break_downstream(request, response)
                return response
            if not chunk:
                break
            try:
                await response.write(chunk)
            except ConnectionError as exc:
                raise _CallerGone from exc
            progress.bytes_out += len(chunk)
        try:
            await response.write_eof()
        except ConnectionError as exc:
            raise _CallerGone from exc
        return response


def _error(
    progress: _Progress,
    status: int,
    error: PassthroughError,
    service: str,
    message: str,
    *,
    retry_after: str | None = None,
) -> web.Response:
    progress.status = status
    progress.error = error
    headers: dict[str, str] = {}
    if progress.endpoint_id:
        headers[ENDPOINT_HEADER] = progress.endpoint_id
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = {"error": message, "service": service, "endpoint": progress.endpoint_id}
    return web.json_response(body, status=status, headers=headers)
