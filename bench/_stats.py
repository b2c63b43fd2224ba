"""Summaries of latency samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, 99th percentile, mean and extremes of `n` samples, in seconds."""

    n: int
    median: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> Summary:
        """Summarise samples given in nanoseconds. Raises ValueError when there are none."""
        if not samples_ns:
            raise ValueError("no samples to summarise")
        seconds = np.asarray(samples_ns, dtype=np.float64) / 1e9
        return cls(
            n=len(seconds),
            median=float(np.median(seconds)),
            p99=float(np.percentile(seconds, 99)),
            mean=float(seconds.mean()),
            min=float(seconds.min()),
            max=float(seconds.max()),
        )
