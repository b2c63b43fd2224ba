"""The run's files: hop.json (every cell, the targets, the checks, the machine) and hop.png."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use("Agg")
from matplotlib.axes import Axes

from bench.transfer._export import write_json

from ._loads import LARGE_NBYTES, MESH_NBYTES, http_body
from ._runner import Cell, Results
from ._targets import Verdict, added_per_hop
from ._topology import DIRECT, HAPROXY_1, HAPROXY_2, SIDECAR_1, SIDECAR_2

__all__ = ["summary_json", "write_json", "write_plot"]

Value = Callable[[Results, Cell], float | None]  # what a bar shows of a cell

_COLOURS: Final = {
    DIRECT: "#7f7f7f",
    SIDECAR_1: "#1f77b4",
    SIDECAR_2: "#aec7e8",
    HAPROXY_1: "#ff7f0e",
    HAPROXY_2: "#ffbb78",
}


def summary_json(
    results: Results, verdicts: Sequence[Verdict], machine: Mapping[str, object]
) -> dict[str, object]:
    """Everything a later reader needs to trust and compare this run."""
    plan, topology = results.plan, results.topology
    return {
        "benchmark": "hop",
        "machine": dict(machine),
        "settings": {
            "sections": list(plan.sections),
            "concurrency": list(plan.concurrency),
            "budget": dataclasses.asdict(plan.budget),
            "pin": plan.pin.value,
            "haproxy": plan.haproxy,
            "haproxy_version": topology.haproxy_version,
            "mesh_tensor_bytes": MESH_NBYTES,
            "http_body_bytes": len(http_body()),
            "large_tensor_bytes": LARGE_NBYTES,
            "cpu_source": "sum of /proc/PID/task/*/schedstat run time; stat_* from utime+stime",
        },
        "groups": [dataclasses.asdict(g) for g in results.groups],
        "notes": list(topology.notes),
        "skipped": [
            {"section": section, "route": route, "reason": reason}
            for (section, route), reason in topology.skipped.items()
        ],
        "elapsed_s": results.elapsed_s,
        "cells": [_cell(results, cell) for cell in results.cells.values()],
        "targets": [_verdict(v) for v in verdicts],
        "paths": [{**dataclasses.asdict(check), "ok": check.ok} for check in results.paths],
        "relayed_during_large": {k: dict(v) for k, v in results.relayed.items()},
        "idle_cpu_s_per_s": dict(results.idle_cpu),
        "shm_leftovers": list(results.shm_leftovers),
    }


def _cell(results: Results, cell: Cell) -> dict[str, object]:
    s = cell.summary
    direct = results.cell(cell.group, DIRECT)
    return {
        "group": cell.group,
        "route": cell.route,
        "via": cell.via,
        "hops": cell.hops,
        "concurrency": cell.concurrency,
        "n": s.n,
        "median_s": s.median,
        "p99_s": s.p99,
        "mean_s": s.mean,
        "min_s": s.min,
        "max_s": s.max,
        "added_p50_per_hop_s": added_per_hop(results.cell, cell.group, cell.route),
        "added_p99_per_hop_s": (
            None if direct is None or cell.hops == 0 else (s.p99 - direct.summary.p99) / cell.hops
        ),
        "median_over_direct": None if direct is None else s.median / direct.summary.median,
        "requests_per_s": cell.throughput,
        "wall_s": cell.wall_s,
        "blocks": cell.blocks,
        "hop_cpu_s_per_request": cell.hop_cpu_per_request,
        "hop_cpu_stat_s_per_request": cell.hop_cpu_stat_per_request,
        "server_cpu_s_per_request": cell.backend_cpu_per_request,
    }


def _verdict(v: Verdict) -> dict[str, object]:
    t = v.target
    return {
        "target": t.describe(),
        "group": t.group,
        "metric": t.metric,
        "subject": t.subject,
        "peer": t.peer,
        "bound": t.bound,
        "subject_value": v.subject_value,
        "peer_value": v.peer_value,
        "ratio": v.ratio,
        "passed": v.passed,
        "informational": t.bound is None,
        "why_not": v.why_not,
        "no_peer": v.no_peer,
    }


def write_plot(path: Path, results: Results, title: str) -> None:
    """Four panels: mesh added p50 per hop, mesh hop CPU per request, HTTP, large tensor."""
    figure, axes = plt.subplots(2, 2, figsize=(13, 9), dpi=110)
    try:
        mesh = [g.key for g in results.groups if g.section == "mesh"]
        http = [g.key for g in results.groups if g.section == "http"]
        large = [g.key for g in results.groups if g.section == "large"]
        hops = (SIDECAR_1, SIDECAR_2, HAPROXY_1, HAPROXY_2)
        _bars(axes[0][0], results, mesh, hops, _added_us, "added p50 per hop (µs)")
        axes[0][0].set_title("mesh protocol, 4 KiB: added latency per hop")
        _bars(axes[0][1], results, mesh, hops, _cpu_us, "hop CPU per request (µs)")
        axes[0][1].set_title("mesh protocol, 4 KiB: CPU of the hop processes per request")
        _bars(axes[1][0], results, http, (DIRECT, SIDECAR_1, HAPROXY_1), _p50_us, "p50 (µs)")
        axes[1][0].set_title("HTTP POST, small JSON: median round trip")
        _bars(axes[1][1], results, large, (DIRECT, SIDECAR_2), _p50_us, "p50 (µs)")
        axes[1][1].set_title("64 MiB in shared memory: median round trip")
        if large:
            axes[1][1].set_yscale("log")
        figure.suptitle(title)
        figure.tight_layout()
        tmp = path.with_name(path.name + ".tmp")
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(figure)


def _added_us(results: Results, cell: Cell) -> float | None:
    value = added_per_hop(results.cell, cell.group, cell.route)
    return None if value is None else value * 1e6


def _cpu_us(results: Results, cell: Cell) -> float | None:
    return cell.hop_cpu_per_request * 1e6


def _p50_us(results: Results, cell: Cell) -> float | None:
    return cell.summary.median * 1e6


def _bars(
    ax: Axes,
    results: Results,
    groups: Sequence[str],
    routes: Sequence[str],
    value: Value,
    ylabel: str,
) -> None:
    """Grouped bars: one group of bars per run group, one bar per route, value on top."""
    width = 0.8 / max(len(routes), 1)
    for index, route in enumerate(routes):
        xs, heights = [], []
        for position, group in enumerate(groups):
            cell = results.cell(group, route)
            got = None if cell is None else value(results, cell)
            if got is not None:
                xs.append(position + (index - (len(routes) - 1) / 2) * width)
                heights.append(got)
        bars = ax.bar(xs, heights, width, label=route, color=_COLOURS.get(route))
        ax.bar_label(bars, fmt="%.0f", fontsize="x-small")
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    if not groups:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
