"""The run's files: balance.json (every row, block and target, the machine) and balance.png."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use("Agg")
from matplotlib.axes import Axes

from bench.transfer._export import write_json
from discovery import RetryBudget

from ._load import PAYLOAD, RowRun, Scenario
from ._run import Results
from ._targets import SUBJECT, RowSummary, Verdict

__all__ = ["summary_json", "write_json", "write_plot"]

_FAST_COLOURS: Final = ("#1f77b4", "#aec7e8", "#9edae5")
_ODD_COLOUR: Final = "#d62728"


def summary_json(
    results: Results,
    summaries: Sequence[RowSummary],
    verdicts: Sequence[Verdict],
    machine: Mapping[str, object],
    budget: RetryBudget,
) -> dict[str, object]:
    """Everything a later reader needs to trust and compare this run."""
    plan = results.plan
    return {
        "benchmark": "balance",
        "machine": dict(machine),
        "settings": {
            **{k: v for k, v in dataclasses.asdict(plan).items() if k != "pin"},
            "pin": plan.pin.value,
            "payload_bytes": sum(a.nbytes for a in PAYLOAD.values()),
            "retry_budget": dataclasses.asdict(budget),
            "callers_are": "asyncio tasks sharing one proxyless MeshClient per policy",
            "retries_counted_by": "the replicas: tries each was sent, minus requests made",
        },
        "scenarios": {
            name: {
                "service": runs[0].scenario.service,
                "replicas": [
                    {"id": f"r{i}", "service_time_s": d, "role": runs[0].scenario.role(i)}
                    for i, d in enumerate(runs[0].scenario.delays)
                ],
            }
            for name, runs in results.runs.items()
        },
        "elapsed_s": results.elapsed_s,
        "pinned_cpus": results.pinned_cpus,
        "rows": [dataclasses.asdict(s) for s in summaries],
        "targets": [dataclasses.asdict(v) for v in verdicts],
        "blocks": [
            {
                "scenario": run.scenario.name,
                "policy": run.row.name,
                "blocks": [dataclasses.asdict(b) for b in run.blocks],
            }
            for runs in results.runs.values()
            for run in runs
        ],
    }


def write_plot(path: Path, results: Results, summaries: Sequence[RowSummary], title: str) -> None:
    """Per scenario: p50/p99 per policy; each replica's share per policy; peak-EWMA's
    share per replica, block by block, from its first request (the warm-up shaded)."""
    names = list(results.runs)
    figure, axes = plt.subplots(len(names), 3, figsize=(17, 5 * len(names)), dpi=100,
                                squeeze=False)  # fmt: skip
    try:
        for row, name in enumerate(names):
            scenario = results.runs[name][0].scenario
            mine = [s for s in summaries if s.scenario == name]
            _latency(axes[row][0], mine, name)
            _shares(axes[row][1], mine, scenario)
            subject = next((r for r in results.runs[name] if r.row.name == SUBJECT), None)
            if subject is not None:
                _over_time(axes[row][2], subject)
        figure.suptitle(title)
        figure.tight_layout()
        tmp = path.with_name(path.name + ".tmp")
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(figure)


def _colour(scenario: Scenario, index: int) -> str:
    if scenario.role(index) != "fast":
        return _ODD_COLOUR
    return _FAST_COLOURS[index % len(_FAST_COLOURS)]


def _latency(ax: Axes, summaries: Sequence[RowSummary], scenario: str) -> None:
    width = 0.38
    xs = range(len(summaries))
    for offset, (label, values, colour) in enumerate(
        (("p50", [s.p50_s for s in summaries], "#7f7f7f"),
         ("p99", [s.p99_s for s in summaries], "#ff7f0e"))
    ):  # fmt: skip
        heights = [0.0 if v is None else v * 1e3 for v in values]
        bars = ax.bar([x + (offset - 0.5) * width for x in xs], heights, width, label=label,
                      color=colour)  # fmt: skip
        ax.bar_label(bars, fmt="%.1f", fontsize="x-small")
    ax.set_xticks(list(xs), [s.policy.replace(" (", "\n(") for s in summaries], fontsize="small")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{scenario}: p50 and p99 per policy (measured blocks)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def _shares(ax: Axes, summaries: Sequence[RowSummary], scenario: Scenario) -> None:
    xs = list(range(len(summaries)))
    bottom = [0.0] * len(summaries)
    for index in range(len(scenario.delays)):
        heights = [s.shares[index] * 100 for s in summaries]
        role = scenario.role(index)
        bars = ax.bar(xs, heights, 0.6, bottom=bottom, color=_colour(scenario, index),
                      label=f"r{index}" + ("" if role == "fast" else f" ({role})"),
                      edgecolor="white")  # fmt: skip
        ax.bar_label(bars, labels=[f"{h:.1f}" if h >= 3 else "" for h in heights],
                     label_type="center", fontsize="x-small")  # fmt: skip
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    for x, s in zip(xs, summaries, strict=True):
        odd = [i for i in range(len(scenario.delays)) if scenario.role(i) != "fast"]
        odd_share = sum(s.shares[i] for i in odd) * 100
        ax.text(x, 101, f"{odd_share:.1f}%", ha="center", va="bottom", fontsize="x-small",
                color=_ODD_COLOUR)  # fmt: skip
    ax.set_xticks(xs, [s.policy.replace(" (", "\n(") for s in summaries], fontsize="small")
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("share of tries (%)")
    ax.set_title(f"{scenario.name}: traffic share per replica (red: the odd one, its share on top)")
    ax.legend(fontsize="x-small", loc="upper center", ncols=len(scenario.delays), frameon=False)


def _over_time(ax: Axes, run: RowRun) -> None:
    scenario = run.scenario
    blocks = [b for b in run.blocks if sum(b.tries)]
    times = [b.started_s + b.elapsed_s / 2 for b in blocks]
    for index in range(len(scenario.delays)):
        role = scenario.role(index)
        ax.plot(times, [b.tries[index] / sum(b.tries) * 100 for b in blocks], marker=".",
                color=_colour(scenario, index),
                label=f"r{index}" + ("" if role == "fast" else f" ({role})"))  # fmt: skip
    warm = [b for b in run.blocks if b.phase == "warmup"]
    if warm:
        end = max(b.started_s + b.elapsed_s for b in warm)
        ax.axvspan(0, end, color="#dddddd", alpha=0.5, label="warm-up")
    ax.axhline(100 / len(scenario.delays), color="#7f7f7f", linestyle=":", linewidth=1)
    ax.set_xlabel("seconds since the policy's first request (its blocks only)")
    ax.set_ylabel("share of the block's tries (%)")
    ax.set_title(f"{scenario.name}: {run.row.name}, block by block")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
