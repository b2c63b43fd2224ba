"""`sidecar run`: the daemon beside each container (DESIGN.md "sidecar/").

It listens on the mesh port (peers and local apps), the admin port (health, readiness,
metrics), and relays each request: to the app it fronts when the request names its own
service, else cluster → endpoint → link through the router. Relaying never decodes
tensors (see _relay); only an app that speaks OIP instead of mesh (`--app-protocol
oip-http|oip-grpc`) has its requests decoded and re-issued (see oip_upstream). It
registers the app's endpoint, keeps the registry's health in step with an app probe, and
on SIGTERM drains: not ready, deregistered, no new requests, in-flight ones finished (up
to `drain_timeout`), links closed, leases released.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import aiohttp
from prometheus_client import Counter, Gauge, Histogram

import transport
from discovery import (
    Endpoint,
    Registry,
    open_registry,
)
from transport import (
    BufferPool,
    ErrorCode,
    Header,
    LinkServer,
    Message,
    Placer,
    StreamLink,
    Tls,
    TlsFiles,
    identity_uri,
    service_of,
)

from ._admin import admin_app, start_admin, stop_admin
from ._admission import Admission, queue_limit_of, took
from ._advertise import advertise_address
from ._config import RunConfig
from ._errors import ConfigError, Unavailable
from ._grpc_listener import GrpcSide
from ._health import ReplicaHealth
from ._http_listeners import HttpSide
from ._links import LinkPool, ShmSlot
from ._metrics import (
    APP_HEALTHY,
    DENIED,
    FAST_LANE,
    IN_FLIGHT,
    LATENCY,
    LOOP_TASKS,
    MESH_REFUSED,
    RELAYED_BYTES,
    REQUESTS,
    SHM_LEASES,
    SHM_USED,
)
from ._oip_lane import OipAppLane, OipGrpcAppLane
from ._relay import keepalive, relay_parts
from ._router import Router, policy_from_settings
from ._serve import write_atomically
from ._settings import Settings, parse_host_port
from ._trace import ensure_traceparent
from .oip import OipServer, oip_routes
from .oip import Send as OipSend
from .oip_upstream import OipUpstream, UpstreamConfig

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
        self.shm = ShmSlot(self.settings.shm_dir, self.settings)
        self._stop = asyncio.Event()  # set by SIGTERM/SIGINT (see `signals`)
        self.registry: Registry = open_registry(self.settings.discovery, env)
        self.router = Router(
            self.registry,
            limits=self.limits,
            pool=self.pool,
            shm=self.shm,
            policy=policy_from_settings(self.settings),
            zone=self.settings.zone,
            trust_domain=self.settings.trust_domain,
        )
        self._admission = Admission(queue_limit_of(self.settings), self.settings.capacity)
        self._health = ReplicaHealth(self._admission)  # our app's, as pings report it
        self.server = LinkServer(
            self._handle,
            self.limits,
            self.pool,
            pong=self._pong,
            authorize=self._authorize if self.settings.tls_on else None,
            hello_timeout=self.settings.hello_timeout,
            on_refused=MESH_REFUSED.inc,
        )
        self.tls: Tls | None = None  # loaded in start(): reading the files is blocking I/O
        self._app = _AppLinks(self.settings, self.limits, self.pool, self.shm)
        own_model = self.settings.service if self.settings.app is not None else None
        self.oip = OipServer(self, self.limits, own_model=own_model)
        self._loopback: LinkPool | None = None  # to our own mesh port (see `call`)
        self.lane = _oip_lane(self.settings, self._app.upstream, self, self.oip, self.limits)
        self.grpc_lane = _oip_grpc_lane(self.settings, self, self.oip, self.limits)
        self._http = HttpSide(
            self.settings, self.router, oip_routes(self.oip, self.pool), self.lane, self.pool
        )
        self._grpc = GrpcSide(self.oip, self.grpc_lane)
        self.endpoint: Endpoint | None = None
        self.addresses: dict[str, str] = {}
        self._app_healthy = False
        self._draining = False
        self._registered = False
        self._tasks: list[asyncio.Task[None]] = []
        self._admin: object | None = None
        self._metrics: dict[str, _ServiceMetrics] = {}
        self._lane_counters: dict[tuple[str, str, str], tuple[Counter, Counter]] = {}

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
        self.oip.version = await asyncio.to_thread(_package_version)
        await self._start_tls()
        host, port = parse_host_port(s.mesh_addr)
        try:
            await self.server.listen_tcp(host, port, other=self._http.peer.server)
        except (OSError, transport.LinkClosed) as exc:
            raise ConfigError(
                f"mesh listener (--mesh-addr) cannot bind {s.mesh_addr}: {exc}"
            ) from None
        self.addresses["mesh"] = self.server.addresses[0]
        if s.local_mesh_addr is not None:
            local_host, local_port = parse_host_port(s.local_mesh_addr)
            try:
                await self.server.listen_tcp(local_host, local_port, plaintext=True)
            except (OSError, transport.LinkClosed) as exc:
                raise ConfigError(
                    f"local mesh listener (--local-mesh-addr) cannot bind {s.local_mesh_addr}:"
                    f" {exc}"
                ) from None
            self.addresses["local_mesh"] = self.server.addresses[1]
        self.addresses["http"] = await self._http.listen_local(s.http_addr)
        self.addresses["grpc"] = await self._grpc.start(s.grpc_addr)
        admin_host, admin_port = parse_host_port(s.admin_addr)
        self._admin, self.addresses["admin"] = await start_admin(
            admin_app(self, token=s.admin_token), admin_host, admin_port
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

    async def _start_tls(self) -> None:
        """Load the certificates (mutual TLS on the mesh), or say loudly that there is none."""
        s = self.settings
        if s.tls_cert is None or s.tls_key is None or s.tls_ca is None:
            logger.warning(
                "mesh traffic is PLAINTEXT: no --tls-cert/--tls-key/--tls-ca, so peers are not"
                " authenticated and anyone who reaches the mesh listener can call through it"
                " (fine for local development only)",
                extra={"mesh_addr": s.mesh_addr},
            )
            return
        files = TlsFiles(cert=s.tls_cert, key=s.tls_key, ca=s.tls_ca)
        try:
            self.tls = await asyncio.to_thread(Tls, files)
        except transport.LinkClosed as exc:
            raise ConfigError(f"--tls-cert/--tls-key/--tls-ca: {exc}") from None
        self.server.tls = self.router.tls = self.tls
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.tls.watch(), name="tls-reload"))
        identity = identity_uri(s.trust_domain, s.service or "")
        logger.info("mesh traffic is mutual TLS", extra={"identity": identity})

    def _authorize(self, identities: tuple[str, ...], header: Header) -> str | None:
        """None to serve a request from a peer known by `identities`, else why it is refused.

        No identity means the request came through a plaintext local listener: the local
        app. A peer may call this sidecar's own service (as the policy allows), never
        use it to reach another; this sidecar's own service may (its replicas, the
        loopback of the OIP front doors).
        """
        if not identities:
            return None
        s = self.settings
        callers = [name for i in identities if (name := service_of(i, s.trust_domain))]
        target = header.service or ""
        if not callers:
            caller = identities[0]
            why = f"{caller} is not a service identity of trust domain {s.trust_domain!r}"
        else:
            caller = callers[0]
            if caller != s.service and target != s.service:
                why = f"{caller} may not use the sidecar of {s.service} to reach {target}"
            elif s.authorization and not _allowed(s.authorization.get(target), caller, header):
                method = f" method {header.method!r} of" if header.method else ""
                why = f"{caller} may not call{method} {target} (authorization policy)"
            else:
                return None
        DENIED.labels(target, caller).inc()
        logger.warning("request refused", extra={"service": target, "caller": caller, "why": why})
        return why

    async def start_unless_signalled(self) -> bool:
        """`start`, cut short by a signal: False (and closed) if the signal came first."""
        starting = asyncio.ensure_future(self.start())
        signalled = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signalled.cancel()
            starting.cancel()  # nothing if it finished
        try:
            await starting
        except asyncio.CancelledError:
            await self.aclose()
            if self._stop.is_set():
                return False
            raise
        except BaseException:
            await self.aclose()
            raise
        return True

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT ask `run` to stop while inside; install before `start`, so a
        signal sent as soon as the ready file appears is not the default (instant) death."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def run(self) -> None:
        """Serve until a signal (see `signals`), then drain and close."""
        loop = asyncio.get_running_loop()
        stop = self._stop
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
        loop = asyncio.get_running_loop()
        until = loop.time() + self.settings.drain_timeout
        finished = await self.server.drain(self.settings.drain_timeout)
        for lane in (self.lane, self.grpc_lane):
            if lane is None:
                continue
            try:
                async with asyncio.timeout_at(until):
                    await lane.wait_idle()
            except TimeoutError:
                finished = False
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
        for lane in (self.lane, self.grpc_lane):
            if lane is not None:
                await lane.aclose()
        await self.oip.aclose()
        if self._loopback is not None:
            await self._loopback.aclose()
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
        load: dict[str, object] = {}  # the app's queue, reported on its replies
        try:
            if service == self.settings.service and self.settings.app is not None:
                if self.settings.app_protocol == "http":
                    raise transport.RemoteError(
                        ErrorCode.UNAVAILABLE,
                        f"service {service!r} is an http app: call it "
                        "through the local HTTP listener",
                    )
                with self.app_request():  # "overloaded" over the queue limit
                    if self._app.upstream is not None:  # an OIP app: parsed and re-issued
                        head, body = await self._app.upstream.handle(message, deadline, placer)
                        spent = took(started, message.header.method)
                        if spent:
                            head = dataclasses.replace(head, params={**head.params, **spent})
                        return head, body
                    link = await self._app.get()
                    reply = await self._relay(message, link, deadline)
                    # This one still counted, as serve() does; and what this replica took,
                    # the hop to its app included (replacing the app's own `took`).
                    load = {**self._admission.report(), **took(started, message.header.method)}
            else:
                reply, endpoint_id = await self._route(message, deadline)
            header, parts = relay_parts(reply, placer, self.limits)
            if load:
                header = dataclasses.replace(header, params={**header.params, **load})
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

    # The OIP front doors' way in (sidecar.oip.Mesh)

    async def serves(self, service: str) -> bool:
        """True if requests for `service` can go somewhere: the app we front, or endpoints
        the registry lists."""
        s = self.settings
        if service == s.service and s.app is not None:
            return s.app_protocol != "http"
        return bool((await self.router.cluster(service)).endpoints)

    async def call(
        self, service: str, send: OipSend, *, key: bytes | None, deadline: float | None
    ) -> Message:
        """`send` a request on a link to `service`: to the mesh app we front, through our
        own mesh port to an OIP app (its upstream client lives there), or through the router
        to an endpoint. Raises what the link or router raise."""
        s = self.settings
        started = time.perf_counter()
        metrics = self._metrics.get(service) or self._service_metrics(service)
        endpoint_id, outcome = "app", "ok"
        try:
            if service != s.service or s.app is None:
                chosen = ""

                async def routed(link: StreamLink, placer: Placer | None) -> Message:
                    nonlocal chosen
                    chosen = link.peer_name
                    return await send(link, placer)

                reply = await self.router.send(service, routed, key=key, deadline=deadline)
                endpoint_id = chosen
                return reply
            if s.app_protocol != "mesh":
                if self._loopback is None:
                    own = identity_uri(s.trust_domain, s.service or "")
                    self._loopback = LinkPool(
                        self.addresses["mesh"], 1, self.limits, self.pool, self.shm,
                        tls=self.tls, expect_identity=own if self.tls else None,
                    )  # fmt: skip
                link = await self._loopback.get()
                return await send(link, link.placer)
            with self.app_request():
                link = await self._app.get()
                return await send(link, link.placer)
        except Exception as exc:
            outcome = transport.error_code_of(exc).value
            raise
        finally:
            metrics.latency.observe(time.perf_counter() - started)
            REQUESTS.labels(service, endpoint_id, outcome).inc()

    @contextlib.contextmanager
    def app_request(self) -> Iterator[None]:
        """A request to the app we front: admitted under its queue limit (else "overloaded"),
        and how it ended told to the app's health, which pings report."""
        entered = self._admission.enter()
        try:
            yield
        except Exception as exc:
            self._health.observe(exc)
            raise
        else:
            self._health.observe(None)
        finally:
            self._admission.leave(entered)

    @contextlib.contextmanager
    def lane_request(self, service: str) -> Iterator[None]:
        """A request of the local HTTP listener's fast lane to our app: in flight, and
        admitted as `app_request` admits."""
        in_flight = (self._metrics.get(service) or self._service_metrics(service)).in_flight
        in_flight.inc()
        try:
            with self.app_request():
                yield
        finally:
            in_flight.dec()

    @property
    def draining(self) -> bool:
        """Draining: deregistered, finishing what is in flight, taking nothing new."""
        return self._draining

    def observe(self, service: str, protocol: str, seconds: float, outcome: str) -> None:
        """Count a request a local listener's fast lane served, as `call` counts."""
        metrics = self._metrics.get(service) or self._service_metrics(service)
        metrics.latency.observe(seconds)
        key = (service, protocol, outcome)
        counters = self._lane_counters.get(key)
        if counters is None:  # labels() costs per call: made once per key
            counters = REQUESTS.labels(service, "app", outcome), FAST_LANE.labels(*key)
            self._lane_counters[key] = counters
        for counter in counters:
            counter.inc()

    def _pong(self) -> dict[str, object]:
        """What a PING is answered with: our app's load, and whether it serves (its probe
        answers and it does not fail every request)."""
        return self._health.pong(up=self.ready)

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
            LOOP_TASKS.set(len(asyncio.all_tasks()))
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
        if "local_mesh" in self.addresses:  # only with --local-mesh-addr (TLS setups)
            info["local_mesh"] = self.addresses["local_mesh"]
        await asyncio.to_thread(write_atomically, s.ready_file, json.dumps(info))


