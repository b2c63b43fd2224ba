"""The run's files: oip.json (every cell, machine, settings, targets) and oip.png."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench._plot import plot_latency
from bench.transfer._export import write_json

from ._clients import ROUND_TRIP
from ._paths import OipPath
from ._runner import Results

__all__ = ["summary_json", "write_json", "write_plot"]


def summary_json(
    results: Results,
    targets: Sequence[Mapping[str, object]],
    machine: Mapping[str, object],
) -> dict[str, object]:
    """Everything a later reader needs to trust and compare this run."""
    plan = results.plan
    return {
        "benchmark": "oip",
        "machine": dict(machine),
        "settings": {
            "sizes": list(plan.sizes),
            "budget": dataclasses.asdict(plan.budget),
            "pin": plan.pin.value,
            "round_trip": ROUND_TRIP,
        },
        "notes": list(results.notes),
        "skipped": [
            {"path": p.key, "size": size, "reason": why}
            for (p, size), why in results.skipped.items()
        ],
        "elapsed_s": results.elapsed_s,
        "startup_s": results.startup_s,
        "triton_start_s": results.triton_start_s,
        "results": [
            _cell(results, path, size)
            for size in plan.sizes
            for path in plan.paths
            if (path, size) in results.summaries
        ],
        "shm_leftovers": list(results.shm_leftovers),
        "targets": [dict(t) for t in targets],
    }


def _cell(results: Results, path: OipPath, size: int) -> dict[str, object]:
    s = results.summaries[path, size]
    return {
        "path": path.key, "label": path.label, "protocol": path.protocol, "route": path.route,
        "shm": path.shm, "size": size, "n": s.n, "median_s": s.median, "p99_s": s.p99,
        "mean_s": s.mean, "min_s": s.min, "max_s": s.max,
    }  # fmt: skip


def write_plot(path: Path, results: Results, title: str) -> None:
    """p50 against size, one line per path; Triton's own paths dashed."""
    series = {
        p.label: [(size, s.median) for size in results.plan.sizes
                  if (s := results.summaries.get((p, size))) is not None]
        for p in results.plan.paths
    }  # fmt: skip
    series = {name: points for name, points in series.items() if points}
    dashed = {p.label for p in results.plan.paths if p.route == "triton"}
    tmp = path.with_name(path.name + ".tmp")
    plot_latency(tmp, series, title, dashed=dashed)
    os.replace(tmp, path)
