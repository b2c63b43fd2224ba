"""SlidingCounts: two event counts over the last `window` seconds, without a clock.

The window is cut into `buckets` slices of equal width; a slice expires whole once it
falls out of the window, so a count covers between `window - width` and `window` seconds of
history. Adding and reading are O(1) amortised: running totals are kept, and expired slices
are subtracted as they fall out.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingCounts:
    """Counts of two kinds of event (`a` and `b`) in a sliding time window."""

    __slots__ = ("_a", "_b", "_buckets", "_slices", "_width")

    def __init__(self, window: float, buckets: int = 10) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window={window} must be a positive number of seconds")
        if buckets < 1:
            raise ValueError(f"buckets={buckets} must be at least 1")
        self._width = window / buckets
        self._buckets = buckets
        self._slices: deque[list[int]] = deque()  # [slice index, a, b], oldest first
        self._a = 0
        self._b = 0

    def add(self, now: float, a: int = 0, b: int = 0) -> None:
        """Count `a` and `b` events at time `now`."""
        index = self._expire(now)
        if self._slices and self._slices[-1][0] >= index:
            last = self._slices[-1]  # same slice (or the clock stepped back: count it there)
            last[1] += a
            last[2] += b
        else:
            self._slices.append([index, a, b])
        self._a += a
        self._b += b

    def totals(self, now: float) -> tuple[int, int]:
        """The `a` and `b` counts of the window ending at `now`."""
        self._expire(now)
        return self._a, self._b

    def clear(self) -> None:
        """Forget every event."""
        self._slices.clear()
        self._a = self._b = 0

    def _expire(self, now: float) -> int:
        index = math.floor(now / self._width)
        while self._slices and self._slices[0][0] <= index - self._buckets:
            _, a, b = self._slices.popleft()
            self._a -= a
            self._b -= b
        return index
