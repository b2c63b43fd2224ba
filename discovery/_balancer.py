"""Balancer: which endpoint of a cluster takes the next request.

Every policy satisfies one `Balancer` protocol and is a sans-IO core: the router hands it
the candidate endpoints, the affinity key and `now`, and tells it what happened (`start`,
`observe`, `report_load`, `update`); it keeps no clock and does no I/O.

Contract for the router:
- `update(endpoints, now)` whenever the cluster's set changes: state is kept per endpoint
  id; ids not in the set are dropped, new ids start neutral.
- `pick(candidates, key, now)`: `candidates` is the part of the set that may take this try
  (the router leaves out ejected endpoints and those already tried). An endpoint `update`
  never announced is taken as new. Raises `NoHealthyEndpoint` when `candidates` is empty and
  `AllEndpointsBusy` when this caller has every candidate at its concurrency limit (the
  capacity the replica reports, else the one it advertises): rather than return None, so
  that the router cannot mistake "wait" for "none there"; it decides whether to wait for
  one of its requests to finish or to answer "overloaded" at once. The limit counts this
  caller's own requests, which it knows exactly; what replicas report of other callers'
  load only weighs on costs (see `LoadTable`).
- `start(endpoint, now)` as soon as the request is bound to the endpoint, before awaiting
  anything, so concurrent picks see it; then exactly one `observe` when the try ends (a
  cancelled hedge too: its elapsed time is a lower bound on its latency).
- `report_load` whenever a replica reports its queue depth and capacity.

Errors (both `DiscoveryError`s):

    DiscoveryError
    ├── NoHealthyEndpoint (LookupError)   no candidate endpoint at all
    └── AllEndpointsBusy                  every candidate is at its concurrency limit
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from ._endpoint import Endpoint
from ._errors import DiscoveryError
from ._load import EndpointLoad, LoadTable


class NoHealthyEndpoint(DiscoveryError, LookupError):
    """There is no candidate endpoint: all ejected, tried or deregistered."""


class AllEndpointsBusy(DiscoveryError):
    """This caller has every candidate endpoint at its concurrency limit (its capacity)."""


class Balancer(Protocol):
    """Picks an endpoint for each request and learns from how requests went."""

    def pick(self, endpoints: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        """Choose among `endpoints`; raises NoHealthyEndpoint or AllEndpointsBusy."""
        ...

    def start(self, endpoint: Endpoint, now: float) -> None:
        """A request to `endpoint` went out."""
        ...

    def observe(self, endpoint: Endpoint, latency: float, ok: bool, now: float) -> None:
        """A request to `endpoint` ended after `latency` seconds, successfully or not."""
        ...

    def report_load(self, endpoint: Endpoint, queue_depth: int, capacity: int, now: float) -> None:
        """The replica reports `queue_depth` requests queued or running, `capacity` at once."""
        ...

    def update(self, endpoints: Sequence[Endpoint], now: float) -> None:
        """The cluster's endpoint set is now `endpoints`."""
        ...

    def load(self, endpoint: Endpoint, now: float) -> EndpointLoad:
        """What the balancer knows of `endpoint`'s load."""
        ...


class LoadTracking:
    """The bookkeeping every balancer shares: in-flight counts, load reports, limits.

    Policies extend `_observed` and `_updated`; the rest of the protocol is here.
    """

    def __init__(self, report_ttl: float) -> None:
        self._loads = LoadTable(report_ttl)

    def start(self, endpoint: Endpoint, now: float) -> None:
        """A request to `endpoint` went out."""
        self._loads.start(endpoint.id)

    def observe(self, endpoint: Endpoint, latency: float, ok: bool, now: float) -> None:
        """A request to `endpoint` ended; raises ValueError on a negative latency."""
        if not latency >= 0:
            raise ValueError(f"latency={latency} of endpoint {endpoint.id!r} must be >= 0")
        self._loads.finish(endpoint.id)
        self._observed(endpoint, latency, ok, now)

    def report_load(self, endpoint: Endpoint, queue_depth: int, capacity: int, now: float) -> None:
        """The replica's report; raises ValueError on negative values."""
        self._loads.report(endpoint.id, queue_depth, capacity, now)

    def update(self, endpoints: Sequence[Endpoint], now: float) -> None:
        """The cluster's endpoint set is now `endpoints`."""
        self._loads.retain(e.id for e in endpoints)
        self._updated(endpoints, now)

    def load(self, endpoint: Endpoint, now: float) -> EndpointLoad:
        """What this balancer knows of `endpoint`'s load."""
        return self._loads.load(endpoint, now)

    def _observed(self, endpoint: Endpoint, latency: float, ok: bool, now: float) -> None:
        pass

    def _updated(self, endpoints: Sequence[Endpoint], now: float) -> None:
        pass


def require_candidates(endpoints: Sequence[Endpoint]) -> None:
    """Raise NoHealthyEndpoint when there is nothing to pick from."""
    if not endpoints:
        raise NoHealthyEndpoint(
            "no healthy endpoint to pick from: every endpoint is ejected, already tried or"
            " deregistered"
        )


def all_busy(endpoints: Sequence[Endpoint]) -> AllEndpointsBusy:
    """The error for a pick where every candidate is at its limit."""
    service = endpoints[0].service if endpoints else "?"
    return AllEndpointsBusy(
        f"all {len(endpoints)} endpoints of service {service!r} have as many requests from"
        " this caller in flight as their capacity (advertised, or reported by the replica);"
        " wait for one to finish, add replicas or raise their capacity"
    )


def two_choices(
    endpoints: Sequence[Endpoint],
    rng: random.Random,
    has_room: Callable[[Endpoint], bool],
    cost: Callable[[Endpoint], float],
) -> Endpoint:
    """Power of two choices: the cheaper of two distinct random endpoints with room.

    O(1) while both draws have room; only when one is full is the set scanned for the
    endpoints with room, and the draw made again among them.
    """
    require_candidates(endpoints)
    a, b = _draw_two(endpoints, rng)
    if not (has_room(a) and has_room(b)):
        roomy = [e for e in endpoints if has_room(e)]
        if not roomy:
            raise all_busy(endpoints)
        a, b = _draw_two(roomy, rng)
    return a if cost(a) <= cost(b) else b


def _draw_two(endpoints: Sequence[Endpoint], rng: random.Random) -> tuple[Endpoint, Endpoint]:
    n = len(endpoints)
    if n == 1:
        return endpoints[0], endpoints[0]
    i = rng.randrange(n)
    j = rng.randrange(n - 1)
    return endpoints[i], endpoints[j + (j >= i)]


def queue_factor(in_flight: float, limit: int) -> float:
    """How many service times a new request waits for, counting its own: `1 + in_flight / slots`.

    With no advertised capacity the endpoint is taken to run one request at a time, which is
    Linkerd's `latency * (outstanding + 1)`; a replica that batches 8 at once queues an eighth
    as long behind the same number.
    """
    return 1.0 + in_flight / (limit or 1)
