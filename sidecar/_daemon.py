"""`sidecar run`: the daemon beside each container (DESIGN.md "sidecar/").

It listens on the mesh port (peers and local apps), the admin port (health, readiness,
metrics), and relays each request: to the app it fronts when the request names its own
service, else cluster → endpoint → link through the router. Relaying never decodes
tensors (see _relay). It registers the app's endpoint, keeps the registry's health in step
with an app probe, and on SIGTERM drains: not ready, deregistered, no new requests,
in-flight ones finished (up to `drain_timeout`), links closed, leases released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

import transport
from discovery import (
    Endpoint,
    Registry,
    open_registry,
)
from transport import BufferPool, ErrorCode, Header, LinkServer, Message, Placer, StreamLink

from ._admin import admin_app, start_admin, stop_admin
from ._admission import Admission
from ._advertise import advertise_address
from ._config import RunConfig
from ._errors import ConfigError, Unavailable
from ._grpc_listener import GrpcSide
from ._http_listeners import HttpSide
from ._links import LinkPool, ShmSlot
from ._metrics import APP_HEALTHY, IN_FLIGHT, LATENCY, RELAYED_BYTES, REQUESTS, SHM_LEASES, SHM_USED
from ._relay import keepalive, relay_parts
from ._router import Router, policy_from_settings
from ._serve import write_atomically
from ._settings import Settings, format_host_port, parse_host_port
from ._trace import ensure_traceparent

logger = logging.getLogger(__name__)

APP_PROBE_TIMEOUT: Final = 2.0
_BY_REFERENCE: Final = RELAYED_BYTES.labels("reference")
_COPIED: Final = RELAYED_BYTES.labels("copied")
_OVER_NETWORK: Final = RELAYED_BYTES.labels("network")


class Daemon:
    """One sidecar. `start()`, then `run()` until a signal, or `aclose()`."""

    def __init__(self, config: RunConfig, env: Mapping[str, str]) -> None:
        self.run_config = config
        self.settings: Settings = config.settings
        self._env = env
        self.limits = self.settings.limits()
        self.pool = BufferPool()
        self.shm = ShmSlot(self.settings.shm_dir)
        self.registry: Registry = open_registry(self.settings.discovery, env)
        self.router = Router(
            self.registry,
            limits=self.limits,
            pool=self.pool,
            shm=self.shm,
            policy=policy_from_settings(self.settings),
            zone=self.settings.zone,
        )
        self._admission = Admission(self.settings.queue_limit, self.settings.capacity)
        self.server = LinkServer(self._handle, self.limits, self.pool)
        self._app = _AppLinks(self.settings, self.limits, self.pool, self.shm)
        self._http = HttpSide(self.settings, self.router)
        self._grpc = GrpcSide()
        self.endpoint: Endpoint | None = None
        self.addresses: dict[str, str] = {}
        self._app_healthy = False
        self._draining = False
        self._registered = False
        self._tasks: list[asyncio.Task[None]] = []
        self._admin: object | None = None
        self._metrics: dict[str, _ServiceMetrics] = {}

    # AdminState

    @property
    def live(self) -> bool:
        """The daemon runs (it never decides it must be restarted)."""
        return True

    @property
    def ready(self) -> bool:
        """Listening, registered (if fronting an app) and the app answers, not draining."""
        return not self.ready_reason

    @property
    def ready_reason(self) -> str:
        """Why the sidecar is not ready, or ''."""
        if self._draining:
            return "draining"
        if self.settings.app is not None and not self._app_healthy:
            return f"app at {self.settings.app} does not answer its health probe"
        if self.settings.app is not None and not self._registered:
            return "not registered yet"
        return ""

    def endpoints(self) -> dict[str, object]:
        """Per watched service: its endpoints and whether the registry is reachable."""
        return {
            service: {
                "stale": cluster.stale,
                "endpoints": [
                    {"id": e.id, "address": e.authority, "protocol": e.protocol, "zone": e.zone,
                     "shm_domain": e.shm_domain, "weight": e.weight, "capacity": e.capacity}
                    for e in cluster.endpoints
                ],
            }
            for service, cluster in self.router.clusters.items()
        }  # fmt: skip

    def config(self) -> dict[str, object]:
        """The settings, secrets masked, with where each came from."""
        return self.run_config.redacted()

    # Lifecycle

    async def start(self) -> None:
        """Join shared memory, open the registry, bind every listener, register, write the
        ready file. Raises OSError / transport.LinkClosed when a listener cannot bind."""
        s = self.settings
        domain = await self.shm.get()
        self.server.shm = domain
        await self.registry.__aenter__()
        await self._http.setup()
        host, port = parse_host_port(s.mesh_addr)
        try:
            await self.server.listen_tcp(host, port, other=self._http.peer.server)
        except (OSError, transport.LinkClosed) as exc:
            raise ConfigError(
                f"mesh listener (--mesh-addr) cannot bind {s.mesh_addr}: {exc}"
            ) from None
        self.addresses["mesh"] = self.server.addresses[0]
        self.addresses["http"] = await _bind_site(self._http.local, s.http_addr, "--http-addr")
        self.addresses["grpc"] = await self._grpc.start(s.grpc_addr)
        admin_host, admin_port = parse_host_port(s.admin_addr)
        self._admin, self.addresses["admin"] = await start_admin(
            admin_app(self), admin_host, admin_port
        )
        loop = asyncio.get_running_loop()
        if s.app is not None:
            self.endpoint = self._own_endpoint(domain.token if domain is not None else "")
            await self.registry.register(self.endpoint)
            self._registered = True
            self._tasks.append(loop.create_task(self._watch_app(), name="app-health"))
        else:
            await self._grpc.set_ready(True)
        self._tasks.append(loop.create_task(self._export_shm(), name="shm-metrics"))
        if s.ready_file is not None:
            await self._write_ready_file(domain.token if domain is not None else "")
        logger.info("sidecar ready", extra={"service": s.service, **self.addresses})

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and close."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            stop.clear()
            drained = loop.create_task(self.drain())
            second = loop.create_task(stop.wait())  # a second signal ends the drain at once
            await asyncio.wait({drained, second}, return_when=asyncio.FIRST_COMPLETED)
            for task in (drained, second):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.aclose()

    async def drain(self) -> None:
        """Not ready, deregistered, no new requests; wait for in-flight ones (bounded)."""
        self._draining = True
        await self._grpc.set_ready(False)
        logger.info("draining", extra={"service": self.settings.service})
        if self.endpoint is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self.registry.deregister(self.endpoint.id)
            self._registered = False
        finished = await self.server.drain(self.settings.drain_timeout)
        if not finished:
            logger.warning("drain timed out; cancelling what is left")

    async def aclose(self) -> None:
        """Close listeners, links, registry and shared memory; every lease is released."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.aclose()
        await self._http.aclose()
        await self._grpc.aclose()
        if self._admin is not None:
            await stop_admin(self._admin)  # type: ignore[arg-type]  # set by start
            self._admin = None
        await self.router.aclose()
        await self._app.aclose()
        with contextlib.suppress(Exception):
            await self.registry.aclose()
        await self.shm.aclose()

    # Requests

    async def _handle(
        self, message: Message, deadline: float | None, placer: Placer | None
    ) -> tuple[Header, list[object]]:
        service = message.header.service
        # W3C trace context end to end: kept if the caller sent one, created here if not.
        message.header.traceparent = ensure_traceparent(message.header.traceparent)
        started = time.perf_counter()
        endpoint_id = "app"
        metrics = self._metrics.get(service) or self._service_metrics(service)
        metrics.in_flight.inc()
        outcome = "ok"
        try:
            if service == self.settings.service and self.settings.app is not None:
                if self.settings.app_protocol != "mesh":
                    raise transport.RemoteError(
                        ErrorCode.UNAVAILABLE,
                        f"service {service!r} is an {self.settings.app_protocol} app: call it "
                        "through the local HTTP or gRPC listener",
                    )
                entered = self._admission.enter()  # "overloaded" over --queue-limit
                try:
                    link = await self._app.get()
                    reply = await self._relay(message, link, deadline)
                finally:
                    self._admission.leave(entered)
            else:
                reply, endpoint_id = await self._route(message, deadline)
            header, parts = relay_parts(reply, placer, self.limits)
            self._count(reply, placer)
            return header, [*parts, *keepalive(message)]
        except Exception as exc:
            outcome = transport.error_code_of(exc).value
            if isinstance(exc, Unavailable):
                raise transport.RemoteError(ErrorCode.UNAVAILABLE, str(exc)) from exc
            if isinstance(exc, transport.LinkClosed):
                raise transport.RemoteError(
                    ErrorCode.UNAVAILABLE, f"upstream of {service!r} went away: {exc}"
                ) from exc
            raise
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - started)
            key = (endpoint_id, outcome)
            counter = metrics.requests.get(key)
            if counter is None:
                counter = metrics.requests[key] = REQUESTS.labels(service, *key)
            counter.inc()

    def _service_metrics(self, service: str) -> _ServiceMetrics:
        """The labelled metric children of `service`, made once (labels() costs per call)."""
        metrics = _ServiceMetrics(IN_FLIGHT.labels(service), LATENCY.labels(service), {})
        self._metrics[service] = metrics
        return metrics

    async def _route(self, message: Message, deadline: float | None) -> tuple[Message, str]:
        chosen = ""

        async def send(link: StreamLink, up_placer: Placer | None) -> Message:
            nonlocal chosen
            chosen = link.peer_name
            return await self._relay(message, link, deadline)

        affinity = message.header.params.get("affinity")
        key = affinity.encode() if isinstance(affinity, str) else None
        reply = await self.router.send(message.header.service, send, key=key, deadline=deadline)
        return reply, chosen

    async def _relay(self, message: Message, link: StreamLink, deadline: float | None) -> Message:
        header, parts = relay_parts(message, link.placer, self.limits)
        self._count(message, link.placer)
        return await link.request(header, parts, deadline=deadline)

    def _count(self, message: Message, placer: Placer | None) -> None:
        body = message.header.body_len
        if message.shared or message.shared_body is not None:
            shared = sum(ref[5] for ref in transport.header_refs(message.header))
            mode = "reference" if isinstance(placer, transport.ShmPlacer) else "copied"
            (_BY_REFERENCE if mode == "reference" else _COPIED).inc(shared)
        if body:
            _OVER_NETWORK.inc(body)

    # Registration and app health

    def _own_endpoint(self, shm_token: str) -> Endpoint:
        s = self.settings
        _, port = parse_host_port(self.addresses["mesh"])
        address = s.advertise_addr or self._default_advertise()
        assert s.service is not None  # load_run_config requires it
        return Endpoint(
            service=s.service,
            id=s.id or f"{s.service}-{socket.gethostname()[:20]}-{port}",
            address=address,
            port=port,
            protocol="mesh",
            shm_domain=shm_token,
            zone=s.zone,
            weight=s.weight,
            capacity=s.capacity,
        )

    def _default_advertise(self) -> str:
        host, _ = parse_host_port(self.addresses["mesh"])
        return advertise_address(host, self.settings.discovery, self._env)

    async def _watch_app(self) -> None:
        """Probe the app; pass or fail the registry's health check when its answer changes."""
        assert self.endpoint is not None
        last: bool | None = None
        while True:
            healthy = await self._app.probe()
            self._app_healthy = healthy
            await self._grpc.set_ready(self.ready)
            APP_HEALTHY.set(1 if healthy else 0)
            if healthy != last and not self._draining:
                logger.info(
                    "app " + ("healthy" if healthy else "unhealthy"),
                    extra={"app": self.settings.app},
                )
                try:
                    await self.registry.set_health(self.endpoint.id, healthy)
                    last = healthy
                except Exception as exc:  # the registry's own back-off: try again next round
                    logger.warning("cannot report app health", extra={"error": str(exc)})
            await asyncio.sleep(self.settings.app_health_interval)

    async def _export_shm(self) -> None:
        while True:
            domain = self.shm.domain
            if domain is not None:
                stats = domain.stats()
                SHM_LEASES.set(stats.leases)
                SHM_USED.set(stats.used_bytes)
            await asyncio.sleep(1.0)

    async def _write_ready_file(self, shm_token: str) -> None:
        s = self.settings
        assert s.ready_file is not None
        info = {
            "service": s.service,
            "id": None if self.endpoint is None else self.endpoint.id,
            "pid": os.getpid(),
            "mesh": self.addresses.get("mesh"),
            "http": self.addresses.get("http"),
            "grpc": self.addresses.get("grpc"),
            "admin": self.addresses.get("admin"),
            "shm_domain": shm_token,
        }
        await asyncio.to_thread(write_atomically, s.ready_file, json.dumps(info))


