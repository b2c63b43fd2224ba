"""Run `bench oip` end to end: Triton's venv, progress bar, table, targets, JSON and plot."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench._machine import machine_info

from . import _export, _report, _runner, _stack, _targets


def triton_skipped(no_triton: bool, console: Console) -> str | None:
    """Why Triton's paths are left out this run (None: they run), said on `console`."""
    why = "--no-triton" if no_triton else _find_venv(console)
    if why is None:
        return None
    console.print(f"[yellow]note:[/] Triton's paths are skipped: {escape(why)}")
    return _stack.first_line(why)


def _find_venv(console: Console) -> str | None:
    started = time.monotonic()
    with console.status("Triton: finding or making the PyTriton venv (first run: ~30 s)"):
        why, venv = _stack.triton_venv()
    if why is None:
        console.print(f"Triton: PyTriton venv {venv} ({time.monotonic() - started:.1f} s)")
    return why


def measure_and_report(plan: _runner.Plan, out: Path, console: Console) -> int:
    """Measure `plan`, report it on `console` and into `out`. Returns the exit code (0)."""
    started = time.monotonic()
    results = _measure(plan, console)
    for note in results.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    targets = _targets.judge(results.median, results.skipped)
    console.print(_report.table(results))
    _report.print_targets(console, targets)
    if results.shm_leftovers:
        console.print(f"[red]left in the shared-memory directory:[/] {results.shm_leftovers}")
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    summary = _export.summary_json(results, targets, machine)
    _export.write_json(out / "oip.json", summary)
    title = f"tritonclient round trip, p50 ({machine['cpu_count']} CPUs, {machine['platform']})"
    _export.write_plot(out / "oip.png", results, title)
    console.print(f"wrote {out / 'oip.json'} and {out / 'oip.png'}")
    triton = results.triton_start_s
    console.print(
        f"took {time.monotonic() - started:.1f} s (processes up in {results.startup_s:.1f} s"
        + ("" if triton is None else f", Triton's model ready in {triton:.1f} s")
        + ")"
    )
    return 0


def _measure(plan: _runner.Plan, console: Console) -> _runner.Results:
    columns = (
        TextColumn("{task.description:<50}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    cells = plan.cells
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=cells)

        def update(description: str, completed: float) -> None:
            progress.update(task, description=description, completed=completed)

        return _runner.run(plan, update)
