"""Hedging: when to send a second try of a request that has not answered yet.

The delay is a quantile (p95 by default) of the cluster's recent latencies, clamped to
[`min_delay`, `max_delay`]: only the slowest 5% of requests are hedged, so hedges add about
5% to the load while cutting the tail (Dean and Barroso, "The Tail at Scale"). The quantile
is exact over a window of the last `samples` latencies no older than `max_age`: a sorted
copy is kept beside them, so observing costs one binary search and one list shift, and
reading costs an index. Until `min_samples` latencies are in, there is no delay: no hedge.

Hedges are opt-in per service, and each one must also fit the retry budget
(`Retrier.allow_hedge`); the first answer wins and the router cancels the other try.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

from ._checks import check_at_least, check_fraction, check_seconds


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """Settings of hedging; raises ValueError on a bad value."""

    quantile: float = 0.95
    """The quantile of recent latencies to wait before hedging."""
    min_delay: float = 0.001
    """Shortest wait before a hedge, in seconds."""
    max_delay: float = 1.0
    """Longest wait before a hedge, in seconds."""
    samples: int = 512
    """Most recent latencies the quantile is computed over."""
    min_samples: int = 20
    """Latencies needed before hedging starts."""
    max_age: float = 60.0
    """Seconds a latency stays in the window."""

    def __post_init__(self) -> None:
        check_fraction("quantile", self.quantile)
        check_seconds("min_delay", self.min_delay, zero=True)
        check_seconds("max_delay", self.max_delay, zero=True)
        if self.max_delay < self.min_delay:
            raise ValueError(
                f"max_delay={self.max_delay} must be at least min_delay={self.min_delay}"
            )
        check_at_least("samples", self.samples, 1)
        check_at_least("min_samples", self.min_samples, 1)
        if self.min_samples > self.samples:
            raise ValueError(
                f"min_samples={self.min_samples} must be at most samples={self.samples}"
            )
        check_seconds("max_age", self.max_age)


class LatencyWindow:
    """The last `size` latencies no older than `max_age`, with exact quantiles."""

    __slots__ = ("_arrived", "_max_age", "_size", "_sorted")

    def __init__(self, size: int, max_age: float) -> None:
        self._size = size
        self._max_age = max_age
        self._arrived: deque[tuple[float, float]] = deque()  # (time, latency), oldest first
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, latency: float, now: float) -> None:
        """Take a latency; raises ValueError if it is negative or not a number."""
        if not (latency >= 0 and math.isfinite(latency)):
            raise ValueError(f"latency={latency} must be a finite number of seconds >= 0")
        self.expire(now)
        self._arrived.append((now, latency))
        bisect.insort(self._sorted, latency)
        if len(self._arrived) > self._size:
            self._drop_oldest()

    def quantile(self, q: float, now: float) -> float | None:
        """The nearest-rank `q` quantile of the window, None if it is empty."""
        self.expire(now)
        if not self._sorted:
            return None
        rank = max(math.ceil(q * len(self._sorted)), 1)
        return self._sorted[rank - 1]

    def expire(self, now: float) -> None:
        """Drop latencies older than `max_age`."""
        while self._arrived and now - self._arrived[0][0] > self._max_age:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, latency = self._arrived.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, latency)]


class Hedger:
    """One cluster's hedge delay, from its recent latencies."""

    def __init__(self, policy: HedgePolicy | None = None) -> None:
        self.policy = policy or HedgePolicy()
        self._window = LatencyWindow(self.policy.samples, self.policy.max_age)

    def observe(self, latency: float, now: float) -> None:
        """A try took `latency` seconds.

        Feed every try, the cancelled loser of a hedge too, with its elapsed time: that is
        only a lower bound, but it is past the delay, so it still ranks above the quantile;
        leaving losers out would bias the quantile down and hedge ever more.
        """
        self._window.add(latency, now)

    def delay(self, now: float) -> float | None:
        """Seconds to wait before hedging a request sent at `now`; None: do not hedge."""
        self._window.expire(now)
        if len(self._window) < self.policy.min_samples:
            return None
        estimate = self._window.quantile(self.policy.quantile, now)
        assert estimate is not None  # the window is not empty
        return min(max(estimate, self.policy.min_delay), self.policy.max_delay)
