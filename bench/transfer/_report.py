"""The console report: one table of every cell, the paths taken, where each target stands,
and whether the shared-memory directory ended empty."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from bench._units import format_seconds, format_size

from ._paths import PathCheck
from ._registry import FLOOR, OURS, SHM_FLOORS
from ._runner import Results
from ._targets import Verdict


def ratio(results: Results, numerator: str, denominator: str, size: int) -> float | None:
    """median(numerator) / median(denominator) at `size`, or None if either is missing."""
    top, bottom = results.median(numerator, size), results.median(denominator, size)
    if top is None or bottom is None:
        return None
    return top / bottom


def shm_floor_ratio(results: Results, transport: str, size: int) -> float | None:
    """median(transport) / median(its shared-memory floor), for shared-memory transports."""
    floor = SHM_FLOORS.get(transport)
    return None if floor is None else ratio(results, transport, floor, size)


def gigabytes_per_second(size: int, median: float) -> float:
    """Bytes moved both ways per second, in GB/s (10^9)."""
    return 2 * size / median / 1e9


def table(results: Results) -> Table:
    """Median, p99, GB/s and ratios for each size and transport."""
    grid = Table(title="bench transfer: round trip of one tensor (send SIZE, get SIZE back)")
    for header in ("size", "transport", "n", "median", "p99", "GB/s"):
        grid.add_column(
            header,
            justify="left" if header in ("size", "transport") else "right",
            no_wrap=header == "transport",
        )
    grid.add_column(f"÷ {FLOOR}", justify="right")
    grid.add_column("÷ shm floor", justify="right")
    grid.add_column(f"{OURS} vs it", justify="right")
    for size in results.plan.sizes:
        _add_size(grid, results, size)
        grid.add_section()
    return grid


def _add_size(grid: Table, results: Results, size: int) -> None:
    for index, transport in enumerate(results.plan.transports):
        summary = results.summaries.get((transport.name, size))
        if summary is None:
            continue
        grid.add_row(
            format_size(size) if index == 0 else "",
            f"[bold]{transport.name}[/]" if transport.name == OURS else transport.name,
            str(summary.n),
            format_seconds(summary.median),
            format_seconds(summary.p99),
            f"{gigabytes_per_second(size, summary.median):.2f}",
            _times(ratio(results, transport.name, FLOOR, size)),
            _times(shm_floor_ratio(results, transport.name, size)),
            "" if transport.name == OURS else _times(ratio(results, OURS, transport.name, size)),
        )


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_paths(console: Console, checks: Sequence[PathCheck]) -> None:
    """Per arrowmesh client, the path its timed round trips took at each size; a WARN line
    for each cell where that was not the expected path or something was left behind."""
    if not checks:
        return
    console.print("[bold]paths[/] (arrowmesh counters, read after warm-up and after each cell)")
    for transport in dict.fromkeys(c.transport for c in checks):
        mine = [c for c in checks if c.transport == transport]
        mark = "[green]ok  [/]" if all(c.ok for c in mine) else "[red]WARN[/]"
        console.print(f"  {mark}  {transport:<24} {_paths_taken(mine)}")
        for check in mine:
            for problem in check.problems:
                console.print(f"          {format_size(check.size)}: {problem}")


def _paths_taken(checks: Sequence[PathCheck]) -> str:
    sizes: dict[str, list[str]] = {}
    for check in checks:
        sizes.setdefault(check.expected, []).append(format_size(check.size))
    return "; ".join(f"{path} at {', '.join(at)}" for path, at in sizes.items())


def print_verdicts(console: Console, verdicts: Sequence[Verdict]) -> None:
    """One line per target: PASS, FAIL, INFO (absolute), SKIP or not measured."""
    console.print("[bold]targets[/] (ratios from this run)")
    unmeasured = 0
    for verdict in verdicts:
        if verdict.measured is None and verdict.skipped is None:
            unmeasured += 1  # a subset run: said once below, not once per target
            continue
        console.print(f"  {_mark(verdict)}  {verdict.target.describe()}: {verdict.describe()}")
    if unmeasured:
        console.print(f"  [yellow]----[/]  {unmeasured} targets not measured: cells not run")


def _mark(verdict: Verdict) -> str:
    if verdict.skipped is not None:
        return "[yellow]SKIP[/]"
    if verdict.informational and verdict.measured is not None:
        return "[cyan]INFO[/]"
    return {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]----[/]"}[verdict.passed]


def print_leftovers(console: Console, leftovers: Sequence[str]) -> None:
    """Whether the run's shared-memory directory was empty once every process had left it."""
    if not leftovers:
        console.print("shared-memory directory empty after the servers stopped")
        return
    console.print(
        f"[red]leak:[/] {len(leftovers)} files left in the shared-memory directory after "
        f"the servers stopped (now removed): {', '.join(leftovers)}"
    )
