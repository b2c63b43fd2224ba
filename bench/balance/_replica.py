"""A replica for `bench balance`: `python -m bench.balance._replica READY SERVICE INDEX DELAY FAIL
[COUNTER]`.

A `serve()` echo on 127.0.0.1, port 0, shared memory off: each request sleeps DELAY
seconds (asyncio.sleep: the replica takes any number of requests at once, so its latency
does not grow with its load) and comes back with its inputs plus `who` = INDEX; with FAIL
"1" it raises `sidecar.Unavailable` instead, which callers see as UNAVAILABLE and retry
elsewhere. With COUNTER (a file path), how many requests it has been sent is kept in that
file, mapped: the bench reads it before and after each block, so it knows every try,
failed ones included, without sending the replica a request of its own (one that
succeeded would tell the replica's health that its app serves again).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from sidecar import Unavailable, serve


def main(argv: list[str]) -> int:
    """Serve until SIGTERM; returns 2 on bad usage."""
    if len(argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    ready, service, index, delay, fail = argv[:5]
    counter = None if len(argv) == 5 else np.memmap(argv[5], np.int64, mode="w+", shape=(1,))
    who = np.array([int(index)], dtype=np.int32)
    seconds, failing = float(delay), fail == "1"
    served = 0

    async def handle(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        nonlocal served
        served += 1
        if counter is not None:
            counter[0] = served
        if failing:
            raise Unavailable(f"bench replica {index} fails every request")
        await asyncio.sleep(seconds)
        return {**inputs, "who": who}

    serve(handle, service=service, ready_file=ready, shm_dir="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
