"""What each benchmark's JSON says: its targets as uniform rows, and its figures as tables.

Every benchmark writes `bench/results/NAME.json` with a `machine` object and a `targets`
entry. Most targets are a list of objects with `target` and `passed` or `met` (plus the
measured ratio or a `detail` sentence); discovery states its bounds once and judges each
backend. `targets_of` turns either form into `Target` rows; `tables_of` gives the
benchmark's main figures as Markdown tables, for the benchmarks it knows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from bench._units import format_seconds, format_size

Status = Literal["met", "missed", "info", "skipped"]
Json = Mapping[str, Any]


@dataclass(frozen=True)
class Target:
    """One target of one benchmark, as the report shows it."""

    benchmark: str
    target: str
    measured: str
    status: Status


def targets_of(benchmark: str, data: Json) -> list[Target]:
    """The targets recorded in `data` (a benchmark's JSON), in their order."""
    raw = data.get("targets")
    if benchmark == "discovery" and isinstance(raw, Mapping):
        return _discovery_targets(data, raw)
    if not isinstance(raw, list):
        return []
    return [_target(benchmark, entry) for entry in raw if isinstance(entry, Mapping)]


def tables_of(benchmark: str, data: Json) -> list[str]:
    """Markdown tables of the benchmark's main figures (none for one this does not know)."""
    render = _TABLES.get(benchmark)
    return [] if render is None else render(data)


def _target(benchmark: str, entry: Json) -> Target:
    status: Status
    measured, bound = entry.get("measured"), entry.get("bound")
    if entry.get("skipped") or entry.get("no_peer"):
        status = "skipped"
    elif entry.get("form") == "absolute" and isinstance(measured, float) and bound is not None:
        # An absolute bound an issue names: judged here, though the run calls it context.
        status = "met" if measured <= bound else "missed"
    elif entry.get("informational"):
        status = "info"
    else:
        status = "met" if entry.get("passed", entry.get("met")) else "missed"
    return Target(benchmark, str(entry.get("target", "?")), _measured(entry), status)


def _measured(entry: Json) -> str:
    if isinstance(entry.get("detail"), str):
        return str(entry["detail"])
    if entry.get("skipped"):
        return str(entry["skipped"])
    if entry.get("why_not"):
        return str(entry["why_not"])
    if entry.get("form") == "absolute" and isinstance(entry.get("measured"), float):
        return format_seconds(entry["measured"])
    for key in ("ratio", "measured"):
        value = entry.get(key)
        if isinstance(value, int | float):
            return f"{value:.2f}x"
    return "-"


def _discovery_targets(data: Json, bounds: Json) -> list[Target]:
    rows = []
    for backend, figures in sorted(data.get("backends", {}).items()):
        for event, key in (("appear", "seen"), ("remove", "dropped")):
            bound = bounds.get(f"{event}_s")
            measured = (
                f"median {format_seconds(figures[f'{event}_median_s'])}, "
                f"max {format_seconds(figures[f'{event}_max_s'])}"
            )
            met = figures.get(f"{event}_met")
            rows.append(
                Target(
                    "discovery",
                    f"{backend}: {key} within {bound} s",
                    measured,
                    "met" if met else "missed",
                )
            )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _seconds(value: object) -> str:
    return format_seconds(value) if isinstance(value, int | float) else "-"


def _transfer_tables(data: Json) -> list[str]:
    results = [r for r in data.get("results", []) if isinstance(r, Mapping)]
    sizes = sorted({int(r["size"]) for r in results})
    transports = list(dict.fromkeys(str(r["transport"]) for r in results))
    cell = {(str(r["transport"]), int(r["size"])): r for r in results}
    rows = []
    for name in transports:
        row = [name]
        for size in sizes:
            found = cell.get((name, size))
            row.append("-" if found is None else _seconds(found.get("median_s")))
        rows.append(row)
    header = ["median round trip", *(format_size(size) for size in sizes)]
    return [_table(header, rows)] if rows else []


def _hop_tables(data: Json) -> list[str]:
    titles = {g["key"]: g["title"] for g in data.get("groups", []) if isinstance(g, Mapping)}
    rows = []
    for c in data.get("cells", []):
        cpu = c.get("hop_cpu_s_per_request")
        rows.append(
            [
                titles.get(c["group"], c["group"]),
                str(c["route"]),
                _seconds(c.get("median_s")),
                _seconds(c.get("p99_s")),
                _seconds(c.get("added_p50_per_hop_s")),
                _seconds(cpu) if cpu else "-",
            ]
        )
    header = ["group", "route", "p50", "p99", "added p50 / hop", "hop CPU / request"]
    return [_table(header, rows)] if rows else []


def _balance_tables(data: Json) -> list[str]:
    rows = []
    for r in data.get("rows", []):
        shares = " / ".join(f"{share:.1%}" for share in r.get("shares", []))
        rows.append(
            [
                str(r["scenario"]),
                str(r["policy"]),
                _seconds(r.get("p50_s")),
                _seconds(r.get("p99_s")),
                f"{r.get('failed', 0)} of {r.get('requests', 0)}",
                f"{r.get('retries', 0)} (budget {r.get('allowed_retries', 0):.0f})",
                shares,
            ]
        )
    header = ["scenario", "policy", "p50", "p99", "failed", "retries", "share per replica"]
    return [_table(header, rows)] if rows else []


def _discovery_tables(data: Json) -> list[str]:
    rows = [
        [
            backend,
            _seconds(f.get("appear_median_s")),
            _seconds(f.get("appear_max_s")),
            _seconds(f.get("remove_median_s")),
            _seconds(f.get("remove_max_s")),
            str(f.get("missed_rounds", 0)),
        ]
        for backend, f in sorted(data.get("backends", {}).items())
    ]
    header = ["registry", "seen (median)", "seen (max)", "dropped (median)", "dropped (max)"]
    return [_table([*header, "missed rounds"], rows)] if rows else []


_TABLES: Final[dict[str, Callable[[Json], list[str]]]] = {
    "transfer": _transfer_tables,
    "hop": _hop_tables,
    "balance": _balance_tables,
    "discovery": _discovery_tables,
}
