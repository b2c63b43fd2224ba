"""CPU placement for a benchmark run.

On two cores a blocking ping-pong takes 12-90 us depending on whether the scheduler puts
both ends on one CPU (measured: ../shared/BASELINES.md, and 12-86 us for tcp-raw between
runs here). Interleaving cannot undo that, since each transport gets its own placement;
pinning every transport the same way can: the client on one CPU, each server on another.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from enum import Enum


class Pinning(Enum):
    """How client and servers are placed on CPUs."""

    SPLIT = "split"
    NONE = "none"


@contextlib.contextmanager
def pinned(pin: Pinning) -> Iterator[frozenset[int] | None]:
    """Pin this process for the block; yields the CPU set for servers (None: unpinned).

    Falls back to no pinning with fewer than two usable CPUs or without `taskset`.
    """
    usable = sorted(os.sched_getaffinity(0))
    if pin is Pinning.NONE or len(usable) < 2 or shutil.which("taskset") is None:
        yield None
        return
    previous = set(usable)
    os.sched_setaffinity(0, {usable[0]})
    try:
        yield frozenset({usable[1]})
    finally:
        os.sched_setaffinity(0, previous)
