"""The receive buffer pool: size classes, reuse, leases that follow the arrays viewing them."""

from __future__ import annotations

import gc
import threading

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from transport import BufferPool
from transport._pool import MIN_SLAB, size_class


@given(st.integers(0, 1 << 40))
def test_size_class_fits_and_wastes_at_most_a_quarter(n: int) -> None:
    size = size_class(n)
    assert size >= n and size >= MIN_SLAB
    if n > MIN_SLAB:
        assert size - n < size // 4 + 1


def test_a_released_buffer_is_reused_not_reallocated() -> None:
    pool = BufferPool()
    first = pool.acquire(1 << 20)
    address = first.array().ctypes.data
    del first
    second = pool.acquire((1 << 20) - 100)
    assert second.array().ctypes.data == address
    assert pool.stats().created == 1


def test_arrays_viewing_a_buffer_keep_it_leased() -> None:
    pool = BufferPool()
    buf = pool.acquire(4096)
    view = np.frombuffer(buf.memory(), dtype=np.float32)[10:20].reshape(2, 5).T
    del buf
    gc.collect()
    assert pool.stats().in_use == 1
    del view
    assert pool.stats().in_use == 0


def test_buffers_are_writable_and_prefaulted_memory() -> None:
    pool = BufferPool()
    buf = pool.acquire(200_000)
    buf.writable[:] = b"\x07" * 200_000
    assert bytes(buf.memory()[:3]) == b"\x07\x07\x07"


def test_idle_memory_is_capped() -> None:
    pool = BufferPool(max_idle_bytes=1 << 20)
    held = [pool.acquire(1 << 19) for _ in range(4)]
    del held
    assert pool.stats().idle_bytes <= 1 << 20
    assert pool.stats().in_use == 0


def test_release_from_many_threads_keeps_counts_exact() -> None:
    pool = BufferPool()

    def churn() -> None:
        for i in range(300):
            buf = pool.acquire(1000 + i)
            del buf

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = pool.stats()
    assert stats.in_use == 0 and stats.in_use_bytes == 0
    assert stats.created <= 4


def test_warm_creates_idle_slabs_ahead_of_use() -> None:
    pool = BufferPool()
    pool.warm([1 << 20, 1 << 16])
    stats = pool.stats()
    assert stats.created == 2 and stats.in_use == 0 and stats.idle_bytes >= (1 << 20)
    pool.acquire(1 << 20)
    assert pool.stats().created == 2
