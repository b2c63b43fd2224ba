"""The daemon's HTTP side: the local listener (`/svc/` to any service) and the peers' one
(on the mesh port, `/svc/` to this sidecar's own app only, so a sidecar is never an open
proxy for the network). The OIP REST routes (`sidecar.oip`) are the local listener's too.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any, Final

import aiohttp
from aiohttp import web

from transport import BufferPool

from ._errors import ConfigError, InvalidInput, Unavailable
from ._front import Lane, front_factory, runner_options
from ._http_server import fallback_route, server_options
from ._metrics import LATENCY, REQUESTS
from ._passthrough import (
    PassthroughResult,
    Resolve,
    Upstream,
    listener_options,
    passthrough_routes,
)
from ._router import Router
from ._settings import Settings, format_host_port, parse_host_port

logger = logging.getLogger(__name__)

HTTP_APPS = ("http", "oip-http")
# Seconds an idle keep-alive connection of the local listener stays open (aiohttp's default).
KEEPALIVE: Final = 75.0


class HttpSide:
    """Both HTTP listeners' routes, sharing one client session to upstreams. With a `lane`,
    the local listener's connections have a front (sidecar._front) that serves the lane's
    requests itself."""

    def __init__(
        self,
        settings: Settings,
        router: Router,
        local_routes: Sequence[web.RouteDef] = (),
        lane: Lane | None = None,
        pool: BufferPool | None = None,
    ) -> None:
        self._settings = settings
        self._router = router
        self._lane = lane
        self._pool = pool
        self._front: asyncio.Server | None = None
        self._rng = random.Random()
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one caller's cookies to another
            connector=aiohttp.TCPConnector(limit=0),  # streams are long: no pool cap
            auto_decompress=False,
        )
        front = runner_options() if lane is not None else {}
        self.local = self._runner("http", self.resolve_local, local_routes, front)
        self.peer = self._runner("mesh", self.resolve_peer)

    async def setup(self) -> None:
        """Prepare both runners (binding is the daemon's)."""
        await self.local.setup()
        await self.peer.setup()

    async def listen_local(self, address: str) -> str:
        """Bind the local listener on HOST:PORT; the bound "host:port". Raises ConfigError
        naming --http-addr."""
        host, port = parse_host_port(address)
        try:
            if self._lane is None:
                site = web.TCPSite(self.local, host, port)
                await site.start()
                bound = self.local.addresses[-1]
            else:
                server = self.local.server
                assert server is not None  # set up
                factory = front_factory(server, self._lane, KEEPALIVE, self._pool)
                loop = asyncio.get_running_loop()
                self._front = await loop.create_server(factory, host, port)
                bound = self._front.sockets[0].getsockname()
        except OSError as exc:
            raise ConfigError(f"listener (--http-addr) cannot bind {address}: {exc}") from None
        return format_host_port(str(bound[0]), int(bound[1]))

    async def aclose(self) -> None:
        """Stop both listeners and close the session."""
        if self._front is not None:
            self._front.close()  # no new connections; aiohttp's cleanup closes the open ones
            self._front = None
        await self.local.cleanup()
        await self.peer.cleanup()
        await self.session.close()

    async def resolve_local(self, service: str) -> Upstream:
        """A caller on this host: our own app, or an endpoint's sidecar."""
        if service == self._settings.service:
            return self._own_app(service)
        cluster = await self._router.cluster(service)
        endpoints = cluster.endpoints
        if not endpoints:
            raise Unavailable(f"no endpoint of service {service!r}")
        endpoint = self._rng.choice(endpoints)
        return Upstream(f"http://{endpoint.authority}/svc/{service}", endpoint.id)

    async def resolve_peer(self, service: str) -> Upstream:
        """A peer sidecar: only our own app."""
        if service != self._settings.service:
            raise InvalidInput(
                f"this sidecar fronts {self._settings.service!r}, not {service!r}; "
                "send to the sidecar of that service"
            )
        return self._own_app(service)

    def _own_app(self, service: str) -> Upstream:
        s = self._settings
        if s.app is None or s.app_protocol not in HTTP_APPS:
            raise Unavailable(
                f"service {service!r} here is not an HTTP app (app protocol {s.app_protocol})"
            )
        return Upstream(s.app.rstrip("/"), "app")

    def _runner(
        self,
        listener: str,
        resolve: Resolve,
        routes: Sequence[web.RouteDef] = (),
        options: dict[str, Any] | None = None,
    ) -> web.AppRunner:
        app = web.Application()
        app.add_routes(passthrough_routes(resolve, self.session, on_done=_observe))
        app.add_routes(routes)
        app.add_routes([fallback_route()])
        kwargs = {**server_options(listener), **listener_options(), **(options or {})}
        return web.AppRunner(app, **kwargs)


def _observe(result: PassthroughResult) -> None:
    failed = result.error or not 200 <= result.status < 400
    outcome = (result.error or str(result.status)) if failed else "ok"
    REQUESTS.labels(result.service, result.endpoint_id, outcome).inc()
    LATENCY.labels(result.service).observe(result.seconds)
    if result.error:
        logger.debug("passthrough failed", extra={"service": result.service, "error": result.error})
