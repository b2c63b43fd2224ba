"""The Registry protocol every backend satisfies, and what its watches yield.

A watch is an async iterator that never ends on its own while the registry misbehaves:
backends retry with back-off internally and yield `Outage` once when the registry stops
answering usefully, then a `Snapshot` again when it comes back. Consumers (the cluster)
keep their last good snapshot through an outage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ._endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The complete, current set of healthy endpoints of one service, sorted by id."""

    endpoints: tuple[Endpoint, ...]
    # Records the backend skipped because they were malformed (said in a log line too).
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class Outage:
    """The registry could not be asked (or answered nonsense); keep serving the last set."""

    reason: str


WatchEvent = Snapshot | Outage


class Registry(Protocol):
    """Where services are: register this process's endpoints, watch other services.

    Use as an async context manager (entering opens the backend's client inside the loop).
    """

    async def __aenter__(self) -> Registry: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def register(self, endpoint: Endpoint) -> None:
        """Advertise `endpoint`, initially unhealthy where the backend has health.

        Raises RegistryUnavailable (retry later) or RegistryRejected.
        """
        ...

    async def deregister(self, endpoint_id: str) -> None:
        """Withdraw an endpoint this registry registered; unknown ids are not an error."""
        ...

    async def set_health(self, endpoint_id: str, healthy: bool, note: str = "") -> None:
        """Report whether the app behind `endpoint_id` can take traffic.

        Backends with a TTL keep it passing only while the last report was healthy.
        """
        ...

    def watch(self, service: str) -> AsyncIterator[WatchEvent]:
        """Follow `service`: a snapshot now, then one per change; outages in between."""
        ...

    async def aclose(self) -> None:
        """Deregister what this registry registered, stop its tasks, close its clients."""
        ...


def sorted_endpoints(endpoints: list[Endpoint]) -> tuple[Endpoint, ...]:
    """Endpoints in the canonical order of a snapshot (by id), so snapshots compare by value."""
    return tuple(sorted(endpoints, key=lambda e: (e.id, e.address, e.port)))
