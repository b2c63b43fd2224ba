"""A replica for `bench balance`: `python -m bench.balance._replica READY SERVICE INDEX DELAY FAIL`.

A `serve()` echo on 127.0.0.1, port 0, shared memory off: each request sleeps DELAY
seconds (asyncio.sleep: the replica takes any number of requests at once, so its latency
does not grow with its load) and comes back with its inputs plus `who` = INDEX; with FAIL
"1" it raises `sidecar.Unavailable` instead, which callers see as UNAVAILABLE and retry
elsewhere. A request whose inputs hold `served` is the bench asking, directly, how many
requests this replica has been sent (that one is not counted); the bench reads the count
before and after each block, so it knows every try, failed ones included.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from sidecar import Unavailable, serve

COUNT_KEY: Final = "served"


def main(argv: list[str]) -> int:
    """Serve until SIGTERM; returns 2 on bad usage."""
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    ready, service, index, delay, fail = argv
    who = np.array([int(index)], dtype=np.int32)
    seconds, failing = float(delay), fail == "1"
    served = 0

    async def handle(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        nonlocal served
        if COUNT_KEY in inputs:
            return {COUNT_KEY: np.array([served], dtype=np.int64), "who": who}
        served += 1
        if failing:
            raise Unavailable(f"bench replica {index} fails every request")
        await asyncio.sleep(seconds)
        return {**inputs, "who": who}

    serve(handle, service=service, ready_file=ready, shm_dir="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
