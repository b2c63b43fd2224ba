"""Run `bench balance` end to end: progress, table, targets, notes, JSON and plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench._machine import machine_info
from bench._units import format_seconds
from sidecar import RoutePolicy

from . import Plan, _export, _run
from ._load import RowRun
from ._targets import RowSummary, judge, settle_note, summarise

_MARKS: Final = {True: "[green]met   [/]", False: "[red]missed[/]", None: "[yellow]n/a   [/]"}


def measure_and_report(plan: Plan, out: Path, console: Console) -> int:
    """Measure `plan`, report it on `console` and into `out`. Returns the exit code (0)."""
    results = _measure(plan, console)
    budget = RoutePolicy().retry.budget
    summaries = [
        summarise(run, budget, plan.block, plan.warmup_block)
        for runs in results.runs.values()
        for run in runs
    ]
    verdicts = judge(summaries)
    console.print(_table(plan, results, summaries))
    console.print("targets (ratios of this run):")
    for v in verdicts:
        console.print(f"  {_MARKS[v.met]}  {v.scenario}: {v.target}: {v.detail}")
    _print_notes(console, results, summaries)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    _export.write_json(out / "balance.json", _export.summary_json(results, summaries, verdicts,
                                                                  machine, budget))  # fmt: skip
    title = (
        f"bench balance ({plan.callers} callers per policy, {machine['cpu_count']} CPUs, "
        f"pin {plan.pin.value})"
    )
    _export.write_plot(out / "balance.png", results, summaries, title)
    console.print(f"wrote {out / 'balance.json'} and {out / 'balance.png'}")
    console.print(f"took {results.elapsed_s:.1f} s")
    return 0


def _measure(plan: Plan, console: Console) -> _run.Results:
    columns = (
        TextColumn("{task.description:<48}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} blocks"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=_run.blocks_total(plan))

        def tick(description: str, measured: bool) -> None:
            if description:
                progress.update(task, description=description)
            if measured:
                progress.advance(task)

        return _run.run(plan, tick, lambda what: progress.update(task, description=what))


def _table(plan: Plan, results: _run.Results, summaries: Sequence[RowSummary]) -> Table:
    table = Table(
        title=(
            f"bench balance: {plan.callers} callers per policy, {plan.rounds} blocks of "
            f"{plan.block} requests each, interleaved, after {plan.warmup_s:g} s of warm-up"
        ),
        caption=(
            "latency and shares (of the tries each replica was sent): measured blocks; "
            "failed and retries: every request, warm-up included"
        ),
    )
    for header in ("scenario", "policy", "n", "p50", "p99", "failed", "retries", "budget"):
        table.add_column(header, justify="left" if header in ("scenario", "policy") else "right")
    first = next(iter(results.runs.values()))[0].scenario
    for index in range(len(first.delays)):
        table.add_column(f"r{index}", justify="right")
    table.add_column("req/s", justify="right")
    previous = ""
    for s in summaries:
        scenario = next(r.scenario for r in results.runs[s.scenario])
        label = "" if s.scenario == previous else s.scenario
        if label:
            roles = ", ".join(
                f"r{i} {scenario.role(i)}" for i in range(len(scenario.delays))
                if scenario.role(i) != "fast"
            )  # fmt: skip
            label = f"{label}\n[dim]{roles}[/]"
        previous = s.scenario
        table.add_row(
            label,
            s.policy,
            str(s.n),
            _time(s.p50_s),
            _time(s.p99_s),
            _count(s.failed, bad=s.failed > 0),
            _count(s.retries, bad=s.retries > s.allowed_retries),
            f"{s.allowed_retries:g}",
            *(_share(share, scenario.role(i)) for i, share in enumerate(s.shares)),
            f"{s.requests_per_s:.0f}",
        )
    return table


def _time(value: float | None) -> str:
    return "—" if value is None else format_seconds(value)


def _count(value: int, *, bad: bool) -> str:
    return f"[red]{value}[/]" if bad else str(value)


def _share(share: float, role: str) -> str:
    text = f"{share * 100:.1f}%"
    return text if role == "fast" else f"[bold]{text}[/]"


def _print_notes(console: Console, results: _run.Results, summaries: Sequence[RowSummary]) -> None:
    """Cold starts, errors, short blocks, keyed rows' stickiness, client CPU, pinning."""
    notes: list[str] = []
    runs = {(r.scenario.name, r.row.name): r for rs in results.runs.values() for r in rs}
    for s in summaries:
        note = settle_note(s, runs[s.scenario, s.policy].blocks)
        if note:
            notes.append(note)
        run = runs[s.scenario, s.policy]
        if run.scenario.failing is not None:
            notes.append(_failing_note(run))
        if s.errors:
            errors = ", ".join(f"{n} {name}" for name, n in sorted(s.errors.items()))
            notes.append(f"{s.scenario}/{s.policy}: failed requests: {errors}")
        if s.short_blocks:
            notes.append(f"{s.scenario}/{s.policy}: {s.short_blocks} blocks cut short by the cap")
        if s.stickiness is not None:
            notes.append(
                f"{s.scenario}/{s.policy}: {s.stickiness * 100:.1f}% of keyed requests answered "
                "by their key's usual replica"
            )
    cpu = max((s.client_cpu_per_request_s for s in summaries), default=0.0)
    busiest = max((s.requests_per_s for s in summaries), default=0.0)
    notes.append(
        f"client CPU per request up to {format_seconds(cpu)}; at the busiest row's rate "
        f"({busiest:.0f} req/s) about {cpu * busiest * 100:.0f}% of one core"
    )
    cpus = results.pinned_cpus
    notes.append(
        f"placement: callers on one CPU, every replica on CPU {','.join(map(str, cpus))}"
        if cpus
        else "placement: not pinned"
    )
    console.print("notes:")
    for note in notes:
        console.print(f"  {note}")


def _failing_note(run: RowRun) -> str:
    """How often the failing replica was tried: once ejected, does it stay out?"""
    index = run.scenario.failing
    assert index is not None
    hit = [b for b in run.blocks if b.tries[index]]
    tries = sum(b.tries[index] for b in hit)
    span = run.blocks[-1].started_s + run.blocks[-1].elapsed_s if run.blocks else 0.0
    when = ", ".join(f"{b.started_s:.1f}" for b in hit[:12]) + (", …" if len(hit) > 12 else "")
    return (
        f"{run.scenario.name}/{run.row.name}: r{index} was sent {tries} requests over {span:.0f} s,"
        f" in {len(hit)} of {len(run.blocks)} blocks (starting at s {when})"
    )
