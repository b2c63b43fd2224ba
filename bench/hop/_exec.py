"""`python -m bench.hop._exec PARENT CPUS PROGRAM [ARGS...]`: exec PROGRAM pinned, tied to PARENT.

Every child of `bench hop` (HAProxy and `sidecar run` included, which cannot do this
themselves) starts through here. PR_SET_PDEATHSIG survives execve, so the program gets
SIGTERM should the bench die without stopping it; the CPU set (`-`: any) is inherited by
every thread the program starts. The pid stays the same, so the bench reads the
program's CPU time from /proc/PID.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Final

_PR_SET_PDEATHSIG: Final = 1
_SIGTERM: Final = 15


def main(argv: list[str]) -> int:
    """Pin, arrange to die with the parent, exec; returns only on bad usage (2)."""
    if len(argv) < 3:
        print("usage: python -m bench.hop._exec PARENT CPUS PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    parent, cpus, *program = argv
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, _SIGTERM)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        return 1
    if cpus != "-":
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    os.execvp(program[0], program)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
