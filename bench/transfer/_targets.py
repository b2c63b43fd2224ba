"""The targets, each measured in the same run: pure.

Every target is a ratio of medians (or a p99 against its own median), except the one
absolute bound the shared-memory issue states, zero-copy ≤ 100 µs, which is reported as
a measured value: absolute times move 2x between runs on these machines, so it informs
and does not pass or fail (shared/BASELINES.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from bench._stats import Summary
from bench._units import KiB, MiB, format_seconds, format_size

from ._registry import (
    COPY_FLOOR,
    DESCRIPTOR_FLOOR,
    FLOOR,
    OURS,
    RAY,
    SHM_COPY,
    SHM_ZEROCOPY,
)

Lookup = Callable[[str, int], Summary | None]
Form = Literal["at most", "faster", "p99 at most", "absolute"]


@dataclass(frozen=True, slots=True)
class Target:
    """A bound on `subject` at `size` (None: at every size of the run).

    "at most": subject/peer ≤ bound; "faster": peer/subject ≥ bound (medians);
    "p99 at most": the subject's p99/median ≤ bound; "absolute": its median ≤ bound s.
    """

    size: int | None
    peer: str
    bound: float
    form: Form
    subject: str = OURS

    def describe(self) -> str:
        """ "64 MiB: arrowmesh-tcp ≤ 1.25x tcp-raw"."""
        where = "every size" if self.size is None else format_size(self.size)
        if self.form == "faster":
            return f"{where}: {self.subject} ≥ {self.bound:g}x faster than {self.peer}"
        if self.form == "p99 at most":
            return f"{where}: {self.subject} p99 ≤ {self.bound:g}x its median"
        if self.form == "absolute":
            return f"{where}: {self.subject} ≤ {format_seconds(self.bound)} (absolute)"
        return f"{where}: {self.subject} ≤ {self.bound:g}x {self.peer}"


TARGETS: Final = (
    Target(64 * MiB, FLOOR, 1.25, "at most"),
    Target(64 * MiB, "flight", 3.0, "faster"),
    Target(64 * MiB, "grpc-unary", 4.0, "faster"),
    Target(4 * KiB, FLOOR, 2.0, "at most"),
    Target(4 * KiB, "grpc-unary", 0.5, "at most"),
    Target(64 * MiB, COPY_FLOOR, 1.1, "at most", SHM_COPY),
    Target(64 * MiB, RAY, 0.8, "at most", SHM_COPY),
    Target(64 * MiB, SHM_COPY, 2.0, "p99 at most", SHM_COPY),
    Target(None, SHM_ZEROCOPY, 100e-6, "absolute", SHM_ZEROCOPY),
    Target(None, DESCRIPTOR_FLOOR, 3.0, "at most", SHM_ZEROCOPY),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A target at one size and where it stands: the measured value (None if a cell was
    not run), or why it was skipped."""

    target: Target
    measured: float | None
    skipped: str | None = None

    @property
    def informational(self) -> bool:
        """An absolute bound: reported, never passed or failed."""
        return self.target.form == "absolute"

    @property
    def passed(self) -> bool | None:
        """True or False; None when not measured, skipped or informational."""
        if self.measured is None or self.informational:
            return None
        if self.target.form == "faster":
            return self.measured >= self.target.bound
        return self.measured <= self.target.bound

    def describe(self) -> str:
        """ "ours/peer = 1.08x", "p99/median = 1.40x", "82.1 µs, within it", or why not."""
        if self.skipped is not None:
            return f"skipped: {self.skipped}"
        if self.measured is None:
            return "not measured"
        form, value = self.target.form, self.measured
        if form == "absolute":
            side = "within" if value <= self.target.bound else "over"
            return f"measured {format_seconds(value)}, {side} it (informational on this machine)"
        if form == "p99 at most":
            return f"p99/median = {value:.2f}x"
        if form == "faster":
            return f"{self.target.peer}/ours = {value:.2f}x"
        return f"ours/{self.target.peer} = {value:.2f}x"


def judge(
    lookup: Lookup, sizes: Sequence[int], skipped: Mapping[str, str] | None = None
) -> list[Verdict]:
    """Every target against the cells of one run; `skipped` maps left-out peers to why."""
    why = skipped or {}
    verdicts = []
    for target in _at_sizes(TARGETS, sizes):
        if target.peer in why:
            verdicts.append(Verdict(target, None, why[target.peer]))
        else:
            verdicts.append(Verdict(target, _measure(target, lookup)))
    return verdicts


def _at_sizes(targets: Sequence[Target], sizes: Sequence[int]) -> list[Target]:
    """Each target; one per measured size for those that hold at every size."""
    expanded: list[Target] = []
    for t in targets:
        expanded.extend([t] if t.size is not None else [replace(t, size=s) for s in sizes])
    return expanded


def _measure(target: Target, lookup: Lookup) -> float | None:
    assert target.size is not None  # expanded by _at_sizes
    ours, peer = lookup(target.subject, target.size), lookup(target.peer, target.size)
    if ours is None or peer is None:
        return None
    if target.form == "absolute":
        return ours.median
    if target.form == "p99 at most":
        return ours.p99 / ours.median
    if target.form == "faster":
        return peer.median / ours.median
    return ours.median / peer.median
