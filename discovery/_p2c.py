"""Least-request power of two choices: the less loaded of two random endpoints.

Load is relative to what the endpoint takes at once and to its weight, so a replica that
batches 8 requests, or weighs twice as much, gets its share. Mesh-wide reports count (see
`LoadTable`), so N callers do not each think a replica is idle.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ._balancer import LoadTracking, queue_factor, two_choices
from ._checks import check_seconds
from ._endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class LeastRequestPolicy:
    """Settings of the least-request balancer; raises ValueError on a bad value."""

    report_ttl: float = 2.0
    """Seconds a replica's load report stays valid."""

    def __post_init__(self) -> None:
        check_seconds("report_ttl", self.report_ttl, zero=True)


class LeastRequestBalancer(LoadTracking):
    """P2C on in-flight requests per slot and weight."""

    def __init__(self, rng: random.Random, policy: LeastRequestPolicy | None = None) -> None:
        self.policy = policy or LeastRequestPolicy()
        super().__init__(self.policy.report_ttl)
        self._rng = rng

    def pick(self, endpoints: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        """The less loaded of two random endpoints with room (`key` is not used)."""
        loads = self._loads

        def cost(e: Endpoint) -> float:
            return queue_factor(loads.in_flight(e.id, now), loads.limit(e, now)) / e.weight

        return two_choices(endpoints, self._rng, lambda e: loads.has_room(e, now), cost)
