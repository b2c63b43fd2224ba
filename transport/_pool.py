"""Pooled, pre-faulted receive buffers.

First touch of fresh memory costs 4x to 30x a memcpy on this class of machine
(../shared/BASELINES.md), so message bodies are received into slabs that were faulted in
once and are reused: a slab is an anonymous mapping (transparent huge pages where the
kernel allows, which cuts the first-touch cost about 4x) populated at creation.

Invariants:
- A slab is idle (in `_idle`) or leased to exactly one `RecvBuffer`, never both.
- A `RecvBuffer` returns its slab when the last reference to it goes away; numpy arrays
  decoded from a body reference it (their `base` chain ends at it), so a slab goes back
  only when no array views it.
- Sizes are rounded up to four classes per power of two (at least 64 KiB), so a slab is
  reused by messages of about the same size and wastes at most a quarter.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ._limits import GiB, KiB

MIN_SLAB: Final = 64 * KiB
_MADV_POPULATE_WRITE: Final = 23  # Linux 5.14+; Python 3.11's mmap module lacks the name
_PAGE: Final = mmap.PAGESIZE


def size_class(nbytes: int) -> int:
    """The slab size that serves a body of `nbytes`."""
    if nbytes <= MIN_SLAB:
        return MIN_SLAB
    step = (1 << ((nbytes - 1).bit_length() - 1)) // 4
    return -(-nbytes // step) * step


def _mapped(size: int, prefault: bool) -> mmap.mmap:
    slab = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        slab.madvise(mmap.MADV_HUGEPAGE)
    if not prefault:
        return slab
    try:
        slab.madvise(_MADV_POPULATE_WRITE)
    except OSError:  # older kernel: touch one byte per page instead
        np.frombuffer(slab, dtype=np.uint8)[::_PAGE] = 0
    return slab


class _Slab:
    __slots__ = ("address", "memory", "size", "view")

    def __init__(self, size: int, prefault: bool) -> None:
        self.size = size
        self.memory = _mapped(size, prefault)
        self.view = memoryview(self.memory)
        self.address: int = np.frombuffer(self.memory, dtype=np.uint8).ctypes.data


@dataclass(frozen=True, slots=True)
class PoolStats:
    """How much memory the pool holds, and how much of it is lent out."""

    in_use: int
    in_use_bytes: int
    idle_bytes: int
    created: int


class RecvBuffer:
    """A leased slab holding one message body; the slab returns to the pool with the last reference.

    Numpy arrays made from `array()` keep it alive through their `base`.
    """

    __slots__ = ("__weakref__", "_pool", "_slab", "nbytes")

    def __init__(self, pool: BufferPool, slab: _Slab, nbytes: int) -> None:
        self._pool = pool
        self._slab = slab
        self.nbytes = nbytes

    @property
    def writable(self) -> memoryview:
        """The body's bytes, for the receiver to fill (no reference to `self` is kept)."""
        return self._slab.view[: self.nbytes]

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return {
            "shape": (self.nbytes,),
            "typestr": "|u1",
            "data": (self._slab.address, False),
            "version": 3,
        }

    def array(self) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """The body as a uint8 array whose base is this buffer (so views keep it leased)."""
        return np.asarray(self)

    def memory(self) -> memoryview:
        """The body as a memoryview that keeps this buffer leased."""
        return memoryview(self.array())  # type: ignore[arg-type]  # numpy stubs lack Buffer

    def __del__(self) -> None:
        self._pool._give_back(self._slab)


class BufferPool:
    """Pre-faulted receive buffers, reused across messages; thread-safe.

    Idle slabs beyond `max_idle_bytes` are unmapped instead of kept.
    """

    def __init__(self, max_idle_bytes: int = 2 * GiB) -> None:
        self._max_idle_bytes = max_idle_bytes
        self._idle: dict[int, list[_Slab]] = {}
        self._idle_bytes = 0
        self._in_use = 0
        self._in_use_bytes = 0
        self._created = 0
        self._lock = threading.Lock()

    def acquire(self, nbytes: int, *, prefault: bool = False) -> RecvBuffer:
        """A buffer of `nbytes` from an idle slab (faulted in by earlier use), or a new one.

        A new slab is pre-faulted only with `prefault` (as `warm` does): a peer that
        announces a body must send its bytes before they cost memory, so a few bytes of
        header cannot commit gigabytes (the huge-page hint keeps faults cheap meanwhile).
        """
        size = size_class(nbytes)
        with self._lock:
            free = self._idle.get(size)
            slab = free.pop() if free else None
            if slab is not None:
                self._idle_bytes -= size
            self._in_use += 1
            self._in_use_bytes += size
        if slab is None:
            slab = _Slab(size, prefault)
            with self._lock:
                self._created += 1
        return RecvBuffer(self, slab, nbytes)

    def warm(self, sizes: Iterable[int]) -> None:
        """Fault in one idle slab per size now, so the first messages of those sizes pay nothing."""
        held = [self.acquire(n, prefault=True) for n in sizes]
        del held

    def stats(self) -> PoolStats:
        """A snapshot of the pool's counters."""
        with self._lock:
            return PoolStats(self._in_use, self._in_use_bytes, self._idle_bytes, self._created)

    def _give_back(self, slab: _Slab) -> None:
        with self._lock:
            self._in_use -= 1
            self._in_use_bytes -= slab.size
            if self._idle_bytes + slab.size <= self._max_idle_bytes:
                self._idle.setdefault(slab.size, []).append(slab)
                self._idle_bytes += slab.size
