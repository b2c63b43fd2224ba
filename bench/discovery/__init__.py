"""`bench discovery`: how fast a replica appears in, and disappears from, a watching cluster.

For each backend (consul via the test emulator, or a real agent at CONSUL_HTTP_ADDR; mdns
on loopback; static file), replicas register and die while a cluster watches. Targets:
appearance ≤ 1 s after registration, removal ≤ 2 s after death.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from rich.console import Console

RESULTS: Final = Path(__file__).resolve().parent.parent / "results"

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench discovery`."""
    parser.add_argument("--quick", action="store_true", help="2 rounds per backend (CI)")
    parser.add_argument("--rounds", type=int, default=8, help="replica lives per backend (8)")
    parser.add_argument(
        "--backends",
        default="consul,mdns,static",
        help="comma-separated subset of consul,mdns,static",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory ({RESULTS})")


def run(args: argparse.Namespace, console: Console) -> int:
    """Measure each backend, print the table, write discovery.json."""
    from ._main import measure_and_report

    backends = [b for b in args.backends.split(",") if b]
    rounds = 2 if args.quick else args.rounds
    return measure_and_report(backends, rounds, args.out, console)
