"""A model replica for the multi-host tests: `serve()` doubling "x" into "y".

    python -m tests.multihost._replica SERVICE PORT READY_FILE

Listens on 127.0.0.1:PORT of its network namespace, like a container whose sidecar shares
its network namespace (`network_mode: service:...`) and reaches it on loopback.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy.typing as npt

from sidecar import serve


async def double(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    return {"y": inputs["x"] * 2}


def main(argv: list[str]) -> None:
    service, port, ready_file = argv
    serve(double, service=service, host="127.0.0.1", port=int(port), ready_file=ready_file)


if __name__ == "__main__":
    main(sys.argv[1:])
