"""`bench report`: REPORT.md from the results the benchmarks wrote, and where each target stands.

Reads `NAME.json` for every benchmark in `BENCHMARKS` found in the results directory,
writes one Markdown report (the machine each ran on, every target with its measured
ratio, each benchmark's main table and its plot) and prints the targets as a table.
`bench all` calls `write_report` after running the benchmarks; `bench report` redoes it
from results already on disk.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from bench._errors import BenchError

from ._summary import Target, tables_of, targets_of

RESULTS: Final = Path(__file__).resolve().parent.parent / "results"
REPORT: Final = Path(__file__).resolve().parent.parent / "REPORT.md"
# In the order the report shows them; a benchmark with no JSON yet is left out.
BENCHMARKS: Final = ("transfer", "discovery", "hop", "balance", "oip", "soak")
_TITLES: Final = {
    "transfer": "Moving one tensor: round trips against the floors and the peers",
    "discovery": "Discovery: registration to seen, death to dropped",
    "hop": "Sidecar hops: what one and two hops add, against HAProxy",
    "balance": "Balancing: one slow or one failing replica of four",
    "oip": "Open Inference Protocol front doors",
    "soak": "Fault soak",
}
_STATUS_STYLE: Final = {"met": "green", "missed": "red", "info": "dim", "skipped": "yellow"}

__all__ = ["BENCHMARKS", "REPORT", "RESULTS", "add_arguments", "run", "write_report"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `bench report`."""
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"where the JSON results are ({RESULTS})"
    )
    parser.add_argument("--report", type=Path, default=REPORT, help=f"the file to write ({REPORT})")


def run(args: argparse.Namespace, console: Console) -> int:
    """Write the report from the results on disk; print the targets."""
    targets = write_report(args.results, args.report)
    print_targets(console, targets)
    console.print(f"report: {args.report}")
    return 0


def write_report(results: Path, report: Path) -> list[Target]:
    """Write `report` from the JSON in `results`; returns every target. Raises BenchError."""
    loaded = {name: data for name in BENCHMARKS if (data := _load(results, name)) is not None}
    if not loaded:
        raise BenchError(f"no benchmark results in {results}: run `sidecar bench all` first")
    targets = [t for name, data in loaded.items() for t in targets_of(name, data)]
    text = _markdown(loaded, targets, results, report.parent)
    report.parent.mkdir(parents=True, exist_ok=True)
    partial = report.with_name(report.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(report)
    return targets


def print_targets(console: Console, targets: Sequence[Target]) -> None:
    """Where each target stands, as a table."""
    table = Table(title="targets", title_justify="left")
    for column in ("benchmark", "target", "measured", "status"):
        table.add_column(column, overflow="fold")
    for t in targets:
        style = _STATUS_STYLE[t.status]
        table.add_row(t.benchmark, t.target, t.measured, f"[{style}]{t.status}[/]")
    console.print(table)
    counts = {status: sum(t.status == status for t in targets) for status in _STATUS_STYLE}
    console.print(", ".join(f"{n} {status}" for status, n in counts.items() if n))


def _load(results: Path, name: str) -> Mapping[str, Any] | None:
    path = results / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path} is not a JSON object")
    return data


def _markdown(
    loaded: Mapping[str, Mapping[str, Any]],
    targets: Sequence[Target],
    results: Path,
    report_dir: Path,
) -> str:
    lines = [
        "# arrowmesh benchmark report",
        "",
        "Written by `sidecar bench all` (or `sidecar bench report` from results on disk).",
        "Every target is a ratio measured within one run, ours interleaved with the",
        "baseline; absolute times move about 2x between runs on a 2-core VM.",
        "",
        "## Targets",
        "",
        "| benchmark | target | measured | status |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t.benchmark} | {t.target} | {t.measured} | {t.status} |" for t in targets]
    lines += ["", "## Machines", "", "| benchmark | run at | CPUs | platform | Python | source |"]
    lines.append("|---|---|---|---|---|---|")
    for name, data in loaded.items():
        m = data.get("machine", {})
        lines.append(
            f"| {name} | {m.get('timestamp', '?')} | {m.get('cpus_usable', '?')} of "
            f"{m.get('cpu_count', '?')} | {m.get('platform', '?')} | {m.get('python', '?')} "
            f"| {m.get('source') or '?'} |"
        )
    for name, data in loaded.items():
        lines += ["", f"## {_TITLES.get(name, name)}", ""]
        lines.append(f"Reproduce: `sidecar bench {name}` (results: `{name}.json`).")
        for table in tables_of(name, data):
            lines += ["", table]
        plot = results / f"{name}.png"
        if plot.exists():
            relative = os.path.relpath(plot, report_dir)
            lines += ["", f"![{name}]({relative})"]
    return "\n".join(lines) + "\n"
