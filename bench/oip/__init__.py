"""`bench oip`: tritonclient through the sidecar's OIP front doors, against a real Triton.

In one run, every server a child process, HTTP and gRPC, 4 KiB and 64 MiB, tensors inline
(HTTP: binary extension) and through the system shared-memory extension, interleaved
block by block after a warm-up:

- tritonclient → Triton (PyTriton's tritonserver serving an echo model on the CPU);
- tritonclient → sidecar (--app-protocol oip-http / oip-grpc) → that Triton: the hop;
- tritonclient → sidecar → a `serve()` echo replica: the path users could switch to.

Targets (issue 8): the hop adds ≤ 0.3 ms p50 at 4 KiB; sidecar → serve() ≤ 0.5x Triton's
p50 at 4 KiB; at 64 MiB with system shm, sidecar → serve() ≥ 3x faster than Triton's own
system-shm path and ≥ 20x faster than plain gRPC to Triton. Triton comes from the test
fixtures (tests/oip_upstream/servers.py: a cached venv); when it cannot be had, or with
--no-triton or ARROWMESH_MODEL_SERVERS=off, its paths and targets are skipped, saying why.

A round trip is numpy in, numpy out, everything a client does per request (see
`_clients`): with system shm, the client writes its input into its region each time.
`--quick` (CI, ~25 s with the venv cached) has a short budget and measures sidecar →
Triton at 4 KiB only. Nothing is pinned by default: `--pin split` (client on one CPU,
every server on the other) made every path slower here (a quick run: 1.3-1.6x at 4 KiB),
as Triton's processes, the replica and three sidecars then share one CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from rich.console import Console

from bench._pinning import Pinning
from bench._units import KiB, MiB
from bench.transfer._schedule import Budget

RESULTS: Final = Path(__file__).resolve().parent.parent / "results"
SIZES: Final = (4 * KiB, 64 * MiB)

# A cell samples for `cell_s` (at least `min_reps` round trips), in blocks of about
# `block_s`; a slow one stops at `cap_s` (64 MiB through sidecar → Triton: 1.5-2 s a round
# trip).
FULL: Final = Budget(
    cell_s=4.0, min_reps=10, max_reps=100_000, cap_s=15.0, block_s=0.05,
    warmup_s=0.3, min_warmup_reps=3, max_warmup_reps=1000,
)  # fmt: skip
QUICK: Final = Budget(
    cell_s=0.3, min_reps=2, max_reps=10_000, cap_s=2.0, block_s=0.03,
    warmup_s=0.05, min_warmup_reps=1, max_warmup_reps=100,
)  # fmt: skip

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench oip`."""
    parser.add_argument("--quick", action="store_true", help="a short budget per cell (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory ({RESULTS})")
    parser.add_argument(
        "--no-triton", action="store_true", help="leave out the paths to Triton (no venv made)"
    )
    parser.add_argument(
        "--pin",
        choices=[p.value for p in Pinning],
        default=Pinning.NONE.value,
        help="none: the scheduler places every process (default); split: this client on "
        "one CPU, every server on the other",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Measure, print the table and targets, write oip.json and oip.png."""
    from ._main import measure_and_report, triton_skipped  # matplotlib: only when run
    from ._paths import every_path
    from ._runner import Plan

    paths = every_path()
    # 64 MiB through sidecar → Triton takes 2-7 s a round trip and is in no target.
    why = "--quick measures sidecar → Triton at 4 KiB only"
    large = [(p, size) for p in paths if p.route == "sidecar-triton" for size in SIZES[1:]]
    plan = Plan(
        paths=paths,
        sizes=SIZES,
        budget=QUICK if args.quick else FULL,
        pin=Pinning(args.pin),
        triton_skipped=triton_skipped(args.no_triton, console),
        left_out=dict.fromkeys(large, why) if args.quick else {},
    )
    return measure_and_report(plan, args.out, console)
