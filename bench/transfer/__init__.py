"""`bench transfer`: round trips of one tensor, arrowmesh against the floor and its peers."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from rich.console import Console

from bench._pinning import Pinning
from bench._units import KiB, MiB, parse_sizes

from . import _schedule
from ._registry import Transport, default_transports, select, skipped_by_default
from ._runner import Plan

SIZES: Final = (4 * KiB, 64 * KiB, 1 * MiB, 16 * MiB, 64 * MiB, 256 * MiB)
QUICK_SIZES: Final = (4 * KiB, 1 * MiB, 64 * MiB)
RESULTS: Final = Path(__file__).resolve().parent.parent / "results"

__all__ = ["add_arguments", "run"]

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench transfer`."""
    names = ",".join(t.name for t in default_transports())
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions (CI)")
    parser.add_argument(
        "--sizes", type=_flag(parse_sizes), help="comma-separated sizes, e.g. 4KiB,64MiB"
    )
    parser.add_argument(
        "--reps", type=_flag(_positive), help="repetitions per cell instead of a time budget"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory ({RESULTS})")
    parser.add_argument(
        "--transports", type=_flag(_transports), help=f"comma-separated subset of {names}"
    )
    parser.add_argument(
        "--pin",
        choices=[p.value for p in Pinning],
        default=Pinning.SPLIT.value,
        help="split: this client on one CPU, every server on another (stable ratios); "
        "none: the scheduler decides (small-message latency then moves 2x between runs)",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Measure, print the table and targets, write transfer.json and transfer.png."""
    from ._main import measure_and_report  # rich progress and matplotlib: only when run

    return measure_and_report(_plan(args), args.out, console)


def _plan(args: argparse.Namespace) -> Plan:
    budget = _schedule.QUICK if args.quick else _schedule.FULL
    if args.reps is not None:
        budget = dataclasses.replace(budget, fixed_reps=args.reps)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    transports = args.transports or default_transports()
    skipped = () if args.transports else skipped_by_default()
    return Plan(tuple(sizes), transports, budget, Pinning(args.pin), skipped)


def _flag(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse`, its ValueError turned into argparse's usage error (exit 2, with the message)."""

    def parse_flag(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_flag


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def _transports(text: str) -> tuple[Transport, ...]:
    return select([name.strip() for name in text.split(",") if name.strip()])
