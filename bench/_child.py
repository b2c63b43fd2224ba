"""A server child: `python -m bench._child MODULE READY_FILE WORKDIR SHM_DIR SIZES PARENT`.

Imports MODULE and runs its `serve(ServerArgs)` until the parent terminates it. The child
lives in its own process group, so Ctrl-C reaches only the parent, which then stops every
child; on Linux it also gets SIGTERM should the parent die without cleaning up.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
from collections.abc import Callable
from typing import Final, cast

from bench.peers._base import ServerArgs

_PR_SET_PDEATHSIG: Final = 1
_SIGTERM: Final = 15


def main(argv: list[str]) -> int:
    """Run one server; returns when it stops (most are killed first)."""
    module_name, ready_file, workdir, shm_dir, sizes, parent = argv
    _die_with_parent(int(parent))
    module = importlib.import_module(module_name)
    serve = cast(Callable[[ServerArgs], None], module.serve)
    serve(ServerArgs(ready_file, workdir, tuple(int(s) for s in sizes.split(",") if s), shm_dir))
    return 0


def _die_with_parent(parent: int) -> None:
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, _SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
