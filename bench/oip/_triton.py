"""A real Triton for `bench oip`, run through tests/oip_upstream/servers.py as its tests do.

`python -m bench.oip._triton install` makes (or finds) the PyTriton venv; exit 0 with its
path printed, 3 when real model servers are off (ARROWMESH_MODEL_SERVERS), 1 when it
cannot be made, with the reason. `python -m bench.oip._triton serve READY WORKDIR` starts
the Triton echo model (tests/oip_upstream/models/triton_echo.py, its shared-memory
endpoints open), writes READY as JSON {"http", "grpc", "pid", "start_s"} once the model
answers ready, and stops Triton (its whole process group) on SIGTERM.

The fixture module lives in the repository's tests, which is on this child's PYTHONPATH
(`bench.hop._children.child_env`); a checkout without it exits 1 saying so.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Final

from bench.peers._base import write_ready

DISABLED: Final = 3


def main(argv: list[str]) -> int:
    """Run one command (see the module doc); returns the exit code."""
    if argv != ["install"] and (len(argv) != 3 or argv[0] != "serve"):
        print("usage: python -m bench.oip._triton install | serve READY WORKDIR", file=sys.stderr)
        return 2
    try:
        import pytest

        from tests.oip_upstream import servers
    except ImportError as exc:
        print(f"the model-server fixtures cannot be imported: {exc}", file=sys.stderr)
        return 1
    try:
        servers.skip_unless_enabled()
    except pytest.skip.Exception as exc:
        print(exc.msg, file=sys.stderr)
        return DISABLED
    try:
        venv = servers.venv_for(servers.TRITON)
        if argv == ["install"]:
            print(venv)
            return 0
        return _serve(venv, Path(argv[1]), Path(argv[2]))
    except pytest.fail.Exception as exc:
        print(exc.msg, file=sys.stderr)
        return 1
    except OSError as exc:  # the cache directory cannot be made or written, say
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _serve(venv: Path, ready: Path, workdir: Path) -> int:
    from tests.oip_upstream.servers import TRITON, ModelServer, free_ports  # imported by main

    signal.signal(signal.SIGTERM, _exit)
    http_port, grpc_port = free_ports(2)
    server = ModelServer(TRITON, venv, workdir, http_port, grpc_port)
    try:
        started = time.monotonic()
        server.start()
        assert server.proc is not None
        write_ready(str(ready), {
            "http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}",
            "pid": server.proc.pid, "start_s": time.monotonic() - started,
        })  # fmt: skip
        while True:
            signal.pause()  # until SIGTERM
    finally:
        server.stop()


def _exit(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the stop short
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
