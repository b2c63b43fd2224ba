"""Locality: prefer endpoints reachable through shared memory, then the same zone.

A wrapper that works with any balancer. Endpoints fall in three tiers: the caller's shm
domain, the caller's zone, everything else. Each tier's availability is the fraction of its
endpoints that are candidates (not ejected, not tried) and not saturated (their mesh-wide
load estimate below their limit, see `EndpointLoad.saturated`), times the overprovisioning
factor (Envoy's, 1.4 by default), capped at 1. Traffic goes to the tiers in order, each
taking what its availability allows of what is left:

    share(shm) = a(shm);  share(zone) = min(1 - share(shm), a(zone));  the rest spills on

so a fully healthy local tier takes everything, one that is 75% available still does
(0.75 * 1.4 > 1), and one that is 50% available keeps 70% and spills 30%. When every tier
together has less than 1, the shares are scaled up to sum to 1 (as Envoy normalises). When
every endpoint is saturated (the whole cluster is busy), availability counts the endpoints
this caller has not filled instead, so the shm domain is still preferred under load. A tier
counts at least `min_tier_size` endpoints, so a single local replica can be told not to
take the whole of a caller's traffic.

The tier of a request with an affinity key is drawn from the key's hash, so a key stays in
its tier while availability does not change; without a key, at random.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ._balancer import Balancer, require_candidates
from ._checks import check_at_least
from ._endpoint import Endpoint
from ._hashring import ring_hash
from ._load import EndpointLoad

TIERS = 3


@dataclass(frozen=True, slots=True)
class LocalityPolicy:
    """Settings of the locality preference; raises ValueError on a bad value."""

    overprovisioning: float = 1.4
    """A tier whose available fraction * this is at least 1 takes all the traffic."""
    min_tier_size: int = 1
    """A tier counts at least this many endpoints; the missing ones are unavailable."""

    def __post_init__(self) -> None:
        check_at_least("overprovisioning", self.overprovisioning, 1.0)
        check_at_least("min_tier_size", self.min_tier_size, 1)


class LocalityBalancer:
    """Any balancer, restricted per request to one locality tier chosen by availability."""

    def __init__(
        self,
        inner: Balancer,
        rng: random.Random,
        *,
        shm_domain: str = "",
        zone: str = "",
        policy: LocalityPolicy | None = None,
    ) -> None:
        self.inner = inner
        self.policy = policy or LocalityPolicy()
        self.shm_domain = shm_domain
        self.zone = zone
        self._rng = rng
        self._sizes = [0] * TIERS  # members per tier
        self._tiers: dict[str, int] = {}  # member id -> its tier

    def tier(self, endpoint: Endpoint) -> int:
        """0: same shm domain as the caller; 1: same zone; 2: elsewhere."""
        if self.shm_domain and endpoint.shm_domain == self.shm_domain:
            return 0
        if self.zone and endpoint.zone == self.zone:
            return 1
        return 2

    def shares(self, endpoints: Sequence[Endpoint], now: float) -> list[float]:
        """The fraction of traffic each tier takes, given these candidates."""
        return self._shares(self._split(endpoints), now)

    def pick(self, endpoints: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        """The inner balancer's pick within one tier; raises as the inner balancer does."""
        require_candidates(endpoints)
        tiers = self._split(endpoints)
        shares = self._shares(tiers, now)
        if not any(shares):  # all saturated: the whole cluster is busy, count what has room
            shares = self._shares(tiers, now, mesh_wide=False)
        if not any(shares):
            return self.inner.pick(endpoints, key, now)  # all full: the inner one says so
        chosen = next(t for t, share in enumerate(shares) if share > 0)
        if shares[chosen] < 1.0:
            u = self._rng.random() if key is None else ring_hash(b"tier\0" + key) / 2.0**64
            for tier, share in enumerate(shares):
                if share > 0:
                    chosen = tier
                if u < share:
                    break
                u -= share
        return self.inner.pick(tiers[chosen], key, now)

    def start(self, endpoint: Endpoint, now: float) -> None:
        """A request to `endpoint` went out."""
        self.inner.start(endpoint, now)

    def observe(self, endpoint: Endpoint, latency: float, ok: bool, now: float) -> None:
        """A request to `endpoint` ended."""
        self.inner.observe(endpoint, latency, ok, now)

    def report_load(self, endpoint: Endpoint, queue_depth: int, capacity: int, now: float) -> None:
        """The replica's load report."""
        self.inner.report_load(endpoint, queue_depth, capacity, now)

    def update(self, endpoints: Sequence[Endpoint], now: float) -> None:
        """The cluster's endpoint set is now `endpoints`."""
        self._tiers, self._sizes = {}, [0] * TIERS
        self._split(endpoints)
        self.inner.update(endpoints, now)

    def load(self, endpoint: Endpoint, now: float) -> EndpointLoad:
        """The inner balancer's view of `endpoint`'s load."""
        return self.inner.load(endpoint, now)

    def _split(self, endpoints: Sequence[Endpoint]) -> list[list[Endpoint]]:
        tiers: list[list[Endpoint]] = [[] for _ in range(TIERS)]
        for e in endpoints:
            tier = self._tiers.get(e.id)
            if tier is None:
                tier = self._tiers[e.id] = self.tier(e)
                self._sizes[tier] += 1
            tiers[tier].append(e)
        return tiers

    def _shares(
        self, tiers: list[list[Endpoint]], now: float, *, mesh_wide: bool = True
    ) -> list[float]:
        shares, left = [0.0] * TIERS, 1.0
        for tier, members in enumerate(tiers):
            if left <= 0:
                break  # the tiers before take everything: no need to look at loads here
            loads = [self.inner.load(e, now) for e in members]
            available = sum(not (x.saturated if mesh_wide else x.full) for x in loads)
            fraction = available / max(self._sizes[tier], self.policy.min_tier_size)
            shares[tier] = min(left, self.policy.overprovisioning * fraction)
            left -= shares[tier]
        total = sum(shares)
        return [s / total for s in shares] if 0 < total < 1 else shares
