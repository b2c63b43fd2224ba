"""`bench soak`: steady load through sidecars while faults are injected; what it cost.

Three replicas (a `serve()` app and its sidecar each, as two processes of one container
would be) register in the Consul emulator; a caller sidecar routes to them; this process
sends a steady load through the caller sidecar. Every few seconds one fault, in turn:
a replica SIGKILLed and restarted, a replica SIGSTOPped (a hang) then resumed, the
Consul emulator restarted empty, the emulator stopped (an outage) then resumed, a
slow-loris client on the caller sidecar's mesh and HTTP ports, an oversized message, a
peer that disconnects mid-transfer. The report: requests sent, succeeded, failed by
reason, retried, and the caller sidecar's resources (RSS, descriptors, threads, tasks,
leases, shared memory) at the start and the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from rich.console import Console

RESULTS: Final = Path(__file__).resolve().parent.parent / "results"
QUICK_SECONDS: Final = 25.0

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench soak`."""
    parser.add_argument("--minutes", type=float, default=5.0, help="how long to soak (5)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_SECONDS:g} s, each fault once (CI)"
    )
    parser.add_argument("--callers", type=int, default=4, help="concurrent callers (4)")
    parser.add_argument("--fault-every", type=float, default=4.0, help="seconds between faults (4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory ({RESULTS})")


def run(args: argparse.Namespace, console: Console) -> int:
    """Soak, print the report, write soak.json."""
    from ._main import Plan, soak

    seconds = QUICK_SECONDS if args.quick else args.minutes * 60.0
    if seconds <= 0 or args.callers < 1 or args.fault_every <= 0:
        console.print("[red]error:[/] --minutes, --callers and --fault-every must be positive")
        return 2
    plan = Plan(seconds=seconds, callers=args.callers, fault_every=args.fault_every)
    return soak(plan, args.out, console)
