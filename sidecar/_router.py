"""Router: for each request, cluster → endpoint → link (DESIGN.md "Router").

Clusters are opened on first use and kept current by the registry's watch. The pick is
the least busy endpoint (fewest requests in flight on our links to it, ties broken at
random); the balancers of issue 7 replace it. A request that could not be sent because an
endpoint refused the connection is tried on another endpoint: nothing was sent, so
nothing is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import transport
from discovery import Cluster, Endpoint, Registry
from transport import BufferPool, Limits, Message, Placer, StreamLink

from ._errors import Unavailable
from ._links import LinkPool, ShmSlot

logger = logging.getLogger(__name__)

FIRST_ANSWER_TIMEOUT = 5.0  # how long a new cluster may wait for the registry's first answer

Send = Callable[[StreamLink, Placer | None], Awaitable[Message]]


class Router:
    """Routes requests by service name to endpoints found through `registry`."""

    def __init__(
        self,
        registry: Registry,
        *,
        limits: Limits,
        pool: BufferPool,
        shm: ShmSlot,
        connections: int = 1,
        rng: random.Random | None = None,
        owns_registry: bool = False,
    ) -> None:
        self._registry = registry
        self._owns_registry = owns_registry
        self._limits = limits
        self._pool = pool
        self._shm = shm
        self._connections = connections
        self._rng = rng or random.Random()
        self._clusters: dict[str, Cluster] = {}
        self._opening: dict[str, asyncio.Future[Cluster]] = {}
        self._links: dict[str, LinkPool] = {}

    @property
    def clusters(self) -> dict[str, Cluster]:
        """The clusters opened so far, by service."""
        return self._clusters

    async def cluster(self, service: str) -> Cluster:
        """The cluster of `service`, opened (and its first answer awaited) on first use."""
        cluster = self._clusters.get(service)
        if cluster is not None:
            return cluster
        opening = self._opening.get(service)
        if opening is None:
            opening = asyncio.get_running_loop().create_future()
            self._opening[service] = opening
            try:
                cluster = await self._open(service)
            except BaseException as exc:
                opening.set_exception(exc)
                opening.exception()  # retrieved: others may not be waiting
                raise
            finally:
                del self._opening[service]
            opening.set_result(cluster)
            return cluster
        return await asyncio.shield(opening)

    async def send(self, service: str, send: Send) -> Message:
        """Pick an endpoint of `service` and `send` on a link to it.

        Raises Unavailable when no endpoint can be reached; what `send` raises otherwise.
        """
        cluster = await self.cluster(service)
        tried: set[str] = set()
        while True:
            endpoint = self._pick(cluster, tried)
            if endpoint is None:
                why = "none is reachable" if tried else "the registry lists none"
                stale = " (registry unreachable: last known set)" if cluster.stale else ""
                raise Unavailable(f"no endpoint of service {service!r}: {why}{stale}")
            links = self._links_to(endpoint)
            try:
                link = await links.get()
            except transport.LinkClosed as exc:
                logger.info(
                    "endpoint unreachable", extra={"endpoint": endpoint.id, "error": str(exc)}
                )
                tried.add(endpoint.id)
                continue
            return await send(link, link.placer)

    async def aclose(self) -> None:
        """Close every cluster and link (and the registry, if it was handed over)."""
        clusters, self._clusters = list(self._clusters.values()), {}
        links, self._links = list(self._links.values()), {}
        for cluster in clusters:
            await cluster.aclose()
        await asyncio.gather(*(pool.aclose() for pool in links))
        if self._owns_registry:
            await self._registry.aclose()

    async def _open(self, service: str) -> Cluster:
        cluster = Cluster(service, self._registry)
        await cluster.__aenter__()
        try:
            async with asyncio.timeout(FIRST_ANSWER_TIMEOUT):
                await cluster.wait_ready()
            if not cluster.endpoints and not cluster.stale:
                # A first answer may be empty while endpoints are still being confirmed
                # (mDNS probes them first): give it a moment before calling it unavailable.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await cluster.wait_changed(cluster.version)
        except TimeoutError:
            logger.warning("registry slow to answer", extra={"service": service})
        except BaseException:
            await cluster.aclose()
            raise
        self._clusters[service] = cluster
        return cluster

    def _pick(self, cluster: Cluster, tried: set[str]) -> Endpoint | None:
        candidates = [e for e in cluster.endpoints if e.id not in tried]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        busy = {
            e.id: self._links[e.authority].in_flight if e.authority in self._links else 0
            for e in candidates
        }
        least = min(busy.values())
        return self._rng.choice([e for e in candidates if busy[e.id] == least])

    def _links_to(self, endpoint: Endpoint) -> LinkPool:
        links = self._links.get(endpoint.authority)
        if links is None:
            links = LinkPool(
                endpoint.authority, self._connections, self._limits, self._pool, self._shm
            )
            self._links[endpoint.authority] = links
        return links
