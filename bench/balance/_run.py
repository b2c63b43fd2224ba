"""Run `bench balance`: start every replica, write the mesh file, measure each scenario.

The replicas of both scenarios start together (each its own `serve()` child, through
`bench.hop._children`: pinned, logged, tied to this process, stopped however the run
ends), then the scenarios run one after the other in this process's event loop.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench._errors import BenchError, ServerFailed
from bench._pinning import pinned
from bench.hop._children import Child, Children, child_env, children
from sidecar._loop import run as run_loop

from . import Plan
from ._load import RowRun, Scenario, Tick, measure_scenario, scenarios


@dataclass(frozen=True, slots=True)
class Results:
    """Every policy's run in every scenario, and how long it all took."""

    plan: Plan
    runs: dict[str, list[RowRun]]
    elapsed_s: float
    pinned_cpus: list[int] | None


def blocks_total(plan: Plan) -> int:
    """Measured blocks in the run, for the progress bar."""
    return len(scenarios(plan)) * 4 * plan.rounds


def run(plan: Plan, tick: Tick, started: Callable[[str], None]) -> Results:
    """Measure `plan`. Raises BenchError when a replica fails to start or dies."""
    t0 = time.monotonic()
    found = scenarios(plan)
    with (
        pinned(plan.pin) as cpus,
        tempfile.TemporaryDirectory(prefix="arrowmesh-bench-balance-") as tmp,
        children(Path(tmp), cpus) as kids,
    ):
        workdir = Path(tmp)
        started("starting 8 replicas")
        addresses = _start_replicas(kids, workdir, found)
        mesh_file = workdir / "mesh.yaml"
        mesh_file.write_text(_mesh_yaml(found, addresses, plan.capacity))
        runs: dict[str, list[RowRun]] = {}
        for scenario in found:
            try:
                runs[scenario.name] = run_loop(
                    measure_scenario(
                        plan,
                        scenario,
                        [
                            counter_path(workdir, f"{scenario.name}-r{i}")
                            for i in range(len(scenario.delays))
                        ],
                        str(mesh_file),
                        tick,
                    )
                )
            except (OSError, RuntimeError, ValueError) as exc:
                dead = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in kids.dead())
                raise BenchError(
                    f"scenario {scenario.name}: {type(exc).__name__}: {exc}"
                    + (f"; replicas that died: {dead}" if dead else "")
                ) from exc
            if kids.dead():
                raise ServerFailed(f"a replica died during {scenario.name}{kids.dead()[0].tail()}")
    return Results(plan, runs, time.monotonic() - t0, sorted(cpus) if cpus else None)


def counter_path(workdir: Path, name: str) -> Path:
    """Where replica `name` keeps how many requests it has been sent."""
    return workdir / f"{name}.count"


def _start_replicas(kids: Children, workdir: Path, found: list[Scenario]) -> dict[str, list[str]]:
    """Start all replicas, then wait for each one's ready file; their mesh addresses."""
    env = child_env()
    pending: list[tuple[str, Child, Path]] = []
    for scenario in found:
        for index, delay in enumerate(scenario.delays):
            name = f"{scenario.name}-r{index}"
            ready = workdir / f"{name}.ready.json"
            argv = [sys.executable, "-m", "bench.balance._replica", str(ready), scenario.service,
                    str(index), repr(delay), "1" if index == scenario.failing else "0",
                    str(counter_path(workdir, name))]  # fmt: skip
            pending.append((scenario.name, kids.start(name, argv, env), ready))
    addresses: dict[str, list[str]] = {s.name: [] for s in found}
    for scenario_name, child, ready in pending:
        info = kids.wait_ready_file(child, ready)
        addresses[scenario_name].append(str(info["mesh"]))
    return addresses


def _mesh_yaml(found: list[Scenario], addresses: dict[str, list[str]], capacity: int) -> str:
    """The static registry's file: each scenario's service and its replicas r0..r3."""
    meta = f", meta: {{capacity: {capacity}}}" if capacity else ""
    lines = ["services:"]
    for scenario in found:
        lines.append(f"  {scenario.service}:")
        for index, address in enumerate(addresses[scenario.name]):
            host, _, port = address.rpartition(":")
            lines.append(f"    - {{id: r{index}, address: {host}, port: {port}{meta}}}")
    return "\n".join(lines) + "\n"
