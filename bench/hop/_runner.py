"""The run: start the servers, then measure each group of cells, its routes interleaved.

A group is one section at one concurrency (mesh with 1 caller, mesh with 16, ...); its
cells are its routes. Groups go one after the other; within a group, every route is
first checked (the echo must equal what was sent) and warmed up, then routes take turns
block by block, the first one rotating each round (bench/transfer/_schedule.py), so
slow drifts of a shared 2-core machine hit all routes alike. Around each block the CPU
time of the route's hop processes (and of the server behind them) is read from /proc;
nothing is read inside a block. The large-tensor groups also check the path the bytes
took: the client's shared-memory counters, and the sidecars' relayed-bytes counters.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from bench._errors import BenchError
from bench._pinning import Pinning, pinned
from bench._rundir import arena_settings, arena_size_for, run_directory
from bench._stats import Summary
from bench._watchdog import Watchdog
from bench.transfer import _paths
from bench.transfer._schedule import (
    Budget,
    block_reps,
    is_done,
    max_rounds,
    progress,
    turn_order,
    warmup_reps,
)
from transport import ShmStats

from . import _cpu, _relayed, _topology
from ._children import Children, children
from ._loads import (
    LARGE_NBYTES,
    MESH_NBYTES,
    AsyncHttp,
    AsyncMesh,
    BlockingHttp,
    BlockingMesh,
    LargeMode,
    Load,
    http_body,
    mesh_payload,
)
from ._topology import Route, Section, Topology, Via

T = TypeVar("T")
Progress = Callable[[str, float], None]  # description, cells completed so far (fractional)

BLOCK_GUARD_S: Final = 120.0


@dataclass(frozen=True, slots=True)
class Group:
    """One section at one concurrency; `mode` says how a large tensor is given."""

    key: str
    section: Section
    concurrency: int
    title: str
    mode: LargeMode | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What to measure and how long: sections, caller counts, budget, pinning, HAProxy."""

    sections: tuple[Section, ...]
    concurrency: tuple[int, ...]
    budget: Budget
    pin: Pinning
    haproxy: str | None

    def groups(self) -> list[Group]:
        """The groups in the order they run."""
        found: list[Group] = []
        for section in ("mesh", "http"):
            if section in self.sections:
                found += [_group(section, c) for c in self.concurrency]
        if "large" in self.sections:
            found += [
                Group("large-alloc", "large", 1, "64 MiB float32, alloc() input", "alloc"),
                Group("large-copy", "large", 1, "64 MiB float32, numpy input", "copy"),
            ]
        return found


def _group(section: Section, concurrency: int) -> Group:
    what = "mesh protocol, 4 KiB float32" if section == "mesh" else "HTTP POST, small JSON"
    callers = "1 caller" if concurrency == 1 else f"{concurrency} callers"
    return Group(f"{section}-c{concurrency}", section, concurrency, f"{what}, {callers}")


@dataclass(frozen=True, slots=True)
class Cell:
    """One route of one group, measured: latencies, requests, time and CPU spent."""

    group: str
    route: str
    via: Via
    hops: int
    concurrency: int
    summary: Summary
    requests: int
    wall_s: float
    blocks: int
    hop_cpu: _cpu.CpuTime
    backend_cpu: _cpu.CpuTime

    @property
    def median(self) -> float:
        """The median latency, in seconds."""
        return self.summary.median

    @property
    def hop_cpu_per_request(self) -> float:
        """Seconds of CPU the hop processes spent per request (schedstat)."""
        return self.hop_cpu.sched_ns / 1e9 / self.requests

    @property
    def hop_cpu_stat_per_request(self) -> float:
        """The same from /proc/PID/stat's utime+stime (10 ms ticks): the cross-check."""
        return self.hop_cpu.stat_ns / 1e9 / self.requests

    @property
    def backend_cpu_per_request(self) -> float:
        """Seconds of CPU the server behind the hops spent per request."""
        return self.backend_cpu.sched_ns / 1e9 / self.requests

    @property
    def throughput(self) -> float:
        """Requests per second over the cell's blocks."""
        return self.requests / self.wall_s


@dataclass(frozen=True, slots=True)
class Results:
    """Every cell, the path checks, and how the run went."""

    plan: Plan
    groups: tuple[Group, ...]
    cells: Mapping[tuple[str, str], Cell]
    topology: Topology
    elapsed_s: float
    paths: tuple[_paths.PathCheck, ...] = ()
    relayed: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    idle_cpu: Mapping[str, float] = field(default_factory=dict)
    shm_leftovers: tuple[str, ...] = ()

    def cell(self, group: str, route: str) -> Cell | None:
        """The cell of `route` in `group`, or None if it was not measured."""
        return self.cells.get((group, route))


