"""The `serve()` replica of `bench oip`: an echo with a declared signature, for `bench._child`.

Each input `NAME` comes back as `out_NAME`, the same array: what the Triton echo model of
tests/oip_upstream/models/triton_echo.py does, so one tritonclient call suits both. The
signature is declared, so the sidecar in front answers model metadata as Triton does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy.typing as npt

import sidecar
from bench.peers._base import ServerArgs
from sidecar import TensorSpec

SERVICE: Final = "echo"
INPUT: Final = "u8"  # the payload: raw bytes, 2-d as the Triton echo model takes them
OUTPUT: Final = f"out_{INPUT}"
_FRAMING_ALLOWANCE: Final = 64 << 10  # a body is the tensor plus its framing


async def _echo(inputs: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    return {f"out_{name}": array for name, array in inputs.items()}


def serve(args: ServerArgs) -> None:
    """Serve the echo on 127.0.0.1 until SIGTERM, sharing memory in the run's directory."""
    sidecar.serve(
        _echo,
        service=SERVICE,
        host="127.0.0.1",
        port=0,
        ready_file=args.ready_file,
        warm_sizes=[size + _FRAMING_ALLOWANCE for size in args.sizes],
        shm_dir=args.shm_dir,
        inputs=[TensorSpec(INPUT, "UINT8", (-1, -1))],
        outputs=[TensorSpec(OUTPUT, "UINT8", (-1, -1))],
    )
