"""Smooth weighted round robin (nginx's): shares exactly proportional to `Endpoint.weight`.

Each pick, every candidate with room gains its weight in credit; the one with the most
credit is picked and pays the total it was gained against. Over any run of W picks (W the
sum of the weights) with the same candidates, each endpoint is picked exactly `weight`
times, and picks of one endpoint are spread out rather than bunched.

A new endpoint starts with a random credit below 1. Credits of endpoints with the same
integer credit are then told apart by that fraction alone, which orders ties at random per
caller (so N callers do not start in lock-step on the same endpoint) without changing the
shares.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ._balancer import LoadTracking, all_busy, require_candidates
from ._checks import check_seconds
from ._endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class RoundRobinPolicy:
    """Settings of the round-robin balancer; raises ValueError on a bad value."""

    report_ttl: float = 2.0
    """Seconds a replica's load report stays valid."""

    def __post_init__(self) -> None:
        check_seconds("report_ttl", self.report_ttl, zero=True)


class RoundRobinBalancer(LoadTracking):
    """Smooth weighted round robin over the endpoints with room."""

    def __init__(self, rng: random.Random, policy: RoundRobinPolicy | None = None) -> None:
        self.policy = policy or RoundRobinPolicy()
        super().__init__(self.policy.report_ttl)
        self._rng = rng
        self._credit: dict[str, float] = {}

    def pick(self, endpoints: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        """The next endpoint in weighted turn (`key` is not used)."""
        require_candidates(endpoints)
        credit, loads = self._credit, self._loads
        best: Endpoint | None = None
        best_credit = 0.0
        total = 0
        for e in endpoints:
            if not loads.has_room(e, now):
                continue
            c = credit.get(e.id)
            if c is None:
                c = self._rng.random()
            c += e.weight
            credit[e.id] = c
            total += e.weight
            if best is None or c > best_credit:
                best, best_credit = e, c
        if best is None:
            raise all_busy(endpoints)
        credit[best.id] = best_credit - total
        return best

    def _updated(self, endpoints: Sequence[Endpoint], now: float) -> None:
        ids = {e.id for e in endpoints}
        for endpoint_id in [i for i in self._credit if i not in ids]:
            del self._credit[endpoint_id]
