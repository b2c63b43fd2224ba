"""The run's files: a JSON summary of every cell plus machine and targets, and a plot."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench._plot import plot_latency

from ._registry import FLOOR, OURS
from ._report import gigabytes_per_second, ratio
from ._runner import Results
from ._targets import Verdict


def summary_json(
    results: Results, verdicts: Sequence[Verdict], machine: Mapping[str, object]
) -> dict[str, object]:
    """Everything a later reader needs to trust and compare this run."""
    plan = results.plan
    return {
        "benchmark": "transfer",
        "machine": dict(machine),
        "settings": {
            "sizes": list(plan.sizes),
            "transports": [t.name for t in plan.transports],
            "budget": dataclasses.asdict(plan.budget),
            "pin": plan.pin.value,
        },
        "elapsed_s": results.elapsed_s,
        "results": [_cell(results, t.name, size) for size in plan.sizes for t in plan.transports],
        "targets": [_verdict(v) for v in verdicts],
    }


def _cell(results: Results, transport: str, size: int) -> dict[str, object]:
    summary = results.summaries[(transport, size)]
    return {
        "transport": transport,
        "size": size,
        "n": summary.n,
        "median_s": summary.median,
        "p99_s": summary.p99,
        "mean_s": summary.mean,
        "min_s": summary.min,
        "max_s": summary.max,
        "gb_per_s": gigabytes_per_second(size, summary.median),
        "ratio_to_floor": ratio(results, transport, FLOOR, size),
        "ours_over_this": ratio(results, OURS, transport, size),
    }


def _verdict(verdict: Verdict) -> dict[str, object]:
    target = verdict.target
    return {
        "target": target.describe(),
        "size": target.size,
        "peer": target.peer,
        "form": target.form,
        "bound": target.bound,
        "measured": verdict.measured,
        "passed": verdict.passed,
    }


def write_json(path: Path, data: Mapping[str, object]) -> None:
    """Write `data` as indented JSON, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_plot(path: Path, results: Results, title: str) -> None:
    """Median latency against size, one line per transport."""
    series = {
        t.name: [(size, results.summaries[(t.name, size)].median) for size in results.plan.sizes]
        for t in results.plan.transports
    }
    tmp = path.with_name(path.name + ".tmp")
    plot_latency(tmp, series, title, highlight=OURS)
    os.replace(tmp, path)
