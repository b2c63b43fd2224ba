"""The console report: every cell's p50, p99 and count, and where each target stands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench._units import format_seconds, format_size

from ._paths import OipPath
from ._runner import Results


def table(results: Results) -> Table:
    """One row per path; per size its p50, p99, n, and p50 ÷ Triton's (same protocol and
    extension)."""
    sizes = results.plan.sizes
    grid = Table(title="bench oip: tritonclient round trips (send SIZE, get SIZE back)")
    grid.add_column("path", no_wrap=True)
    for size in sizes:
        label = format_size(size)
        for column in ("p50", "p99", "n", "÷ Triton"):
            grid.add_column(f"{label} {column}", justify="right")
    previous = None
    for path in results.plan.paths:
        if previous is not None and (previous.protocol, previous.shm) != (path.protocol, path.shm):
            grid.add_section()
        previous = path
        row = [path.label]
        for size in sizes:
            row += _cells(results, path, size)
        grid.add_row(*row)
    return grid


def _cells(results: Results, path: OipPath, size: int) -> list[str]:
    summary = results.summaries.get((path, size))
    if summary is None:
        return ["skipped" if (path, size) in results.skipped else "-", "", "", ""]
    triton = results.median(OipPath(path.protocol, "triton", path.shm), size)
    ratio = "" if triton is None else f"{summary.median / triton:.2f}x"
    return [format_seconds(summary.median), format_seconds(summary.p99), str(summary.n), ratio]


def print_targets(console: Console, targets: Sequence[Mapping[str, object]]) -> None:
    """Where each target stands."""
    grid = Table(title="targets", title_justify="left")
    for column in ("target", "measured", "status"):
        grid.add_column(column, overflow="fold")
    for t in targets:
        if t.get("skipped"):
            status = "[yellow]skipped[/]"
        else:
            status = "[green]met[/]" if t["met"] else "[red]missed[/]"
        grid.add_row(escape(str(t["target"])), escape(str(t["detail"])), status)
    console.print(grid)
