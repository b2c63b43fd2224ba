"""Large memory copies split across cores.

One core does not saturate this class of machine's memory bandwidth: a 64 MiB copy takes
~9 ms on one thread and ~4.7 ms split in two (numpy releases the GIL while it copies).
`copy_parallel` is for worker threads (`asyncio.to_thread`): the calling thread copies
one part and waits for the others, which on an event loop would be a blocking wait.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ._limits import MiB

PARALLEL_MIN: Final = 8 * MiB
"""Copies below this many bytes stay on the calling thread (splitting costs ~50 µs)."""
_ALIGN: Final = 4096

_HELPERS: Final = min(4, os.cpu_count() or 1) - 1
"""Threads that copy beside the caller: one fewer than the cores, at most 3."""
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _helpers() -> ThreadPoolExecutor:
    """The shared helper threads, made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_HELPERS, thread_name_prefix="arrowmesh-copy")
        return _pool


def copy_parallel(dest: npt.NDArray[np.uint8], src: npt.NDArray[Any]) -> None:
    """`dest[:] = src` for two one-dimensional uint8 arrays of the same size, split across
    the calling thread and the helpers when large. Raises ValueError on a size mismatch."""
    if dest.shape != src.shape or dest.ndim != 1:
        raise ValueError(f"copy of {src.shape} into {dest.shape}: one-dimensional, same size")
    n = dest.size
    if n < PARALLEL_MIN or _HELPERS < 1:
        np.copyto(dest, src)
        return
    step = -(-n // (_HELPERS + 1) // _ALIGN) * _ALIGN  # a part per thread, page-aligned
    pool = _helpers()
    futures: list[Future[None]] = [
        pool.submit(np.copyto, dest[at : at + step], src[at : at + step])
        for at in range(step, n, step)
    ]
    np.copyto(dest[:step], src[:step])
    for future in futures:
        future.result()
