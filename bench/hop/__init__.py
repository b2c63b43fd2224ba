"""`bench hop`: what one and two sidecar hops add to a request, measured against HAProxy.

In one run, every server a child process, the routes of each group interleaved block by
block after a warm-up:

- mesh protocol, a 4 KiB float32 tensor, at 1 and 16 concurrent callers: direct to a
  `serve()` echo; through its sidecar (1 hop); through a caller sidecar and its sidecar
  (2 hops); through one and two HAProxy processes in TCP mode;
- HTTP `/svc/` passthrough, a small JSON POST: direct to an aiohttp app; through its
  sidecar's local HTTP listener; through HAProxy in HTTP mode;
- a 64 MiB tensor in shared memory: direct, and through two same-host sidecars.

Targets: sidecar added p50 per hop ≤ 1.5x HAProxy's; sidecar CPU per request ≤ 2x
HAProxy's; 64 MiB through two sidecars ≤ 1.2x direct. Without haproxy on PATH, its
routes are skipped and the targets that need them say "no peer".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from rich.console import Console

from bench._pinning import Pinning
from bench.transfer._schedule import Budget

from ._topology import SECTIONS, Section

RESULTS: Final = Path(__file__).resolve().parent.parent / "results"
CONCURRENCY: Final = (1, 16)

# A cell samples for `cell_s` (with at least `min_reps` requests), in blocks of about
# `block_s`; a slow one stops at `cap_s`. Quick: 16 cells in well under a minute in CI.
FULL: Final = Budget(
    cell_s=4.0, min_reps=50, max_reps=400_000, cap_s=20.0, block_s=0.05,
    warmup_s=0.3, min_warmup_reps=20, max_warmup_reps=5000,
)  # fmt: skip
QUICK: Final = Budget(
    cell_s=0.4, min_reps=10, max_reps=50_000, cap_s=3.0, block_s=0.03,
    warmup_s=0.05, min_warmup_reps=5, max_warmup_reps=500,
)  # fmt: skip

__all__ = ["add_arguments", "run"]

T = TypeVar("T")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench hop`."""
    parser.add_argument("--quick", action="store_true", help="a short budget per cell (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory ({RESULTS})")
    parser.add_argument(
        "--concurrency",
        type=_flag(_counts),
        default=CONCURRENCY,
        help="comma-separated numbers of concurrent callers (1,16)",
    )
    parser.add_argument(
        "--sections",
        type=_flag(_sections),
        default=SECTIONS,
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--pin",
        choices=[p.value for p in Pinning],
        default=Pinning.SPLIT.value,
        help="split: the callers on one CPU, every server on the other (stable ratios); "
        "none: the scheduler decides",
    )
    parser.add_argument(
        "--no-haproxy", action="store_true", help="leave the HAProxy peers out even if installed"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Measure, print the table and targets, write hop.json and hop.png."""
    from . import _haproxy
    from ._main import measure_and_report  # rich progress and matplotlib: only when run
    from ._runner import Plan

    plan = Plan(
        sections=tuple(args.sections),
        concurrency=tuple(args.concurrency),
        budget=QUICK if args.quick else FULL,
        pin=Pinning(args.pin),
        haproxy=None if args.no_haproxy else _haproxy.find(),
    )
    return measure_and_report(plan, args.out, console)


def _flag(parse: Callable[[str], T]) -> Callable[[str], T]:
    """`parse`, its ValueError turned into argparse's usage error (exit 2, with the message)."""

    def parse_flag(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse_flag


def _counts(text: str) -> tuple[int, ...]:
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
    if not counts or counts[0] < 1:
        raise ValueError(f"{text!r}: give one or more caller counts, each at least 1")
    return tuple(counts)


def _sections(text: str) -> tuple[Section, ...]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise ValueError(f"{text!r}: choose among {','.join(SECTIONS)}")
    return tuple(section for section in SECTIONS if section in names)
