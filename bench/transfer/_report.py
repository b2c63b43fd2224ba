"""The console report: one table of every cell, then where each target stands."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from bench._units import format_seconds, format_size

from ._registry import FLOOR, OURS
from ._runner import Results
from ._targets import Verdict


def ratio(results: Results, numerator: str, denominator: str, size: int) -> float | None:
    """median(numerator) / median(denominator) at `size`, or None if either is missing."""
    top, bottom = results.median(numerator, size), results.median(denominator, size)
    if top is None or bottom is None:
        return None
    return top / bottom


def gigabytes_per_second(size: int, median: float) -> float:
    """Bytes moved both ways per second, in GB/s (10^9)."""
    return 2 * size / median / 1e9


def table(results: Results) -> Table:
    """Median, p99, GB/s and ratios for each size and transport."""
    grid = Table(title="bench transfer: round trip of one tensor (send SIZE, get SIZE back)")
    for header in ("size", "transport", "n", "median", "p99", "GB/s"):
        grid.add_column(header, justify="left" if header in ("size", "transport") else "right")
    grid.add_column(f"÷ {FLOOR}", justify="right")
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
            "" if transport.name == OURS else _times(ratio(results, OURS, transport.name, size)),
        )


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_verdicts(console: Console, verdicts: Sequence[Verdict]) -> None:
    """One line per target: PASS, FAIL or not measured, with the measured ratio."""
    console.print("[bold]targets[/] (ratios of medians from this run)")
    for verdict in verdicts:
        mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]----[/]"}
        console.print(
            f"  {mark[verdict.passed]}  {verdict.target.describe()}: {verdict.describe()}"
        )
