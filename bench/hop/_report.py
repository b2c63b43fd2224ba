"""The console report: one table of every cell, the targets, and the run's checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench._units import GiB, KiB, MiB, format_seconds
from bench.transfer._paths import PathCheck

from ._runner import Cell, Results
from ._targets import Verdict, added_per_hop
from ._topology import DIRECT


def table(results: Results) -> Table:
    """Median, p99, added latency per hop, CPU per request and rate of every cell."""
    grid = Table(title="bench hop: what a sidecar hop adds, against HAProxy (same run)")
    headers = ("group", "route", "n", "p50", "p99", "+p50/hop", "+p99/hop", "hop CPU/req",
               "server CPU/req", "req/s")  # fmt: skip
    for header in headers:
        grid.add_column(header, justify="left" if header in ("group", "route") else "right")
    for group in results.groups:
        cells = [c for c in results.cells.values() if c.group == group.key]
        for index, cell in enumerate(cells):
            grid.add_row(
                f"{group.key}\n[dim]{group.title}[/]" if index == 0 else "",
                f"[bold]{cell.route}[/]" if cell.via == "sidecar" else cell.route,
                str(cell.requests),
                format_seconds(cell.summary.median),
                format_seconds(cell.summary.p99),
                _added(added_per_hop(results.cell, group.key, cell.route)),
                _added(_added_p99(results, cell)),
                "-" if cell.via == "direct" else format_seconds(cell.hop_cpu_per_request),
                format_seconds(cell.backend_cpu_per_request),
                f"{cell.throughput:,.0f}",
            )
        grid.add_section()
    return grid


def _added_p99(results: Results, cell: Cell) -> float | None:
    direct = results.cell(cell.group, DIRECT)
    if direct is None or cell.hops == 0:
        return None
    return (cell.summary.p99 - direct.summary.p99) / cell.hops


def _added(value: float | None) -> str:
    if value is None:
        return "-"
    return ("+" if value >= 0 else "-") + format_seconds(abs(value))


def print_notes(console: Console, notes: Sequence[str]) -> None:
    """What the run left out, and why."""
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")


def print_verdicts(console: Console, verdicts: Sequence[Verdict]) -> None:
    """One line per target: met, missed, no peer, or information."""
    console.print("[bold]targets[/] (ratios from this run)")
    for v in verdicts:
        console.print(f"  {_mark(v)}  {escape(v.target.describe())}: {escape(v.describe())}")


_MARKS: Final = {True: "[green]met    [/]", False: "[red]missed [/]", None: "[yellow]-      [/]"}


def _mark(verdict: Verdict) -> str:
    if verdict.why_not is not None:
        return "[yellow]no peer[/]" if verdict.no_peer else "[yellow]skip   [/]"
    if verdict.target.bound is None:
        return "[cyan]info   [/]"
    return _MARKS[verdict.passed]


def print_checks(console: Console, results: Results) -> None:
    """The large tensors' paths, what the sidecars relayed, and the shm directory."""
    for check in results.paths:
        _print_path(console, check)
    for sidecar, modes in results.relayed.items():
        moved = ", ".join(f"{_amount(v)} {mode}" for mode, v in sorted(modes.items()))
        copied = modes.get("copied", 0.0)
        mark = "[green]ok  [/]" if copied == 0 else "[red]WARN[/]"
        console.print(f"  {mark}  {sidecar} relayed during the large groups: {moved or 'nothing'}")
    idle = ", ".join(f"{name} {value * 1e3:.1f}" for name, value in results.idle_cpu.items())
    console.print(f"CPU of the idle servers, ms per s (in every cell's CPU too): {idle}")
    if results.shm_leftovers:
        console.print(
            f"[red]leak:[/] {len(results.shm_leftovers)} files left in the shared-memory "
            f"directory after the servers stopped (now removed): {', '.join(results.shm_leftovers)}"
        )
    else:
        console.print("shared-memory directory empty after the servers stopped (removed)")


def _amount(nbytes: float) -> str:
    """ "12.50 GiB", "3.0 MiB", "0 B"."""
    for unit, name, digits in ((GiB, "GiB", 2), (MiB, "MiB", 1), (KiB, "KiB", 1)):
        if nbytes >= unit:
            return f"{nbytes / unit:.{digits}f} {name}"
    return f"{nbytes:.0f} B"


def _print_path(console: Console, check: PathCheck) -> None:
    mark = "[green]ok  [/]" if check.ok else "[red]WARN[/]"
    copied = "-" if check.bytes_copied is None else _amount(check.bytes_copied)
    console.print(
        f"  {mark}  {check.transport}: {check.expected}, {check.round_trips} round trips, "
        f"{copied} copied in by the client"
    )
    for problem in check.problems:
        console.print(f"          {escape(problem)}")
