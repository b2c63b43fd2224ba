"""LoadTable: what one caller knows of each endpoint's load, mesh-wide.

Two sources: the requests this caller has in flight (`start`/`finish`, exact but local),
and the queue depth a replica reports on its responses and pings (`report`, mesh-wide but
stale). The estimate is ours now plus the others' part of the last report, fading linearly
to nothing over `report_ttl`:

    in_flight = outstanding + (depth - outstanding_at_report) * (1 - age / report_ttl)

so N callers see the requests the others sent, and none waits for the next report to see
its own. Reports only ever weigh on costs and on how available a locality tier looks; the
hard concurrency limit (`full`) counts this caller's own requests, which it knows exactly.
A stale report cannot strand a replica: one seen as busy is sent less, not nothing, and each
answer brings a fresh report. The replica itself enforces its limit across callers (its
sidecar sheds, see `Shedder`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """One endpoint's load as a balancer sees it."""

    outstanding: int
    """Requests this caller has in flight to it."""
    in_flight: float
    """Mesh-wide estimate: ours plus the others' part of its last report, fading."""
    limit: int
    """Requests it takes at once (reported, else advertised capacity); 0: no limit."""

    @property
    def full(self) -> bool:
        """True when this caller alone has `limit` requests there: it is not picked."""
        return 0 < self.limit <= self.outstanding

    @property
    def saturated(self) -> bool:
        """True when the mesh-wide estimate is at the limit: it counts as unavailable."""
        return 0 < self.limit <= self.in_flight


@dataclass(slots=True)
class _Entry:
    outstanding: int = 0
    depth: int = 0
    capacity: int = 0
    reported_at: float = -math.inf
    outstanding_at_report: int = 0


class LoadTable:
    """Per-endpoint in-flight counts and load reports, keyed by endpoint id."""

    __slots__ = ("_entries", "_ttl")

    def __init__(self, report_ttl: float) -> None:
        self._ttl = report_ttl
        self._entries: dict[str, _Entry] = {}

    def start(self, endpoint_id: str) -> None:
        """A request to the endpoint went out."""
        self._entry(endpoint_id).outstanding += 1

    def finish(self, endpoint_id: str) -> None:
        """A request to the endpoint ended (a finish after the endpoint was dropped is ignored)."""
        entry = self._entries.get(endpoint_id)
        if entry is not None and entry.outstanding > 0:
            entry.outstanding -= 1

    def report(self, endpoint_id: str, queue_depth: int, capacity: int, now: float) -> None:
        """The replica says it has `queue_depth` requests and takes `capacity` at once.

        Raises ValueError on a negative value (the shell validates what comes off the wire).
        """
        if queue_depth < 0 or capacity < 0:
            raise ValueError(
                f"load report for {endpoint_id!r}: queue_depth={queue_depth}, "
                f"capacity={capacity} must be >= 0"
            )
        entry = self._entry(endpoint_id)
        entry.depth, entry.capacity, entry.reported_at = queue_depth, capacity, now
        entry.outstanding_at_report = entry.outstanding

    def outstanding(self, endpoint_id: str) -> int:
        """Requests this caller has in flight to the endpoint."""
        entry = self._entries.get(endpoint_id)
        return 0 if entry is None else entry.outstanding

    def in_flight(self, endpoint_id: str, now: float) -> float:
        """Mesh-wide estimate of the endpoint's requests (see the module docstring)."""
        entry = self._entries.get(endpoint_id)
        if entry is None:
            return 0.0
        age = now - entry.reported_at
        if not age < self._ttl:
            return float(entry.outstanding)
        others = max(entry.depth - entry.outstanding_at_report, 0)
        return entry.outstanding + others * (1.0 - max(age, 0.0) / self._ttl)

    def limit(self, endpoint: Endpoint, now: float) -> int:
        """Its concurrency limit: a fresh reported capacity, else the advertised one."""
        entry = self._entries.get(endpoint.id)
        if entry is not None and entry.capacity and now - entry.reported_at < self._ttl:
            return entry.capacity
        return endpoint.capacity

    def has_room(self, endpoint: Endpoint, now: float) -> bool:
        """False when this caller has as many requests there as its limit."""
        limit = self.limit(endpoint, now)
        return limit == 0 or self.outstanding(endpoint.id) < limit

    def load(self, endpoint: Endpoint, now: float) -> EndpointLoad:
        """The endpoint's load as a value."""
        return EndpointLoad(
            self.outstanding(endpoint.id),
            self.in_flight(endpoint.id, now),
            self.limit(endpoint, now),
        )

    def retain(self, endpoint_ids: Iterable[str]) -> None:
        """Drop the entries of endpoints not in `endpoint_ids`."""
        keep = set(endpoint_ids)
        for endpoint_id in [i for i in self._entries if i not in keep]:
            del self._entries[endpoint_id]

    def forget(self, endpoint_id: str) -> None:
        """Drop one endpoint's entry (it starts neutral if seen again)."""
        self._entries.pop(endpoint_id, None)

    def _entry(self, endpoint_id: str) -> _Entry:
        entry = self._entries.get(endpoint_id)
        if entry is None:
            entry = self._entries[endpoint_id] = _Entry()
        return entry
