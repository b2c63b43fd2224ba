"""`bench all`: every benchmark in turn, then REPORT.md and where each target stands.

Each benchmark runs with its own defaults (or `--quick`), writing its JSON and plot into
`--out`; one that fails is reported and the others still run. The report is then written
from what is in `--out`, so a benchmark that failed this time shows its previous result
with that run's date.
"""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Final, Protocol, cast

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench._errors import BenchError
from bench.report import REPORT, RESULTS, print_targets, write_report

# The benchmarks `all` runs, in order: the quick ones first, so a broken setup shows early.
SUITE: Final = ("discovery", "transfer", "hop", "balance", "oip", "soak")

__all__ = ["SUITE", "add_arguments", "run"]


class _Benchmark(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, console: Console) -> int: ...


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench all`."""
    parser.add_argument("--quick", action="store_true", help="each benchmark's short form (CI)")
    parser.add_argument(
        "--only",
        default=",".join(SUITE),
        help=f"comma-separated benchmarks to run (default: {','.join(SUITE)})",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"output directory ({RESULTS})")
    parser.add_argument("--report", type=Path, default=REPORT, help=f"the report ({REPORT})")


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the chosen benchmarks, write the report, print the targets."""
    names = [name for name in args.only.split(",") if name]
    unknown = sorted(set(names) - set(SUITE))
    if unknown or not names:
        console.print(f"[red]error:[/] --only takes some of {','.join(SUITE)}, not {args.only!r}")
        return 2
    failed = []
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        overall = progress.add_task("bench all", total=len(names))
        for name in names:
            progress.update(overall, description=f"bench {name}")
            started = time.monotonic()
            code = _run_one(name, args, console)
            elapsed = time.monotonic() - started
            verdict = "[green]done[/]" if code == 0 else f"[red]failed (exit {code})[/]"
            progress.console.print(f"bench {name}: {verdict} in {elapsed:.0f} s")
            if code != 0:
                failed.append(name)
            progress.advance(overall)
    targets = write_report(args.out, args.report)
    print_targets(console, targets)
    console.print(f"report: {args.report}")
    if failed:
        console.print(f"[red]did not finish:[/] {', '.join(failed)}")
        return 1
    return 0


def _run_one(name: str, args: argparse.Namespace, console: Console) -> int:
    module = cast(_Benchmark, importlib.import_module(f"bench.{name}"))
    parser = argparse.ArgumentParser(prog=f"sidecar bench {name}")
    module.add_arguments(parser)
    argv = ["--out", str(args.out), *(["--quick"] if args.quick else [])]
    try:
        return module.run(parser.parse_args(argv), console)
    except BenchError as exc:
        console.print(f"[red]error in bench {name}:[/] {exc}")
        return 1