@dataclass(slots=True)
class _Tally:
    samples: list[int] = field(default_factory=list)
    wall_ns: int = 0
    blocks: int = 0
    hop: _cpu.CpuTime = field(default_factory=_cpu.CpuTime)
    backend: _cpu.CpuTime = field(default_factory=_cpu.CpuTime)
    last_wall_ns: int = 0
    last_requests: int = 1


def run(plan: Plan, on_progress: Progress) -> Results:
    """Start the servers, measure every group. Raises BenchError (ServerFailed, ...)."""
    started = time.monotonic()
    groups = plan.groups()
    cells: dict[tuple[str, str], Cell] = {}
    checks: list[_paths.PathCheck] = []
    relayed: dict[str, dict[str, float]] = {}
    on_progress("starting servers", 0.0)
    with (
        run_directory() as rundir,
        arena_settings(arena_size_for(LARGE_NBYTES)),
        pinned(plan.pin) as server_cpus,
        children(rundir.path, server_cpus) as running,
        contextlib.closing(Watchdog(running.stop_all)) as watchdog,
    ):
        topology = _topology.start(plan.sections, plan.haproxy, running, rundir)
        on_progress("servers idle", 0.0)
        idle = _idle_cpu(running.pids(), plan.budget.warmup_s * 3)
        done = 0.0
        for group in groups:
            routes = topology.routes.get(group.section, ())
            measure = _GroupRun(group, routes, plan.budget, watchdog, running, str(rundir.shm_dir))
            before = _relayed.read_all(topology.sidecar_admin) if group.section == "large" else {}
            found, group_checks = measure.run(functools.partial(_shifted, on_progress, done))
            if before:
                _add_relayed(relayed, before, _relayed.read_all(topology.sidecar_admin))
            cells.update({(group.key, cell.route): cell for cell in found})
            checks += group_checks
            done += len(routes)
    elapsed = time.monotonic() - started
    return Results(
        plan, tuple(groups), cells, topology, elapsed, tuple(checks), relayed, idle,
        tuple(rundir.leftovers),
    )  # fmt: skip


def _idle_cpu(pids: Mapping[str, int], seconds: float) -> dict[str, float]:
    """CPU seconds per second each child spends with no traffic (timers, probes, reapers):
    what a slow cell's CPU per request carries beside the requests."""
    before = _cpu.read_all(pids.values())
    start = time.monotonic()
    time.sleep(seconds)  # the quiet period being measured
    after = _cpu.read_all(pids.values())
    elapsed = time.monotonic() - start
    return {name: (after[pid] - before[pid]).sched_ns / 1e9 / elapsed for name, pid in pids.items()}


def _shifted(on_progress: Progress, done: float, what: str, fraction: float) -> None:
    on_progress(what, done + fraction)


def _add_relayed(
    into: dict[str, dict[str, float]],
    before: Mapping[str, Mapping[str, float]],
    after: Mapping[str, Mapping[str, float]],
) -> None:
    for sidecar, modes in after.items():
        mine = into.setdefault(sidecar, {})
        for mode, value in modes.items():
            mine[mode] = mine.get(mode, 0.0) + value - before.get(sidecar, {}).get(mode, 0.0)


