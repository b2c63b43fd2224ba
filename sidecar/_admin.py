"""The admin listener: /healthz, /readyz, /metrics, /endpoints, /config (GET, and HEAD).

Handlers only read `AdminState`, which the daemon owns; every error is a JSON body
`{"error": "..."}` so probes and scripts parse one shape.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from typing import Final, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ._errors import ConfigError
from ._http_server import fallback_route, route, server_options
from ._settings import format_host_port

logger = logging.getLogger(__name__)

ROUTES: Final = ("/healthz", "/readyz", "/metrics", "/endpoints", "/config")
_SHUTDOWN_TIMEOUT: Final = 2.0  # seconds: admin requests are tiny, never worth a long wait


class AdminState(Protocol):
    """What the admin listener shows; the daemon implements it (attributes or properties)."""

    @property
    def live(self) -> bool:
        """False once the process cannot recover (it should be restarted)."""

    @property
    def ready(self) -> bool:
        """True while this sidecar takes traffic."""

    @property
    def ready_reason(self) -> str:
        """Why it is not ready (shown by /readyz while `ready` is False)."""

    def endpoints(self) -> Mapping[str, object]:
        """JSON-ready: per service, its endpoints and their state."""

    def config(self) -> Mapping[str, object]:
        """JSON-ready settings with secrets already masked."""


_OPEN: Final = frozenset({"/healthz", "/readyz"})  # probes (Docker, kubelet) carry no token
_STATE: Final = web.AppKey[AdminState]("admin_state")
_REGISTRY: Final = web.AppKey("metrics_registry", CollectorRegistry)


def admin_app(
    state: AdminState, registry: CollectorRegistry = REGISTRY, *, token: str | None = None
) -> web.Application:
    """The admin routes over `state`; /metrics exposes `registry` (default: the global one).

    With `token`, every route but /healthz and /readyz asks for `Authorization: Bearer TOKEN`.
    """
    middlewares: list[Middleware] = [_json_errors]
    if token is not None:
        middlewares.append(_bearer(token))
    app = web.Application(middlewares=middlewares)
    app[_STATE] = state
    app[_REGISTRY] = registry
    app.add_routes([route("GET", path, handler) for path, handler in _HANDLERS.items()])
    app.add_routes([fallback_route()])
    return app


async def start_admin(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Listen on host:port (0: any free port); the runner and the bound "host:port".

    Raises ConfigError naming --admin-addr when the address cannot be bound.
    """
    runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_TIMEOUT, **server_options("admin"))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        where = format_host_port(host, port)
        raise ConfigError(f"admin listener (--admin-addr) cannot bind {where}: {exc}") from None
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, format_host_port(str(bound_host), int(bound_port))


async def stop_admin(runner: web.AppRunner) -> None:
    """Close the admin listener and its connections (bounded by a short shutdown timeout)."""
    await runner.cleanup()


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _error_text(request, exc), exc.headers.get("Allow"))
    except Exception:
        logger.exception("admin request failed", extra={"path": request.path})
        return _error(500, "internal error; see the sidecar's log")


def _error_text(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no admin route {request.path}; routes: {', '.join(ROUTES)}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"{request.method} not allowed on {request.path}; use GET"
    return exc.text or exc.reason


def _error(status: int, message: str, allow: str | None = None) -> web.Response:
    headers = {"Allow": allow} if allow else None
    return web.json_response({"error": message}, status=status, headers=headers)


async def _healthz(request: web.Request) -> web.Response:
    if request.app[_STATE].live:
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "not live"}, status=503)


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    if state.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "reason": state.ready_reason}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # The process collector reads /proc: blocking, so off the event loop.
    body = await asyncio.to_thread(encoder, request.app[_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _endpoints(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[_STATE].endpoints()))


async def _config(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[_STATE].config()))


_HANDLERS: Final = {
    "/healthz": _healthz,
    "/readyz": _readyz,
    "/metrics": _metrics,
    "/endpoints": _endpoints,
    "/config": _config,
}
assert tuple(_HANDLERS) == ROUTES


def _bearer(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in _OPEN:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise web.HTTPUnauthorized(
                reason="this admin listener asks for a bearer token (Authorization: Bearer ...)",
                headers={"WWW-Authenticate": 'Bearer realm="arrowmesh-admin"'},
            )
        return await handler(request)

    return check
