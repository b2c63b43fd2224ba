"""Pre-faulted memory: reusable buffers for the baselines' receive paths, shared mappings.

First touch of fresh memory costs 4x to 30x a memcpy on this class of machine
(shared/BASELINES.md), and our own link receives into pre-faulted pooled slabs, so every
baseline that can reuse a buffer gets one faulted in before timing starts: a fair peer.
"""

from __future__ import annotations

import mmap
from typing import Final

import numpy as np

_PAGE: Final = mmap.PAGESIZE
_MADV_POPULATE_WRITE: Final = 23  # Linux 5.14; not in the mmap module of Python 3.11


def prefaulted(nbytes: int) -> mmap.mmap:
    """An anonymous mapping of `nbytes` (huge pages where allowed) with every page touched."""
    memory = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    np.frombuffer(memory, dtype=np.uint8)[::_PAGE] = 1
    return memory


def prefault_shared(memory: mmap.mmap) -> None:
    """Fault in every page of a shared file mapping in this process, keeping its contents."""
    try:
        memory.madvise(_MADV_POPULATE_WRITE)
    except OSError:  # older kernels: a read of each page maps it, a write of it back dirties it
        pages = np.frombuffer(memory, dtype=np.uint8)[::_PAGE]
        pages[:] = pages


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
