"""Cluster: the live endpoint set of one service, fed by a registry watch and active probes.

The shell around `Membership`: it owns the watch task and the probe task, logs and exports
the lasting conditions (registry unreachable, endpoints dropped by probes) when they change,
and wakes whoever waits for a change (the balancers of the router).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ._endpoint import Endpoint
from ._membership import Membership
from ._metrics import CLUSTER_ENDPOINTS, CLUSTER_STALE, CLUSTER_UPDATES, REJECTED_RECORDS
from ._registry import Outage, Registry

logger = logging.getLogger(__name__)

Prober = Callable[[Endpoint], Awaitable[bool]]
Listener = Callable[[tuple[Endpoint, ...]], None]


def tcp_prober(timeout: float = 0.5) -> Prober:
    """A probe that succeeds when the endpoint accepts a TCP connection within `timeout`."""

    async def probe(endpoint: Endpoint) -> bool:
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(endpoint.address, endpoint.port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    return probe


class Cluster:
    """One service's endpoints, kept current. Use as an async context manager.

    `prober`, if given, is run on every registered endpoint each `probe_interval`; an
    endpoint failing `probe_failures` in a row is left out until it answers again.
    """

    def __init__(
        self,
        service: str,
        registry: Registry,
        *,
        prober: Prober | None = None,
        probe_interval: float = 1.0,
        probe_failures: int = 2,
    ) -> None:
        self.service = service
        self._registry = registry
        self._prober = prober
        self._probe_interval = probe_interval
        self._state = Membership(probe_failures=probe_failures)
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Listener] = []

    async def __aenter__(self) -> Cluster:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow(), name=f"cluster-watch-{self.service}"))
        if self._prober is not None:
            self._tasks.append(
                loop.create_task(self._probe(), name=f"cluster-probe-{self.service}")
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop watching and probing."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints to route to now (the last good set while the registry is down)."""
        return self._state.endpoints

    @property
    def stale(self) -> bool:
        """True while the registry is unreachable and the last good set is served."""
        return self._state.stale

    @property
    def version(self) -> int:
        """Moves whenever `endpoints` or `stale` change."""
        return self._state.version

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(endpoints)` synchronously on every change of the routable set."""
        self._listeners.append(listener)

    async def wait_changed(self, version: int) -> int:
        """Wait until `version` is passed; returns the new version."""
        while self._state.version <= version:
            await self._changed.wait()
        return self._state.version

    async def wait_ready(self) -> None:
        """Wait for the registry's first answer (a snapshot, or an outage)."""
        while not self._state.received:
            await self._changed.wait()

    async def _follow(self) -> None:
        async for event in self._registry.watch(self.service):
            was_stale = self._state.stale
            first = not self._state.received
            changed = self._state.apply(event, time.monotonic())
            if isinstance(event, Outage) and not was_stale:
                logger.warning(
                    "registry unreachable; serving last good endpoints",
                    extra={
                        "service": self.service,
                        "endpoints": len(self.endpoints),
                        "error": event.reason,
                    },
                )
            elif was_stale and not self._state.stale:
                logger.info("registry reachable again", extra={"service": self.service})
            REJECTED_RECORDS.labels(self.service).set(self._state.rejected)
            self._publish(changed or first)

    async def _probe(self) -> None:
        assert self._prober is not None
        prober = self._prober
        while True:
            registered = self._state.registered
            # A prober that raises counts as a failed probe, not a dead cluster.
            results = await asyncio.gather(*(prober(e) for e in registered), return_exceptions=True)
            changed = False
            for endpoint, result in zip(registered, results, strict=True):
                ok = result is True
                was_in = endpoint in self.endpoints
                if self._state.probed(endpoint.id, ok):
                    changed = True
                    logger.info(
                        "endpoint probe " + ("recovered" if not was_in else "failed; dropped"),
                        extra={"service": self.service, "endpoint": endpoint.id},
                    )
            self._publish(changed)
            await asyncio.sleep(self._probe_interval)

    def _publish(self, changed: bool) -> None:
        CLUSTER_ENDPOINTS.labels(self.service).set(len(self.endpoints))
        CLUSTER_STALE.labels(self.service).set(1 if self.stale else 0)
        if not changed:
            return
        CLUSTER_UPDATES.labels(self.service).inc()
        for listener in self._listeners:
            listener(self.endpoints)
        self._changed.set()
        self._changed = asyncio.Event()
