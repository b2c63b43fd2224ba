"""CPU time of child processes, read from /proc between timed blocks (never inside one).

The figure used is the sum over a process's threads of the first field of
/proc/PID/task/TID/schedstat: nanoseconds spent on a CPU, exact. The usual figure,
utime + stime from /proc/PID/stat, comes in clock ticks (10 ms here), and a 50 ms block
costs a hop process only a few ticks: per-block differences would be mostly rounding. It
is read too and kept beside the other as a cross-check over whole cells.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_TICK_NS: Final = 1e9 / os.sysconf("SC_CLK_TCK")
# utime and stime are fields 14 and 15 of proc(5); split after the ")" that ends the
# command name, the state (field 3) is at index 0.
_UTIME: Final = 11


@dataclass(frozen=True, slots=True)
class CpuTime:
    """CPU time of one or more processes, in nanoseconds, by both counts."""

    sched_ns: int = 0
    stat_ns: int = 0

    def __add__(self, other: CpuTime) -> CpuTime:
        return CpuTime(self.sched_ns + other.sched_ns, self.stat_ns + other.stat_ns)

    def __sub__(self, other: CpuTime) -> CpuTime:
        # A thread that ended between readings takes its schedstat time with it: never < 0.
        return CpuTime(max(0, self.sched_ns - other.sched_ns), self.stat_ns - other.stat_ns)


def read(pid: int) -> CpuTime:
    """CPU time of `pid` so far. Raises OSError if the process is gone."""
    proc = Path(f"/proc/{pid}")
    fields = (proc / "stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[_UTIME]), int(fields[_UTIME + 1])
    sched = 0
    for task in (proc / "task").iterdir():
        try:
            sched += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while we listed them
    return CpuTime(sched, round((utime + stime) * _TICK_NS))


def read_all(pids: Iterable[int]) -> dict[int, CpuTime]:
    """CPU time of each of `pids`. Raises OSError if one is gone."""
    return {pid: read(pid) for pid in pids}


def spent(before: Mapping[int, CpuTime], after: Mapping[int, CpuTime]) -> CpuTime:
    """CPU time the processes of `before` spent until `after`, summed."""
    total = CpuTime()
    for pid, start in before.items():
        total = total + (after[pid] - start)
    return total
