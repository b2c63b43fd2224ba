"""Run `bench transfer` end to end: progress bar, table, targets, JSON and plot."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench._machine import machine_info

from . import _export, _report, _runner, _targets


def measure_and_report(plan: _runner.Plan, out: Path, console: Console) -> int:
    """Measure `plan`, report it on `console` and into `out`. Returns the exit code (0)."""
    started = time.monotonic()
    for skip in plan.skipped:
        console.print(f"[yellow]note:[/] {escape(skip.note())}")
    results = _measure(plan, console)
    skipped = {skip.name: skip.reason for skip in plan.skipped}
    verdicts = _targets.judge(results.summary, plan.sizes, skipped)
    console.print(_report.table(results))
    _report.print_paths(console, results.paths)
    _report.print_verdicts(console, verdicts)
    _report.print_leftovers(console, results.shm_leftovers)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    _export.write_json(out / "transfer.json", _export.summary_json(results, verdicts, machine))
    title = f"round trip, one tensor ({machine['cpu_count']} CPUs, {machine['platform']})"
    _export.write_plot(out / "transfer.png", results, title)
    console.print(f"wrote {out / 'transfer.json'} and {out / 'transfer.png'}")
    console.print(f"took {time.monotonic() - started:.1f} s")
    return 0


def _measure(plan: _runner.Plan, console: Console) -> _runner.Results:
    columns = (
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    cells = len(plan.sizes) * len(plan.transports)
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=cells)

        def update(description: str, completed: float) -> None:
            progress.update(task, description=description, completed=completed)

        return _runner.run(plan, update)
