"""A toy model replica of the compose stack: `serve()` on loopback, fronted by a sidecar.

The replica listens on 127.0.0.1 only. Its sidecar shares the container's network namespace
(`network_mode: service:replica-N`), reaches it there, and is the one the mesh talks to.

    python model.py --replica replica-1 [--port 9000]   serve until SIGTERM
    python model.py --check [--port 9000]               exit 0 if the replica accepts connections

`--check` is the container's healthcheck: it imports neither numpy nor arrowmesh, so a probe
every few seconds stays cheap.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy.typing as npt

    Tensors = dict[str, npt.NDArray[Any]]

SERVICE = "embedder"
DEFAULT_PORT = 9000
_CHECK_TIMEOUT = 2.0  # seconds: a loopback connect either works at once or not at all


def build_parser() -> argparse.ArgumentParser:
    """The command line of model.py (the compose test parses each command with it)."""
    parser = argparse.ArgumentParser(prog="model.py", description=__doc__.splitlines()[0])
    parser.add_argument("--replica", default="replica", help="name put in every answer")
    parser.add_argument("--service", default=SERVICE, help="mesh service name")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="loopback port to serve on")
    parser.add_argument("--check", action="store_true", help="probe a running replica and exit")
    return parser


def check(port: int) -> int:
    """0 if something accepts connections on 127.0.0.1:`port`, else 1."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=_CHECK_TIMEOUT).close()
    except OSError:
        return 1
    return 0


def make_handler(replica: str) -> Callable[[Tensors], Tensors]:
    """The model: rows of `x` scaled to unit length, their norms, and who answered."""
    import numpy as np

    tag = np.array([replica.encode()], dtype=object)  # a BYTES tensor

    def embed(inputs: Tensors) -> Tensors:
        x = np.asarray(inputs["x"], dtype=np.float32)
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        return {"embedding": x / np.maximum(norm, 1e-12), "norm": norm[..., 0], "replica": tag}

    return embed


def main(argv: list[str] | None = None) -> int:
    """Serve the model until SIGTERM (or run the health probe); returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.check:
        return check(args.port)
    from sidecar import serve  # here, not at the top: --check must stay light

    # The shared-memory directory comes from ARROWMESH_SHM_DIR, as for every arrowmesh process.
    serve(make_handler(args.replica), service=args.service, host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
