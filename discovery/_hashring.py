"""Ring hash with bounded loads: affinity keys stick to an endpoint, hot keys spill over.

Each endpoint owns points on a 64-bit ring, `vnodes` per unit of weight (weights divided by
their gcd, so equal weights of any size give `vnodes` each; the ring is scaled down only
past `max_ring_size`). A key hashes to a point and goes to the first owner clockwise. A
point depends only on its endpoint's id, so adding or removing one of N endpoints moves
only the keys it gains or loses, about 1/N of them. The hash is BLAKE2b, identical in
every process and on every platform: every caller maps a key to the same endpoint, which
is what makes a replica's KV cache reusable across sidecars.

Bounded loads (Mirrokni, Thorup, Zadimoghaddam 2017; Envoy's `hash_balance_factor`): with
`load_factor` c, an endpoint takes the request only while its outstanding requests stay
within ceil(c * (total + 1) * weight / total_weight); otherwise the walk goes on clockwise.
Some endpoint always fits, so one hot key spreads over its successors instead of drowning
its owner. The count is this caller's: the bound holds per caller, so it holds for the sum
over callers too. Candidates the router left out (ejected, tried) are skipped in the walk,
which moves only their keys.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

from ._balancer import LoadTracking, all_busy, require_candidates
from ._checks import check_at_least, check_seconds
from ._endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class RingHashPolicy:
    """Settings of the ring-hash balancer; raises ValueError on a bad value."""

    vnodes: int = 100
    """Points on the ring per unit of weight: more points, more even shares."""
    max_ring_size: int = 65536
    """Most points on the ring; weights are scaled down to fit."""
    load_factor: float | None = 1.25
    """c of bounded loads (>= 1); None: no bound, a key always goes to its owner."""
    report_ttl: float = 2.0
    """Seconds a replica's load report stays valid."""

    def __post_init__(self) -> None:
        check_at_least("vnodes", self.vnodes, 1)
        check_at_least("max_ring_size", self.max_ring_size, 1)
        if self.load_factor is not None:
            check_at_least("load_factor", self.load_factor, 1.0)
        check_seconds("report_ttl", self.report_ttl, zero=True)


def ring_hash(data: bytes) -> int:
    """The 64-bit ring position of `data`, the same in every process."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class RingHashBalancer(LoadTracking):
    """Consistent hashing on the affinity key, with bounded loads."""

    def __init__(self, rng: random.Random, policy: RingHashPolicy | None = None) -> None:
        self.policy = policy or RingHashPolicy()
        super().__init__(self.policy.report_ttl)
        self._rng = rng
        self._members: dict[str, Endpoint] = {}
        self._hashes: list[int] = []
        self._owners: list[str] = []
        self._points: dict[str, list[int]] = {}  # an id's point hashes, kept across rebuilds

    def pick(self, endpoints: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        """The owner of `key` on the ring, or the next with room and within the load bound.

        Without a key, a random point on the ring.
        """
        require_candidates(endpoints)
        allowed = {e.id: e for e in endpoints}
        if not allowed.keys() <= self._members.keys():
            self._rebuild([*self._members.values(), *endpoints])
        position = ring_hash(key) if key is not None else self._rng.getrandbits(64)
        chosen = self._walk(position, allowed, now)
        if chosen is None:
            raise all_busy(endpoints)
        return chosen

    def owner(self, key: bytes) -> str:
        """The id of the endpoint owning `key` on the ring, ignoring load (for tests, metrics)."""
        if not self._hashes:
            raise LookupError("the ring is empty: no endpoint has been announced")
        return self._owners[bisect.bisect_left(self._hashes, ring_hash(key)) % len(self._owners)]

    def _walk(self, position: int, allowed: dict[str, Endpoint], now: float) -> Endpoint | None:
        loads, c = self._loads, self.policy.load_factor
        total = weights = 0
        if c is not None:  # the bound counts the request being placed: total + 1
            total = sum(loads.outstanding(i) for i in allowed) + 1
            weights = sum(e.weight for e in allowed.values())
        owners, size = self._owners, len(self._owners)
        start = bisect.bisect_left(self._hashes, position)
        seen: set[str] = set()
        fallback: Endpoint | None = None
        for step in range(size):
            owner = owners[(start + step) % size]
            if owner in seen:
                continue
            seen.add(owner)
            e = allowed.get(owner)
            if e is not None and loads.has_room(e, now):
                if c is None:
                    return e
                bound = math.ceil(c * total * e.weight / weights - 1e-9)
                if loads.outstanding(owner) + 1 <= bound:
                    return e
                fallback = fallback or e
            if len(seen) == len(self._members):
                break
        return fallback

    def _updated(self, endpoints: Sequence[Endpoint], now: float) -> None:
        self._rebuild(endpoints)
        self._points = {i: p for i, p in self._points.items() if i in self._members}

    def _rebuild(self, endpoints: Sequence[Endpoint]) -> None:
        members = {e.id: e for e in endpoints}
        same = members.keys() == self._members.keys() and all(
            e.weight == self._members[i].weight for i, e in members.items()
        )
        self._members = members
        if same and self._hashes:
            return  # the ring depends on ids and weights only
        if not members:
            self._hashes, self._owners = [], []
            return
        unit = reduce(math.gcd, (e.weight for e in self._members.values()))
        wanted = {i: e.weight // unit * self.policy.vnodes for i, e in self._members.items()}
        scale = min(1.0, self.policy.max_ring_size / sum(wanted.values()))
        ring = sorted(
            (h, i) for i, n in wanted.items() for h in self._points_of(i, max(1, round(n * scale)))
        )
        self._hashes = [h for h, _ in ring]
        self._owners = [i for _, i in ring]

    def _points_of(self, endpoint_id: str, count: int) -> list[int]:
        points = self._points.setdefault(endpoint_id, [])
        for n in range(len(points), count):
            points.append(ring_hash(f"{endpoint_id}#{n}".encode()))
        return points[:count]
