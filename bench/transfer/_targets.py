"""The targets for arrowmesh-tcp, each a ratio of medians measured in the same run: pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from bench._units import KiB, MiB, format_size

from ._registry import FLOOR, OURS

Median = Callable[[str, int], float | None]


@dataclass(frozen=True, slots=True)
class Target:
    """At `size`, ours/peer <= `bound` ("at most"), or peer/ours >= `bound` ("faster")."""

    size: int
    peer: str
    bound: float
    form: Literal["at most", "faster"]

    def describe(self) -> str:
        """ "64 MiB: arrowmesh-tcp ≤ 1.25x tcp-raw"."""
        if self.form == "faster":
            return f"{format_size(self.size)}: {OURS} ≥ {self.bound:g}x faster than {self.peer}"
        return f"{format_size(self.size)}: {OURS} ≤ {self.bound:g}x {self.peer}"


TARGETS: Final = (
    Target(64 * MiB, FLOOR, 1.25, "at most"),
    Target(64 * MiB, "flight", 3.0, "faster"),
    Target(64 * MiB, "grpc-unary", 4.0, "faster"),
    Target(4 * KiB, FLOOR, 2.0, "at most"),
    Target(4 * KiB, "grpc-unary", 0.5, "at most"),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A target and where it stands: the measured ratio (None if a cell was not run)."""

    target: Target
    measured: float | None

    @property
    def passed(self) -> bool | None:
        """True or False, or None when not measured."""
        if self.measured is None:
            return None
        if self.target.form == "faster":
            return self.measured >= self.target.bound
        return self.measured <= self.target.bound

    def describe(self) -> str:
        """ "ours/peer = 1.08x" or "peer/ours = 4.20x", or "not measured"."""
        if self.measured is None:
            return "not measured"
        if self.target.form == "faster":
            return f"{self.target.peer}/ours = {self.measured:.2f}x"
        return f"ours/{self.target.peer} = {self.measured:.2f}x"


def judge(median: Median) -> list[Verdict]:
    """Every target against the medians of one run."""
    return [Verdict(target, _measure(target, median)) for target in TARGETS]


def _measure(target: Target, median: Median) -> float | None:
    ours, peer = median(OURS, target.size), median(target.peer, target.size)
    if ours is None or peer is None:
        return None
    return peer / ours if target.form == "faster" else ours / peer