@dataclass(slots=True)
class _ServiceMetrics:
    in_flight: Gauge
    latency: Histogram
    requests: dict[tuple[str, str], Counter]


class _AppLinks:
    """The app this sidecar fronts: links to it (mesh) and its health probe."""

    def __init__(
        self, settings: Settings, limits: transport.Limits, pool: BufferPool, shm: ShmSlot
    ) -> None:
        self._settings = settings
        self._links = (
            None
            if settings.app is None or settings.app_protocol != "mesh"
            else LinkPool(app_address(settings.app), 4, limits, pool, shm)
        )
        self._session: aiohttp.ClientSession | None = None

    async def get(self) -> StreamLink:
        """A link to a mesh app. Raises Unavailable if it cannot be reached."""
        assert self._links is not None
        try:
            return await self._links.get()
        except transport.LinkClosed as exc:
            raise Unavailable(f"the app at {self._settings.app} cannot be reached: {exc}") from exc

    async def probe(self) -> bool:
        """True if the app answers: a mesh PING, or a 2xx on the HTTP health path."""
        try:
            async with asyncio.timeout(APP_PROBE_TIMEOUT):
                if self._links is not None:
                    link = await self._links.get()
                    await link.ping(APP_PROBE_TIMEOUT)
                    return True
                return await self._probe_http()
        except (transport.TransportError, aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def _probe_http(self) -> bool:
        app = self._settings.app
        assert app is not None
        if self._settings.app_protocol == "oip-grpc":
            host, port = parse_host_port(app.split("://", 1)[1].rstrip("/"))
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return True
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = app.rstrip("/") + self._settings.app_health_path
        async with self._session.get(url) as response:
            return 200 <= response.status < 300

    async def aclose(self) -> None:
        if self._links is not None:
            await self._links.aclose()
        if self._session is not None:
            await self._session.close()


async def _bind_site(runner: web.AppRunner, address: str, flag: str) -> str:
    """Listen with `runner` on HOST:PORT; the bound "host:port". ConfigError naming `flag`."""
    host, port = parse_host_port(address)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise ConfigError(f"listener ({flag}) cannot bind {address}: {exc}") from None
    bound = runner.addresses[-1]
    return format_host_port(str(bound[0]), int(bound[1]))


def app_address(url: str) -> str:
    """A mesh app's URL (tcp://host:port, unix:///path) as a link address."""
    if url.startswith("unix:"):
        return "unix:/" + url[len("unix:") :].lstrip("/")
    return url.split("://", 1)[1].rstrip("/")


async def run_daemon(config: RunConfig, env: Mapping[str, str]) -> int:
    """Start, serve until a signal, drain and close; the exit code (0 after a clean drain)."""
    daemon = Daemon(config, env)
    try:
        await daemon.start()
    except BaseException:
        await daemon.aclose()
        raise
    await daemon.run()
    return 0
