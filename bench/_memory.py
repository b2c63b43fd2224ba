"""Pre-faulted, reusable buffers for the baselines' receive paths.

First touch of fresh memory costs 4x to 30x a memcpy on this class of machine
(shared/BASELINES.md), and our own link receives into pre-faulted pooled slabs, so every
baseline that can reuse a buffer gets one faulted in before timing starts: a fair peer.
"""

from __future__ import annotations

import mmap
from typing import Final

import numpy as np

_PAGE: Final = mmap.PAGESIZE


def prefaulted(nbytes: int) -> mmap.mmap:
    """An anonymous mapping of `nbytes` (huge pages where allowed) with every page touched."""
    memory = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    np.frombuffer(memory, dtype=np.uint8)[::_PAGE] = 1
    return memory


class ReusedBuffer:
    """One pre-faulted buffer, replaced by a bigger one only when a message does not fit."""

    def __init__(self, nbytes: int = 0) -> None:
        self._memory = prefaulted(nbytes)
        self._view = memoryview(self._memory)

    def view(self, nbytes: int) -> memoryview:
        """The first `nbytes` of the buffer, growing it (pre-faulted) if needed."""
        if nbytes > len(self._view):
            self._memory = prefaulted(nbytes)
            self._view = memoryview(self._memory)
        return self._view[:nbytes]
