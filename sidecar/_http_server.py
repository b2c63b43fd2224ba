"""What every aiohttp listener of the daemon shares: how it meets a peer's bad HTTP.

aiohttp's defaults suit a web app behind a proxy, not a port any peer can reach:

- its server logger writes an ERROR with a traceback for every request it could not parse
  (a 400) and every caller that hung up mid-answer, so a peer decides how much the sidecar
  logs. Here those are DEBUG records and a counter (`arrowmesh_http_refused_total`); what
  our own handlers raise stays an ERROR.
- its default `Expect` handler quotes the header in its 417 and fails with a 500 when the
  value is not UTF-8. Every route here takes `expect_continue` instead, and `fallback_route`
  (added last) gives the same to paths no route matches, answering the 404 or 405 the
  router would have.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Final

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestPayloadError

from ._metrics import HTTP_REFUSED

_LOGGER: Final = logging.getLogger("sidecar.http")


class PeerErrorLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger for one listener: errors a peer caused are DEBUG and counted."""

    def __init__(self, listener: str) -> None:
        super().__init__(_LOGGER, {"listener": listener})
        self.listener = listener

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}  # type: ignore[dict-item]
        return msg, kwargs

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if not _peer_caused(error):
            super().exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        HTTP_REFUSED.labels(self.listener, type(error).__name__).inc()
        self.debug(msg, *args, exc_info=exc_info, **kwargs)


def _peer_caused(error: BaseException | None) -> bool:
    # A request aiohttp could not parse (or inflate: raised as a RequestPayloadError from the
    # parser's error) is the peer's; so is a peer gone.
    peer_errors = http_exceptions.HttpProcessingError | RequestPayloadError | ConnectionError
    return isinstance(error, peer_errors)


def server_options(listener: str) -> dict[str, Any]:
    """`web.AppRunner` keyword arguments every listener of the daemon takes."""
    return {"logger": PeerErrorLog(listener), "access_log": None}


async def expect_continue(request: web.Request) -> None:
    """Answer `Expect: 100-continue`; anything else is a 417 that names it safely."""
    expect = request.headers.get("Expect", "")
    if request.version < (1, 1):
        return
    if expect.lower() != "100-continue":
        shown = expect.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {shown[:100]}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the body's answer has not started


def route(method: str, path: str, handler: Any) -> web.RouteDef:
    """`web.route` with `expect_continue`."""
    return web.route(method, path, handler, expect_handler=expect_continue)


def fallback_route() -> web.RouteDef:
    """A last route matching every path: the router's own 404 or 405, with our `Expect`."""
    return route("*", "/{_fallback_path:.*}", _fallback)


async def _fallback(request: web.Request) -> web.StreamResponse:
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if any(r.handler is _fallback for r in resource):
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()
