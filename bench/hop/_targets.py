"""The targets, each a ratio of two routes measured in the same run: pure.

- mesh protocol, at each caller count, for one hop and for two: the sidecar's added p50
  per hop ≤ 1.5x HAProxy's, and the sidecar's CPU per request (its hop processes
  together) ≤ 2x HAProxy's (its proxies together);
- a 64 MiB `alloc()` tensor through two sidecars: p50 ≤ 1.2x the direct round trip.

The issue sets no target for the HTTP passthrough: its ratios to HAProxy are reported as
information. Added p50 per hop = (p50 of the route - p50 of direct, same group) / hops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from bench._units import format_seconds

from ._topology import DIRECT, HAPROXY_1, HAPROXY_2, SIDECAR_1, SIDECAR_2, Section

Metric = Literal["added p50 per hop", "CPU per request", "p50"]

ADDED_BOUND: Final = 1.5
CPU_BOUND: Final = 2.0
LARGE_BOUND: Final = 1.2


class Measured(Protocol):
    """What a target reads of a cell."""

    @property
    def hops(self) -> int: ...

    @property
    def hop_cpu_per_request(self) -> float: ...

    @property
    def median(self) -> float: ...


class GroupLike(Protocol):
    """What a target needs to know of a group."""

    @property
    def key(self) -> str: ...

    @property
    def section(self) -> Section: ...

    @property
    def mode(self) -> str | None: ...


Lookup = Callable[[str, str], Measured | None]  # (group key, route) -> the cell, if measured


@dataclass(frozen=True, slots=True)
class Target:
    """subject's `metric` ≤ `bound` times peer's, in `group` (bound None: information)."""

    group: str
    section: Section
    metric: Metric
    subject: str
    peer: str
    bound: float | None

    def describe(self) -> str:
        """ "mesh-c1: sidecar-1hop added p50 per hop ≤ 1.5x haproxy-1hop's"."""
        bound = "vs" if self.bound is None else f"≤ {self.bound:g}x"
        return f"{self.group}: {self.subject} {self.metric} {bound} {self.peer}'s"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A target and where it stands: both values and their ratio, or why there is none."""

    target: Target
    subject_value: float | None = None
    peer_value: float | None = None
    why_not: str | None = None
    no_peer: bool = False

    @property
    def ratio(self) -> float | None:
        """subject / peer, or None when either is missing or the peer's is not positive."""
        if self.subject_value is None or self.peer_value is None or self.peer_value <= 0:
            return None
        return self.subject_value / self.peer_value

    @property
    def passed(self) -> bool | None:
        """True or False; None for information, or when there is no ratio."""
        ratio, bound = self.ratio, self.target.bound
        return None if ratio is None or bound is None else ratio <= bound

    def describe(self) -> str:
        """ "+85.2 µs vs +21.0 µs = 4.06x", or why there is no ratio."""
        if self.why_not is not None:
            return self.why_not
        sign = "+" if self.target.metric == "added p50 per hop" else ""
        values = f"{_seconds(self.subject_value, sign)} vs {_seconds(self.peer_value, sign)}"
        if self.ratio is None:
            return f"{values}: the peer's is not positive, no ratio"
        return f"{values} = {self.ratio:.2f}x"


def _seconds(value: float | None, sign: str) -> str:
    if value is None:
        return "-"
    return f"{sign if value >= 0 else '-'}{format_seconds(abs(value))}"


def targets(groups: Sequence[GroupLike]) -> list[Target]:
    """The targets of the groups this run measures, in report order."""
    found: list[Target] = []
    for g in groups:
        if g.section == "mesh":
            for subject, peer in ((SIDECAR_1, HAPROXY_1), (SIDECAR_2, HAPROXY_2)):
                found.append(Target(g.key, g.section, "added p50 per hop", subject, peer,
                                    ADDED_BOUND))  # fmt: skip
                found.append(Target(g.key, g.section, "CPU per request", subject, peer,
                                    CPU_BOUND))  # fmt: skip
        elif g.section == "http":
            found.append(Target(g.key, g.section, "added p50 per hop", SIDECAR_1, HAPROXY_1, None))
            found.append(Target(g.key, g.section, "CPU per request", SIDECAR_1, HAPROXY_1, None))
        elif g.mode == "alloc":
            found.append(Target(g.key, g.section, "p50", SIDECAR_2, DIRECT, LARGE_BOUND))
        else:
            found.append(Target(g.key, g.section, "p50", SIDECAR_2, DIRECT, None))
    return found


def added_per_hop(lookup: Lookup, group: str, route: str) -> float | None:
    """(p50 of `route` - p50 of direct) / hops in `group`; None if either is missing."""
    cell, direct = lookup(group, route), lookup(group, DIRECT)
    if cell is None or direct is None or cell.hops == 0:
        return None
    return (cell.median - direct.median) / cell.hops


def judge(
    found: Sequence[Target], lookup: Lookup, skipped: Mapping[tuple[Section, str], str]
) -> list[Verdict]:
    """Each target against the cells of one run; `skipped` says why a route is missing."""
    verdicts = []
    for t in found:
        if (t.section, t.peer) in skipped:
            verdicts.append(Verdict(t, why_not=skipped[t.section, t.peer], no_peer=True))
        elif (t.section, t.subject) in skipped:
            verdicts.append(Verdict(t, why_not=f"skipped: {skipped[t.section, t.subject]}"))
        else:
            verdicts.append(Verdict(t, _value(t, t.subject, lookup), _value(t, t.peer, lookup)))
    return verdicts


def _value(target: Target, route: str, lookup: Lookup) -> float | None:
    if target.metric == "added p50 per hop":
        return added_per_hop(lookup, target.group, route)
    cell = lookup(target.group, route)
    if cell is None:
        return None
    return cell.hop_cpu_per_request if target.metric == "CPU per request" else cell.median