class _GroupRun:
    """One group: loads on each route, checked, warmed up, then interleaved."""

    def __init__(
        self,
        group: Group,
        routes: Sequence[Route],
        budget: Budget,
        watchdog: Watchdog,
        running: Children,
        shm_dir: str,
    ) -> None:
        self._group, self._routes, self._budget = group, routes, budget
        self._watchdog, self._running, self._shm_dir = watchdog, running, shm_dir

    def run(self, on_progress: Progress) -> tuple[list[Cell], list[_paths.PathCheck]]:
        gc.collect()
        with contextlib.ExitStack() as stack:
            loads: dict[str, Load] = {}
            for route in self._routes:
                load = self._guarded(route, "connecting", functools.partial(self._load, route))
                stack.callback(load.close)
                loads[route.name] = load
            typical = {r.name: self._warm_up(r, loads[r.name]) for r in self._routes}
            stats_before = _shm_stats(loads)
            tallies = self._interleave(loads, typical, on_progress)
            checks = self._path_checks(loads, tallies, stats_before)
        return [self._cell(r, tallies[r.name]) for r in self._routes], checks

    def _load(self, route: Route) -> Load:
        g = self._group
        if g.section == "large":
            payload = mesh_payload(LARGE_NBYTES)
            return BlockingMesh(route.name, route.address, _topology.SERVICE, payload,
                                shm_dir=self._shm_dir, mode=g.mode or "copy")  # fmt: skip
        if g.section == "mesh":
            payload = mesh_payload(MESH_NBYTES)
            if g.concurrency == 1:
                return BlockingMesh(route.name, route.address, _topology.SERVICE, payload)
            return AsyncMesh(route.name, route.address, _topology.SERVICE, payload, g.concurrency)
        if g.concurrency == 1:
            return BlockingHttp(route.name, route.address, route.url_path, http_body())
        return AsyncHttp(route.name, route.address, route.url_path, http_body(), g.concurrency)

    def _warm_up(self, route: Route, load: Load) -> int:
        """Check the echo, run the discarded warm-up; a typical wall time per request (ns)."""
        start = time.perf_counter_ns()
        self._guarded(route, "checking the echo", load.check)
        first_ns = (time.perf_counter_ns() - start) // load.concurrency
        reps = warmup_reps(self._budget, first_ns)
        start = time.perf_counter_ns()
        samples = self._guarded(route, "warming up", lambda: load.block(_per_caller(reps, load)))
        return max(1, (time.perf_counter_ns() - start) // len(samples))

    def _interleave(
        self, loads: Mapping[str, Load], typical: dict[str, int], on_progress: Progress
    ) -> dict[str, _Tally]:
        budget = self._budget
        tallies = {name: _Tally() for name in loads}
        routes = {route.name: route for route in self._routes}
        for round_index in range(max_rounds(budget)):
            open_cells = [
                n for n, t in tallies.items() if not is_done(budget, len(t.samples), t.wall_ns)
            ]
            if not open_cells:
                break
            for name in turn_order(open_cells, round_index):
                tally, load, route = tallies[name], loads[name], routes[name]
                reps = block_reps(budget, len(tally.samples), typical[name])
                self._block(route, load, _per_caller(reps, load), tally)
                typical[name] = max(1, tally.last_wall_ns // tally.last_requests)
                done = sum(progress(budget, len(t.samples), t.wall_ns) for t in tallies.values())
                on_progress(f"{self._group.key} {name}", done)
        return tallies

    def _block(self, route: Route, load: Load, per_caller: int, tally: _Tally) -> None:
        hop_before = _cpu.read_all(route.hop_pids)
        backend_before = _cpu.read_all(route.backend_pids)
        start = time.perf_counter_ns()
        samples = self._guarded(route, "timed requests", lambda: load.block(per_caller))
        wall = time.perf_counter_ns() - start
        tally.hop = tally.hop + _cpu.spent(hop_before, _cpu.read_all(route.hop_pids))
        tally.backend = tally.backend + _cpu.spent(
            backend_before, _cpu.read_all(route.backend_pids)
        )
        tally.samples += samples
        tally.wall_ns += wall
        tally.blocks += 1
        tally.last_wall_ns, tally.last_requests = wall, len(samples)

    def _guarded(self, route: Route, what: str, call: Callable[[], T]) -> T:
        label = f"{self._group.key} {route.name}: {what}"
        try:
            with self._watchdog.guard(label, BLOCK_GUARD_S):
                return call()
        except BenchError:
            raise
        except Exception as exc:
            dead = "".join(
                f"\n{child.name} exited with {child.process.returncode}{child.tail()}"
                for child in self._running.dead()
            )
            raise BenchError(f"{label} failed: {type(exc).__name__}: {exc}{dead}") from exc

    def _path_checks(
        self,
        loads: Mapping[str, Load],
        tallies: Mapping[str, _Tally],
        before: Mapping[str, ShmStats],
    ) -> list[_paths.PathCheck]:
        checks = []
        for name, stats in before.items():
            load = loads[name]
            assert isinstance(load, BlockingMesh)
            after = load.shm_stats()
            checks.append(
                _paths.check(
                    f"{self._group.key} {name}", LARGE_NBYTES, load.expected_path(LARGE_NBYTES),
                    len(tallies[name].samples), stats, after,
                )
            )  # fmt: skip
        return checks

    def _cell(self, route: Route, tally: _Tally) -> Cell:
        g = self._group
        return Cell(
            g.key, route.name, route.via, route.hops, g.concurrency,
            Summary.of_ns(tally.samples), len(tally.samples), tally.wall_ns / 1e9,
            tally.blocks, tally.hop, tally.backend,
        )  # fmt: skip


def _per_caller(requests: int, load: Load) -> int:
    return max(1, math.ceil(requests / load.concurrency))


def _shm_stats(loads: Mapping[str, Load]) -> dict[str, ShmStats]:
    """The shared-memory counters of the loads that have them, read between blocks."""
    found = {}
    for name, load in loads.items():
        if isinstance(load, BlockingMesh) and (stats := load.shm_stats()) is not None:
            found[name] = stats
    return found
