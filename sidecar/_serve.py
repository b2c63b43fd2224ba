"""serve(): a Python function as a mesh service, with no sidecar needed."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt

import transport
from discovery import DiscoveryError, Endpoint, Registry, open_registry
from transport import (
    BufferPool,
    ErrorCode,
    Header,
    Kind,
    Limits,
    LinkServer,
    Message,
    Placer,
    RemoteError,
    Reply,
    ShmDomain,
    Tls,
    TlsFiles,
    service_of,
)

from ._admission import Admission, took
from ._advertise import advertise_address
from ._client import alloc_in
from ._errors import Unavailable
from ._health import ReplicaHealth
from ._links import ShmSlot
from ._loop import run
from ._settings import DEFAULT_TRUST_DOMAIN, Settings
from ._signature import TensorSpec, signature_params

logger = logging.getLogger(__name__)

Inputs = dict[str, npt.NDArray[Any]]
Outputs = Mapping[str, object]
_CURRENT_SHM: ContextVar[ShmDomain | None] = ContextVar("arrowmesh_shm", default=None)
HandlerFn = Callable[[Inputs], Outputs] | Callable[[Inputs], Awaitable[Outputs]]


@dataclass(slots=True)
class ServiceStats:
    """Counters of one served service."""

    requests: int = 0
    failures: int = 0


def _is_async(handler: object) -> bool:
    call = type(handler).__call__ if not inspect.isfunction(handler) else None
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


class Service:
    """A handler served on a mesh listener (TCP, and a Unix socket if `uds_path` is given).

    Sync handlers run in a worker thread; async ones on the loop. Use as an async context
    manager, or call `start()` and `aclose()`. Raises transport.LinkClosed if it cannot listen.
    """

    def __init__(
        self,
        handler: HandlerFn,
        *,
        service: str,
        host: str = "127.0.0.1",
        port: int = 0,
        uds_path: str | None = None,
        limits: Limits | None = None,
        pool: BufferPool | None = None,
        shm_dir: str | None = None,
        discovery: str | None = None,
        advertise_addr: str | None = None,
        queue_limit: int = 0,
        inputs: Sequence[TensorSpec] = (),
        outputs: Sequence[TensorSpec] = (),
        tls: TlsFiles | None = None,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        allow: Sequence[str] | None = None,
    ) -> None:
        if not service:
            raise ValueError("service name must not be empty")
        if allow is not None and tls is None:
            raise ValueError("allow= needs tls=: callers are known by their certificates")
        self._tls_files = tls
        self._trust_domain = trust_domain
        self._allow = None if allow is None else frozenset(allow)
        self._admission = Admission(queue_limit)
        self._health = ReplicaHealth(self._admission)  # what pings are answered with
        self._signature = signature_params(inputs, outputs)  # a "metadata" request's answer
        self._discovery = discovery
        self._advertise = advertise_addr
        self._registry: Registry | None = None
        self.endpoint: Endpoint | None = None
        self._shm = ShmSlot(shm_dir)
        self.service = service
        self.limits = limits or Settings().limits()
        self.pool = pool or BufferPool()
        self.stats = ServiceStats()
        self._handler = handler
        self._async = _is_async(handler)
        self._host, self._port, self._uds_path = host, port, uds_path
        self._server = LinkServer(
            self._handle,
            self.limits,
            self.pool,
            pong=self._health.pong,
            authorize=None if tls is None else self._authorize,
        )

    @property
    def shm(self) -> ShmDomain | None:
        """The shared-memory domain, once started (None when shared memory is off)."""
        return self._shm.domain

    @property
    def address(self) -> str:
        """The bound TCP "host:port"."""
        return self._server.addresses[0]

    @property
    def addresses(self) -> list[str]:
        """Every bound address: "host:port", then "unix:/path" if any."""
        return list(self._server.addresses)

    @property
    def server(self) -> LinkServer:
        """The link server underneath (connections, requests in flight)."""
        return self._server

    async def start(self) -> None:
        """Join the shared-memory directory, bind the listeners, register if asked to.

        Raises transport.LinkClosed (cannot listen), discovery errors (cannot register).
        """
        domain = await self._shm.get()
        self._server.shm = domain
        if self._tls_files is not None:  # reading the files is blocking I/O
            self._server.tls = await asyncio.to_thread(Tls, self._tls_files)
        await self._server.listen_tcp(self._host, self._port)
        if self._uds_path is not None:
            await self._server.listen_unix(self._uds_path)
        if self._discovery is not None:
            await self._register(domain.token if domain is not None else "")

    def _authorize(self, identities: tuple[str, ...], header: Header) -> str | None:
        """None to serve a caller known by `identities` (none: the Unix socket, local)."""
        if not identities:
            return None
        callers = [n for i in identities if (n := service_of(i, self._trust_domain))]
        if not callers:
            return f"{identities[0]} is not a service of trust domain {self._trust_domain!r}"
        if self._allow is None or "*" in self._allow or callers[0] in self._allow:
            return None
        return f"{callers[0]} may not call {self.service}"

    async def _register(self, shm_token: str) -> None:
        host, port = self._server.addresses[0].rsplit(":", 1)
        address = self._advertise or advertise_address(
            host.strip("[]"), self._discovery, os.environ
        )
        self.endpoint = Endpoint(
            self.service,
            f"{self.service}-{socket.gethostname()[:20]}-{port}",
            address,
            int(port),
            shm_domain=shm_token,
        )
        self._registry = open_registry(self._discovery, os.environ)
        await self._registry.__aenter__()
        await self._registry.register(self.endpoint)
        await self._registry.set_health(self.endpoint.id, True)

    async def drain(self, timeout: float) -> bool:
        """Deregister, stop accepting; wait up to `timeout` for requests in flight.

        True if all finished.
        """
        if self._registry is not None and self.endpoint is not None:
            with contextlib.suppress(DiscoveryError, TimeoutError):
                async with asyncio.timeout(5.0):
                    await self._registry.deregister(self.endpoint.id)
        return await self._server.drain(timeout)

    async def aclose(self) -> None:
        """Close listeners and links, cancelling requests still in progress."""
        await self._server.aclose()
        if self._registry is not None:
            registry, self._registry = self._registry, None
            await registry.aclose()
        await self._shm.aclose()
        if self._uds_path is not None:
            await asyncio.to_thread(_unlink, self._uds_path)

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _handle(
        self, message: Message, deadline: float | None, place: Placer | None
    ) -> Reply:
        header = message.header
        self.stats.requests += 1
        started = self._admission.enter()  # raises "overloaded" over the queue limit
        arrived = time.perf_counter()
        try:
            reply = await self._reply(message, header, place, arrived)
            self._health.observe(None)
            return reply
        except Exception as exc:
            self.stats.failures += 1
            self._health.observe(exc)
            raise
        finally:
            self._admission.leave(started)

    async def _reply(
        self, message: Message, header: Header, place: Placer | None, arrived: float
    ) -> Reply:
        if header.service != self.service:
            raise RemoteError(
                ErrorCode.NOT_FOUND,
                f"unknown service {header.service!r}: this endpoint serves {self.service!r}",
            )
        if header.method == "metadata":
            return Header(Kind.RESPONSE, traceparent=header.traceparent, params=self._signature), []
        if header.method not in ("", "infer"):
            raise RemoteError(ErrorCode.NOT_FOUND, f"unknown method {header.method!r}")
        body = message.body_view()
        inputs = transport.decode_tensors(header.tensors, body, self.limits, message.shared)
        del body, message
        token = _CURRENT_SHM.set(self._shm.domain)
        try:
            outputs = await self._call(inputs)
        finally:
            _CURRENT_SHM.reset(token)
        del inputs
        try:
            metas, parts, body_len, body_ref = transport.encode_message(outputs, self.limits, place)
        except transport.TransportError as exc:
            raise RemoteError(
                ErrorCode.HANDLER_ERROR, f"handler output cannot be sent: {exc}", type(exc).__name__
            ) from exc
        return Header(
            Kind.RESPONSE,
            traceparent=header.traceparent,
            body_len=body_len,
            tensors=metas,
            body_ref=body_ref,
            params={**self._admission.report(), **took(arrived, header.method)},
        ), parts

    async def _call(self, inputs: Inputs) -> Outputs:
        try:
            if self._async:
                outputs = await self._handler(inputs)  # type: ignore[misc]  # checked by _is_async
            else:
                outputs = await asyncio.to_thread(self._handler, inputs)
        except Unavailable as exc:  # the handler says: not now, try another replica
            raise RemoteError(ErrorCode.UNAVAILABLE, str(exc), type(exc).__qualname__) from exc
        except Exception as exc:
            logger.debug("handler raised", exc_info=True)
            raise RemoteError(
                ErrorCode.HANDLER_ERROR, f"{type(exc).__name__}: {exc}", type(exc).__qualname__
            ) from exc
        if not isinstance(outputs, Mapping):
            raise RemoteError(
                ErrorCode.HANDLER_ERROR,
                f"handler returned {type(outputs).__name__}, expected a dict of arrays",
            )
        return outputs


def alloc(shape: int | Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """In a handler: an output array in shared memory, sent to a same-host caller by
    reference. Elsewhere, or with shared memory off or full: an ordinary array."""
    return alloc_in(_CURRENT_SHM.get(), shape, dtype)


def serve(
    handler: HandlerFn,
    *,
    service: str,
    host: str = "127.0.0.1",
    port: int = 0,
    uds_path: str | None = None,
    ready_file: str | None = None,
    limits: Limits | None = None,
    warm_sizes: Iterable[int] = (),
    drain_timeout: float = 30.0,
    shm_dir: str | None = None,
    discovery: str | None = None,
    queue_limit: int = 0,
    inputs: Sequence[TensorSpec] = (),
    outputs: Sequence[TensorSpec] = (),
    tls: TlsFiles | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    allow: Sequence[str] | None = None,
) -> None:
    """Serve `handler(inputs) -> outputs` as mesh service `service` until SIGTERM or SIGINT.

    With `tls`, the TCP listener takes only mutual-TLS links from peers whose certificate
    chains to `tls.ca` (the Unix socket stays local); `allow` lists the caller services
    (from their SPIFFE identities in `trust_domain`) that may call, others get
    PERMISSION_DENIED.

    `inputs` and `outputs` declare the handler's signature, which sidecars report as the
    model's metadata (Open Inference Protocol `GET /v2/models/{service}`).

    With `queue_limit` > 0, requests beyond that many at once are answered at once with a
    retryable "overloaded" error carrying a retry-after (load shedding).

    With `discovery` (a `--discovery` URI), the endpoint is registered there (healthy once
    listening) and deregistered on SIGTERM, for proxyless callers and sidecars to find.

    `ready_file`, if given, is written atomically once listening, as JSON
    {"service", "pid", "mesh", "uds"}. On SIGTERM it stops accepting, lets requests in
    flight finish (up to `drain_timeout`), then returns. `warm_sizes` pre-faults receive
    buffers for those body sizes. Raises transport.LinkClosed if it cannot listen.
    """
    svc = Service(
        handler,
        service=service,
        host=host,
        port=port,
        uds_path=uds_path,
        limits=limits,
        shm_dir=shm_dir,
        discovery=discovery,
        queue_limit=queue_limit,
        inputs=inputs,
        outputs=outputs,
        tls=tls,
        trust_domain=trust_domain,
        allow=allow,
    )
    run(_serve_until_signal(svc, ready_file, tuple(warm_sizes), drain_timeout))


async def _serve_until_signal(
    svc: Service, ready_file: str | None, warm: tuple[int, ...], drain_timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with svc:
        if warm:
            await asyncio.to_thread(svc.pool.warm, warm)
        if ready_file is not None:
            uds = next((a for a in svc.addresses if a.startswith("unix:")), None)
            info = {"service": svc.service, "pid": os.getpid(), "mesh": svc.address, "uds": uds}
            await asyncio.to_thread(write_atomically, ready_file, json.dumps(info))
        logger.info("serving", extra={"service": svc.service, "addresses": svc.addresses})
        await stop.wait()
        logger.info("draining", extra={"service": svc.service})
        await svc.drain(drain_timeout)


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` so that readers see all of it or nothing."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
