"""A toy model for `sidecar demo`: unit-normalises the rows of a float32 matrix."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import numpy.typing as npt

from ._serve import serve


def embed(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """Rows of `x` scaled to unit length, and their original norms."""
    x = np.asarray(inputs["x"], dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return {"embedding": x / np.maximum(norm, 1e-12), "norm": norm[..., 0]}


def main(argv: list[str] | None = None) -> None:
    """Serve the toy model until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m sidecar._toy")
    parser.add_argument("--service", default="embedder")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--uds", default=None)
    args = parser.parse_args(argv)
    serve(embed, service=args.service, uds_path=args.uds, ready_file=args.ready_file)


if __name__ == "__main__":
    main()
