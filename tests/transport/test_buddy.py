"""The buddy allocator: no overlaps, alignment, full coalescing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport._buddy import Buddy


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 64).map(lambda n: n * 4096 * 3),
    st.lists(st.tuples(st.booleans(), st.integers(1, 200_000)), max_size=60),
)
def test_blocks_never_overlap_and_everything_coalesces_back(
    size: int, ops: list[tuple[bool, int]]
) -> None:
    buddy = Buddy(size)
    live: dict[int, int] = {}
    for alloc, n in ops:
        if alloc or not live:
            offset = buddy.alloc(n)
            if offset is None:
                assert buddy.stats().largest_free < n
                continue
            block = buddy.block(offset)
            assert block >= n and offset % block == 0 and offset + block <= buddy.size
            for other, other_block in live.items():
                assert offset + block <= other or other + other_block <= offset
            live[offset] = block
        else:
            offset = next(iter(live))
            buddy.free(offset)
            del live[offset]
    for offset in list(live):
        buddy.free(offset)
    stats = buddy.stats()
    assert stats.used == 0 and stats.requested == 0
    again = [buddy.alloc(4096) for _ in range(buddy.size // 4096)]
    assert None not in again  # every page is usable again


def test_fragmentation_is_reported() -> None:
    buddy = Buddy(16 * 4096)
    offsets = [buddy.alloc(4096) for _ in range(16)]
    for offset in offsets[::2]:
        assert offset is not None
        buddy.free(offset)
    stats = buddy.stats()
    assert stats.largest_free == 4096
    assert stats.fragmentation == pytest.approx(1 - 4096 / (8 * 4096))


def test_freeing_an_unknown_offset_raises_key_error() -> None:
    with pytest.raises(KeyError):
        Buddy(8192).free(4096)
