"""Links to upstreams: up to `size` per address, opened on demand, reopened when closed."""

from __future__ import annotations

import asyncio
import logging
import threading

import transport
from transport import BufferPool, Limits, ShmDomain, StreamLink, Tls

from ._settings import Settings

logger = logging.getLogger(__name__)


class ShmSlot:
    """A shared-memory domain made on first use (it touches files and pre-faults memory).

    Its arena size, cap and lease timings come from `settings` (the daemon's, flags and
    file included), or from the environment for library callers that have none.
    """

    def __init__(self, shm_dir: str | None, settings: Settings | None = None) -> None:
        self._shm_dir = shm_dir
        self._settings = settings
        self.domain: ShmDomain | None = None
        self._failed = False
        self._lock = threading.Lock()  # blocking clients call make() from many threads

    async def get(self) -> ShmDomain | None:
        """The domain, made in a thread the first time; None when off or unusable."""
        if self.domain is None and not self._failed:
            self.domain = await asyncio.to_thread(self.make)
        return self.domain

    def make(self) -> ShmDomain | None:
        """The domain, made now (blocking); None when off or unusable."""
        with self._lock:
            if self.domain is not None or self._failed:
                return self.domain
            try:
                settings = self._settings if self._settings is not None else Settings()
                self.domain = settings.shm_domain(self._shm_dir)
            except OSError as exc:
                logger.warning("shared memory unavailable", extra={"error": str(exc)})
                self._failed = True
            return self.domain

    async def aclose(self) -> None:
        """Leave the directory: revoke every lease, remove our files."""
        domain, self.domain = self.domain, None
        if domain is not None:
            await asyncio.to_thread(domain.close)


class LinkPool:
    """Up to `size` links to one address; `get` returns the least busy, opening as needed."""

    def __init__(
        self,
        address: str,
        size: int,
        limits: Limits,
        pool: BufferPool,
        shm: ShmSlot,
        *,
        tls: Tls | None = None,
        expect_identity: str | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._expect_identity = expect_identity
        self._size = size
        self._limits = limits
        self._pool = pool
        self._shm = shm
        self._links: list[StreamLink] = []
        self._opening: asyncio.Lock | None = None

    @property
    def in_flight(self) -> int:
        """Requests waiting for a reply on this address's links."""
        return sum(link.in_flight for link in self._links)

    @property
    def connected(self) -> bool:
        """True if a link to the address is open (`get` would not have to connect)."""
        return any(not link.closed for link in self._links)

    async def get(self) -> StreamLink:
        """A link to the address. Raises transport.LinkClosed if it cannot be reached."""
        links = self._links
        if len(links) == self._size == 1 and not links[0].closed:
            return links[0]  # the common case, asked per request: no list rebuilt
        self._links[:] = [link for link in self._links if not link.closed]
        idle = min(self._links, key=lambda link: link.in_flight, default=None)
        if idle is not None and (idle.in_flight == 0 or len(self._links) >= self._size):
            return idle
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            self._links[:] = [link for link in self._links if not link.closed]
            if len(self._links) < self._size:
                domain = await self._shm.get()
                link = await transport.connect(
                    self.address,
                    limits=self._limits,
                    pool=self._pool,
                    shm=domain,
                    tls=self._tls,
                    expect_identity=self._expect_identity,
                )
                self._links.append(link)
        return min(self._links, key=lambda link: link.in_flight)

    async def aclose(self) -> None:
        """Close every link."""
        links, self._links = self._links, []
        await asyncio.gather(*(link.aclose() for link in links))