@dataclass(slots=True)
class _ServiceMetrics:
    in_flight: Gauge
    latency: Histogram
    requests: dict[tuple[str, str], Counter]


class _AppLinks:
    """The app this sidecar fronts: links to it (mesh) or its OIP client (oip-http,
    oip-grpc), and its health probe."""

    def __init__(
        self, settings: Settings, limits: transport.Limits, pool: BufferPool, shm: ShmSlot
    ) -> None:
        self._settings = settings
        self._links = (
            None
            if settings.app is None or settings.app_protocol != "mesh"
            else LinkPool(app_address(settings.app), 4, limits, pool, shm)
        )
        self.upstream = _oip_upstream(settings, limits)
        self._session: aiohttp.ClientSession | None = None

    async def get(self) -> StreamLink:
        """A link to a mesh app. Raises Unavailable if it cannot be reached."""
        assert self._links is not None
        try:
            return await self._links.get()
        except transport.LinkClosed as exc:
            raise Unavailable(f"the app at {self._settings.app} cannot be reached: {exc}") from exc

    async def probe(self) -> bool:
        """True if the app answers: a mesh PING, OIP server and model ready, or a 2xx on
        the HTTP health path."""
        try:
            async with asyncio.timeout(APP_PROBE_TIMEOUT):
                if self.upstream is not None:
                    return await self.upstream.probe()
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
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = app.rstrip("/") + self._settings.app_health_path
        async with self._session.get(url) as response:
            return 200 <= response.status < 300

    async def aclose(self) -> None:
        if self._links is not None:
            await self._links.aclose()
        if self.upstream is not None:
            await self.upstream.aclose()
        if self._session is not None:
            await self._session.close()


