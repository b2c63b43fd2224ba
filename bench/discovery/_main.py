"""Run `bench discovery`: progress while measuring, then a table, targets and JSON."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final, cast

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench._errors import BenchError
from bench._machine import machine_info
from bench.transfer._export import write_json

from ._measure import BACKENDS, Backend, Round, measure

APPEAR_TARGET_S: Final = 1.0
REMOVE_TARGET_S: Final = 2.0


def measure_and_report(backends: Sequence[str], rounds: int, out: Path, console: Console) -> int:
    """Measure, print, write `out/discovery.json`; 0 once reported, 2 on bad arguments."""
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends or rounds < 1:
        console.print(f"[red]error:[/] backends must be among {','.join(BACKENDS)}; rounds ≥ 1")
        return 2
    results: dict[str, list[Round]] = {}
    with (
        Progress(console=console, transient=True) as progress,
        tempfile.TemporaryDirectory(prefix="arrowmesh-bench-discovery-") as workdir,
    ):
        for backend in backends:
            task = progress.add_task(f"discovery {backend}", total=rounds)
            try:
                results[backend] = asyncio.run(
                    measure(cast(Backend, backend), rounds, Path(workdir),
                            lambda task=task: progress.advance(task))  # type: ignore[misc]
                )  # fmt: skip
            except (OSError, RuntimeError) as exc:
                raise BenchError(f"discovery {backend}: {exc}") from exc
    summary = {backend: _summary(rows) for backend, rows in results.items()}
    console.print(_table(summary))
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "discovery.json",
        {
            "benchmark": "discovery",
            "machine": machine_info(),
            "targets": {"appear_s": APPEAR_TARGET_S, "remove_s": REMOVE_TARGET_S},
            "rounds": rounds,
            "backends": summary,
            "samples": {b: [[r.appear_s, r.remove_s] for r in rows] for b, rows in results.items()},
        },
    )
    console.print(f"wrote {out / 'discovery.json'}")
    return 0


def _summary(rows: Sequence[Round]) -> dict[str, object]:
    appear = [r.appear_s for r in rows if r.appear_s is not None]
    remove = [r.remove_s for r in rows if r.remove_s is not None]
    complete = len(appear) == len(rows) and len(remove) == len(rows)
    return {
        "appear_median_s": statistics.median(appear) if appear else None,
        "appear_max_s": max(appear) if appear else None,
        "remove_median_s": statistics.median(remove) if remove else None,
        "remove_max_s": max(remove) if remove else None,
        "missed_rounds": len(rows) - min(len(appear), len(remove)),
        # The worst round decides: a target met on median alone hides the slow tail.
        "appear_met": complete and max(appear) <= APPEAR_TARGET_S,
        "remove_met": complete and max(remove) <= REMOVE_TARGET_S,
    }


def _table(summary: dict[str, dict[str, object]]) -> Table:
    table = Table(title="discovery: registration → seen, death → dropped (seconds)")
    for column in ("backend", "appear p50", "appear max", "remove p50", "remove max", "targets"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for backend, s in summary.items():
        verdict = "[green]met[/]" if s["appear_met"] and s["remove_met"] else "[red]missed[/]"
        table.add_row(
            backend,
            _s(s["appear_median_s"]), _s(s["appear_max_s"]),
            _s(s["remove_median_s"]), _s(s["remove_max_s"]),
            f"{verdict} (≤{APPEAR_TARGET_S:g} / ≤{REMOVE_TARGET_S:g})",
        )  # fmt: skip
    return table


def _s(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "—"
