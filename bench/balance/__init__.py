"""`bench balance`: how each balancer spreads load over uneven and failing replicas.

Two scenarios, each on 4 `serve()` replicas in child processes (127.0.0.1, port 0, ready
files), found through a static mesh file by proxyless `MeshClient`s, one client per
policy (peak_ewma, least_request, round_robin, and ring_hash with a spread of affinity
keys), its callers asyncio tasks sharing it:

- "slow": one replica 10x slower than the other three (2 ms vs 20 ms of asyncio.sleep);
- "failing": one replica raising `sidecar.Unavailable` on every request.

In each scenario the policies take turns in blocks of a fixed number of requests on the
same replicas (the order rotating every round), after an interleaved warm-up. Reported per
policy: p50/p99, failed requests, retries (every replica counts the tries it is sent;
retries = tries - requests) and each replica's share of the tries. Targets, ratios of one
run: slow: peak-EWMA p99 <= 0.33x round robin's; failing: 0 failed requests and retries
within the retry budget, for every policy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rich.console import Console

from bench._pinning import Pinning

RESULTS: Final = Path(__file__).resolve().parent.parent / "results"
SCENARIOS: Final = ("slow", "failing")

__all__ = ["Plan", "add_arguments", "run"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run measures, and how much of it."""

    scenarios: tuple[str, ...]
    callers: int
    """Concurrent callers (asyncio tasks) on each policy's client."""
    block: int
    """Requests per measured block."""
    rounds: int
    """Measured blocks per policy and scenario."""
    warmup_s: float
    """Wall time of the interleaved warm-up, per scenario (at least one round)."""
    warmup_block: int
    """Requests per warm-up block."""
    fast_s: float
    """Service time of a fast replica; the slow one takes `slow_factor` times as long."""
    slow_factor: float
    keys: int
    """Affinity keys the ring-hash callers draw from."""
    capacity: int = 0
    """Requests each replica advertises it takes at once (0: not advertised)."""
    timeout_s: float = 10.0
    """Each request's deadline (it bounds its retries too)."""
    block_cap_s: float = 60.0
    """A block still running after this stops starting requests (reported as short)."""
    pin: Pinning = Pinning.SPLIT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench balance`."""
    parser.add_argument(
        "--quick", action="store_true", help="4 callers, 3 rounds of 100, 2 s warm-up (CI)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory ({RESULTS})")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of slow,failing"
    )
    parser.add_argument("--callers", type=int, default=8, help="callers per policy's client (8)")
    parser.add_argument("--rounds", type=int, default=20, help="measured blocks per policy (20)")
    parser.add_argument("--block", type=int, default=500, help="requests per block (500)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=30.0,
        help="seconds of interleaved warm-up per scenario (30: three peak-EWMA time constants)",
    )
    parser.add_argument("--fast-ms", type=float, default=2.0, help="fast replica's service time")
    parser.add_argument("--keys", type=int, default=64, help="ring_hash's affinity keys (64)")
    parser.add_argument(
        "--capacity",
        type=int,
        default=0,
        help="requests each replica advertises it runs at once, in the mesh file (0: none)",
    )
    parser.add_argument(
        "--pin",
        choices=[p.value for p in Pinning],
        default=Pinning.SPLIT.value,
        help="split: the callers on one CPU, every replica on the other; none: the scheduler",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Measure, print the table and targets, write balance.json and balance.png."""
    from ._main import measure_and_report  # rich progress and matplotlib: only when run

    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    numbers = (args.callers, args.rounds, args.block, args.keys)
    if not scenarios or set(scenarios) - set(SCENARIOS) or min(numbers) < 1:
        console.print(
            f"[red]error:[/] scenarios must be among {','.join(SCENARIOS)}; "
            "callers, rounds, block and keys ≥ 1"
        )
        return 2
    if not (args.fast_ms > 0 and args.warmup >= 0 and args.capacity >= 0):
        console.print("[red]error:[/] --fast-ms must be > 0, --warmup and --capacity ≥ 0")
        return 2
    quick = args.quick
    plan = Plan(
        scenarios=tuple(s for s in SCENARIOS if s in scenarios),
        callers=4 if quick else args.callers,
        block=100 if quick else args.block,
        rounds=3 if quick else args.rounds,
        warmup_s=2.0 if quick else args.warmup,
        warmup_block=50 if quick else 200,
        fast_s=args.fast_ms / 1e3,
        slow_factor=10.0,
        keys=args.keys,
        capacity=args.capacity,
        pin=Pinning(args.pin),
    )
    return measure_and_report(plan, args.out, console)
