"""What a try's latency says about its endpoint, apart from the caller's own pauses.

The time a caller measures for a try includes its own stalls: a garbage-collection pause,
the scheduler running another process, a busy event loop. Every try in flight during one
comes back late, whichever endpoint served it, and a peak-sensitive estimate would hold
that spike against fast endpoints for many seconds (on a two-core machine with eight
callers, one 45 ms pause sent a 10x slower replica 3% of the traffic instead of 0.7%).

Replicas say how long they took (`took`, seconds, in a reply's params). The rest of the
observed time (network, transport, the caller) is the endpoint's overhead, and its floor,
a minimum that rises with time constant `decay`, is what reaching it costs on a good day.
A balancer learns from

    min(observed, took + floor)

so a caller's pause cannot make a fast endpoint look slow, a slow replica still looks slow
(its `took` says so), and a lasting network slowdown lifts the floor within a few `decay`.
A reply without a usable `took` counts as observed. A replica cannot look slower than it
was; one that under-reports by a constant only moves its floor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ._checks import check_seconds


@dataclass(slots=True)
class _Floor:
    value: float
    stamp: float


class LatencyFilter:
    """Per-endpoint overhead floors; `latency` turns an observed time into a sample."""

    __slots__ = ("_decay", "_floors")

    def __init__(self, decay: float = 10.0) -> None:
        check_seconds("decay", decay)
        self._decay = decay
        self._floors: dict[str, _Floor] = {}

    def latency(self, endpoint_id: str, observed: float, took: object, now: float) -> float:
        """The sample to learn from: `observed` seconds, bounded by `took` plus the floor.

        `took` is whatever the reply said (validated here: a finite number >= 0, else
        ignored).
        """
        if isinstance(took, bool) or not isinstance(took, int | float):
            return observed
        if not 0.0 <= took < math.inf:
            return observed
        served = min(float(took), observed)
        overhead = observed - served
        floor = self._floors.get(endpoint_id)
        if floor is None:
            self._floors[endpoint_id] = _Floor(overhead, now)
            return observed
        if overhead <= floor.value:
            floor.value = overhead
        else:
            w = math.exp(-max(now - floor.stamp, 0.0) / self._decay)
            floor.value = floor.value * w + overhead * (1.0 - w)
        floor.stamp = now
        return min(observed, served + floor.value)

    def floor(self, endpoint_id: str) -> float | None:
        """The endpoint's overhead floor, seconds (None before its first report)."""
        floor = self._floors.get(endpoint_id)
        return None if floor is None else floor.value

    def retain(self, endpoint_ids: Iterable[str]) -> None:
        """Forget the endpoints not in `endpoint_ids` (they left, or came back anew)."""
        keep = set(endpoint_ids)
        for endpoint_id in [e for e in self._floors if e not in keep]:
            del self._floors[endpoint_id]
