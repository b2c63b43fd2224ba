"""A buddy allocator over one arena's data area: pure bookkeeping, no memory touched.

Blocks are powers of two, at least `min_block`, aligned to their size; freeing a block
merges it with its buddy while the buddy is free too. alloc and free are O(log size). The
area need not be a power of two: it is carved into descending power-of-two blocks, each
aligned, whose would-be buddies beyond the end are never free and so never merged.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BuddyStats:
    """Occupancy and fragmentation: `used` counts whole blocks, `requested` what was asked."""

    size: int
    used: int
    requested: int
    largest_free: int

    @property
    def fragmentation(self) -> float:
        """Share of the free space that the largest free block cannot serve (0 = none)."""
        free = self.size - self.used
        return 0.0 if free == 0 else 1.0 - self.largest_free / free


class Buddy:
    """Allocates offsets in [0, size); not thread-safe (the arena holds the lock)."""

    def __init__(self, size: int, min_block: int = 4096) -> None:
        if min_block & (min_block - 1) or size < min_block:
            raise ValueError(f"min_block={min_block} must be a power of two <= size={size}")
        self.size = size - size % min_block
        self._min_order = min_block.bit_length() - 1
        self._max_order = self.size.bit_length() - 1
        self._free: list[set[int]] = [set() for _ in range(self._max_order + 1)]
        self._taken: dict[int, tuple[int, int]] = {}  # offset -> (order, requested)
        self._used = 0
        self._requested = 0
        offset = 0
        for order in range(self._max_order, self._min_order - 1, -1):
            if self.size - offset >= 1 << order:
                self._free[order].add(offset)
                offset += 1 << order

    def alloc(self, nbytes: int) -> int | None:
        """The offset of a block of at least `nbytes`, or None if no block is large enough."""
        order = max(self._min_order, (max(nbytes, 1) - 1).bit_length())
        found = next((o for o in range(order, self._max_order + 1) if self._free[o]), None)
        if found is None:
            return None
        offset = self._free[found].pop()
        while found > order:
            found -= 1
            self._free[found].add(offset + (1 << found))
        self._taken[offset] = (order, nbytes)
        self._used += 1 << order
        self._requested += nbytes
        return offset

    def free(self, offset: int) -> None:
        """Return the block at `offset`; raises KeyError if it is not allocated."""
        order, nbytes = self._taken.pop(offset)
        self._used -= 1 << order
        self._requested -= nbytes
        while order < self._max_order:
            buddy = offset ^ (1 << order)
            if buddy not in self._free[order]:
                break
            self._free[order].remove(buddy)
            offset = min(offset, buddy)
            order += 1
        self._free[order].add(offset)

    def block(self, offset: int) -> int:
        """The size of the allocated block at `offset`."""
        return 1 << self._taken[offset][0]

    def stats(self) -> BuddyStats:
        """Occupancy and fragmentation now."""
        largest = next((1 << o for o in range(self._max_order, -1, -1) if self._free[o]), 0)
        return BuddyStats(self.size, self._used, self._requested, largest)