def _oip_upstream(settings: Settings, limits: transport.Limits) -> OipUpstream | None:
    """The OIP model server the settings front, if the app speaks OIP."""
    protocol = settings.app_protocol
    if settings.app is None or (protocol != "oip-http" and protocol != "oip-grpc"):
        return None
    model = settings.app_model or settings.service
    assert model is not None  # load_run_config requires a service
    config = UpstreamConfig(settings.app, protocol, model, settings.app_encoding)
    return OipUpstream(config, limits)


def _oip_lane(
    settings: Settings,
    upstream: OipUpstream | None,
    daemon: Daemon,
    oip: OipServer,
    limits: transport.Limits,
) -> OipAppLane | None:
    """The local HTTP listener's fast lane to the OIP HTTP app, where one applies."""
    service, app = settings.service, settings.app
    if upstream is None or settings.app_protocol != "oip-http" or service is None or not app:
        return None
    if not OipAppLane.applies(service, settings.app_model, app):
        return None
    size = limits.max_message_size + limits.max_header_size
    return OipAppLane(
        service, app, lambda: upstream.binary, daemon, oip.stats, size,
        registry=oip.regions, pool=daemon.pool,
    )  # fmt: skip


def _oip_grpc_lane(
    settings: Settings, daemon: Daemon, oip: OipServer, limits: transport.Limits
) -> OipGrpcAppLane | None:
    """The local gRPC listener's fast lane to the OIP gRPC app, where one applies."""
    service, app = settings.service, settings.app
    if settings.app_protocol != "oip-grpc" or service is None or not app:
        return None
    if not OipGrpcAppLane.applies(service, settings.app_model, app):
        return None
    size = limits.max_message_size + limits.max_header_size
    return OipGrpcAppLane(service, app, daemon, oip.stats, size, registry=oip.regions)


def _package_version() -> str:
    try:
        return importlib.metadata.version("arrowmesh")
    except importlib.metadata.PackageNotFoundError:
        return ""


def app_address(url: str) -> str:
    """A mesh app's URL (tcp://host:port, unix:///path) as a link address."""
    if url.startswith("unix:"):
        return "unix:/" + url[len("unix:") :].lstrip("/")
    return url.split("://", 1)[1].rstrip("/")


async def run_daemon(config: RunConfig, env: Mapping[str, str]) -> int:
    """Start, serve until a signal, drain and close; the exit code (0 after a clean drain)."""
    daemon = Daemon(config, env)
    with daemon.signals():
        if not await daemon.start_unless_signalled():
            return 0
        await daemon.run()
    return 0


def _allowed(rules: list[str] | None, caller: str, header: Header) -> bool:
    """True if `rules` (CALLER, CALLER:METHOD or '*') let `caller` make this request."""
    for rule in rules or ():
        name, _, method = rule.partition(":")
        if name in ("*", caller) and (not method or method == header.method):
            return True
    return False
