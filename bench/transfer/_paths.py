"""Did each arrowmesh client take the path it should? Judged from its counters: pure.

arrowmesh counts the bytes a client copies into shared memory and the bytes it moves by
reference (sent and received). Read once after a size's warm-up and once after its timed
cells (never inside the timed loop), the difference says which path the timed round
trips took. The same two readings show whether an arena was made while timing (the
arenas' total grew) and whether leases come back (how many are still held at the end).

`bytes_by_reference` counts both ways: descriptors sent and descriptors received. A reply
may come back by descriptor when the request went inline (the server places a reply of
`inline_threshold` bytes, an Arrow request of that size is still inline), so an inline
request is judged by the bytes copied in alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bench._units import MiB, format_size
from bench.peers._base import DataPath
from transport import ShmStats

# Between the two readings the leases a client holds may differ by those in flight: its
# last request's lease, held until the server's release arrives with the next message.
LEASES_IN_FLIGHT: Final = 2


@dataclass(frozen=True, slots=True)
class PathCheck:
    """What one (transport, size) cell's counters showed, and what was wrong with it."""

    transport: str
    size: int
    expected: DataPath
    round_trips: int
    bytes_copied: int | None  # during the timed cells; None: shared memory off
    bytes_by_reference: int | None
    arena_growth: int
    leases_before: int
    leases_after: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the cell took its path and left nothing behind."""
        return not self.problems


def check(
    transport: str,
    size: int,
    expected: DataPath,
    round_trips: int,
    before: ShmStats | None,
    after: ShmStats | None,
) -> PathCheck:
    """Judge one cell from the counters read before and after its timed round trips."""
    if before is None or after is None:
        problems = () if expected == "network" else ("shared memory is off in this client",)
        return PathCheck(transport, size, expected, round_trips, None, None, 0, 0, 0, problems)
    copied = after.bytes_copied - before.bytes_copied
    by_reference = after.bytes_by_reference - before.bytes_by_reference
    growth = after.arena_bytes - before.arena_bytes
    found = [
        *_path_problems(expected, copied, by_reference, round_trips * size),
        *_housekeeping_problems(growth, before.leases, after.leases),
    ]
    return PathCheck(
        transport,
        size,
        expected,
        round_trips,
        copied,
        by_reference,
        growth,
        before.leases,
        after.leases,
        tuple(found),
    )


def _path_problems(expected: DataPath, copied: int, by_reference: int, moved: int) -> list[str]:
    seen = f"{_mib(copied)} copied in, {_mib(by_reference)} by reference for {_mib(moved)} sent"
    if expected == "network":
        return [f"shared memory is on: {seen}"]
    if expected == "inline":
        return [] if copied == 0 else [f"expected inline, got {seen}"]
    if expected == "by-reference":
        return [] if copied == 0 and by_reference >= moved else [f"expected no copy, got {seen}"]
    return [] if copied >= moved else [f"expected every byte copied in, got {seen}"]


def _housekeeping_problems(growth: int, before: int, after: int) -> list[str]:
    found = []
    if growth > 0:
        found.append(f"arenas grew by {format_size(growth)} while timing")
    if after - before > LEASES_IN_FLIGHT:
        found.append(f"{after - before} leases not given back during the cell ({before} → {after})")
    return found


def _mib(nbytes: int) -> str:
    return f"{nbytes / MiB:,.1f} MiB"
