"""The run's files: a JSON summary of every cell plus machine and targets, and a plot."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench._plot import plot_latency

from ._paths import PathCheck
from ._registry import COPY_FLOOR, DESCRIPTOR_FLOOR, FLOOR, OURS
from ._report import gigabytes_per_second, ratio, shm_floor_ratio
from ._runner import Results
from ._targets import Verdict

_FLOORS = (FLOOR, COPY_FLOOR, DESCRIPTOR_FLOOR)


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
        "skipped": [
            {"transport": s.name, "reason": s.reason, "hint": s.hint} for s in plan.skipped
        ],
        "elapsed_s": results.elapsed_s,
        "results": [_cell(results, t.name, size) for size in plan.sizes for t in plan.transports],
        "paths": [_path(check) for check in results.paths],
        "shm_leftovers": list(results.shm_leftovers),
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
        "ratio_to_shm_floor": shm_floor_ratio(results, transport, size),
        "ours_over_this": ratio(results, OURS, transport, size),
    }


def _path(check: PathCheck) -> dict[str, object]:
    return {
        "transport": check.transport,
        "size": check.size,
        "expected": check.expected,
        "round_trips": check.round_trips,
        "bytes_copied": check.bytes_copied,
        "bytes_by_reference": check.bytes_by_reference,
        "arena_growth": check.arena_growth,
        "leases_before": check.leases_before,
        "leases_after": check.leases_after,
        "ok": check.ok,
        "problems": list(check.problems),
    }


def _verdict(verdict: Verdict) -> dict[str, object]:
    target = verdict.target
    return {
        "target": target.describe(),
        "subject": target.subject,
        "size": target.size,
        "peer": target.peer,
        "form": target.form,
        "bound": target.bound,
        "measured": verdict.measured,
        "passed": verdict.passed,
        "informational": verdict.informational,
        "skipped": verdict.skipped,
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
    plot_latency(tmp, series, title, highlight=OURS, dashed=_FLOORS)
    os.replace(tmp, path)
