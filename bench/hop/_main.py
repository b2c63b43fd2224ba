"""Run `bench hop` end to end: progress bar, table, targets, checks, JSON and plot."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench._machine import machine_info

from . import _export, _report, _runner, _targets


def measure_and_report(plan: _runner.Plan, out: Path, console: Console) -> int:
    """Measure `plan`, report it on `console` and into `out`. Returns the exit code (0)."""
    started = time.monotonic()
    results = _measure(plan, console)
    found = _targets.targets(results.groups)
    verdicts = _targets.judge(found, results.cell, results.topology.skipped)
    _report.print_notes(console, results.topology.notes)
    console.print(_report.table(results))
    _report.print_verdicts(console, verdicts)
    _report.print_checks(console, results)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    _export.write_json(out / "hop.json", _export.summary_json(results, verdicts, machine))
    title = f"bench hop ({machine['cpu_count']} CPUs, pin {plan.pin.value}, {machine['platform']})"
    _export.write_plot(out / "hop.png", results, title)
    console.print(f"wrote {out / 'hop.json'} and {out / 'hop.png'}")
    console.print(f"took {time.monotonic() - started:.1f} s")
    return 0


def _measure(plan: _runner.Plan, console: Console) -> _runner.Results:
    columns = (
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    groups = plan.groups()
    cells = sum(_routes_per_group(plan, g) for g in groups)
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=cells)

        def update(description: str, completed: float) -> None:
            progress.update(task, description=description, completed=completed)

        return _runner.run(plan, update)


def _routes_per_group(plan: _runner.Plan, group: _runner.Group) -> int:
    """An estimate for the progress bar (the servers decide the exact routes)."""
    with_haproxy = plan.haproxy is not None
    if group.section == "mesh":
        return 5 if with_haproxy else 3
    if group.section == "http":
        return 3 if with_haproxy else 2
    return 2
