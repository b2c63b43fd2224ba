"""The run: start the servers, connect a client per transport, sample every cell interleaved.

Sizes go one after the other (largest last, so big buffers are faulted in once); within a
size, transports take turns block by block (see _schedule). Each size starts with one
checked round trip per transport (the echo must equal the payload) and a discarded
warm-up that faults in every receive buffer on both sides. arrowmesh clients' counters
are read after the warm-up and after the timed cells, to check the path they took
(see _paths). Everything lives in one run directory on /dev/shm, gone after the run.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from bench._errors import EchoMismatch
from bench._pinning import Pinning, pinned
from bench._processes import running_servers
from bench._rundir import RunDir, arena_settings, arena_size_for, run_directory
from bench._stats import Summary
from bench._units import format_size
from bench._watchdog import GuardedClient, Watchdog, connect_guarded
from bench.peers._base import Client, Payload, ShmInspectable
from transport import ShmStats

from . import _paths, _schedule
from ._registry import Skipped, Transport

Progress = Callable[[str, float], None]  # description, cells completed so far (fractional)

_PATTERN_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Plan:
    """What to measure: sizes in bytes, transports in display order, and the budget."""

    sizes: tuple[int, ...]
    transports: tuple[Transport, ...]
    budget: _schedule.Budget
    pin: Pinning = Pinning.NONE
    skipped: tuple[Skipped, ...] = ()


@dataclass(frozen=True, slots=True)
class Results:
    """Summaries per (transport name, size), the path checks, what was left in the
    shared-memory directory after the servers stopped, and how long the run took."""

    plan: Plan
    summaries: Mapping[tuple[str, int], Summary]
    elapsed_s: float
    paths: tuple[_paths.PathCheck, ...] = ()
    shm_leftovers: tuple[str, ...] = ()

    def median(self, transport: str, size: int) -> float | None:
        """The median round trip of a cell, or None if it was not measured."""
        summary = self.summaries.get((transport, size))
        return None if summary is None else summary.median

    def summary(self, transport: str, size: int) -> Summary | None:
        """A cell's summary, or None if it was not measured."""
        return self.summaries.get((transport, size))


@dataclass(slots=True)
class _Cell:
    samples: list[int] = field(default_factory=list)
    spent_ns: int = 0

    def add(self, samples: Sequence[int]) -> None:
        self.samples.extend(samples)
        self.spent_ns += sum(samples)


def run(plan: Plan, on_progress: Progress) -> Results:
    """Measure every cell of `plan`. Raises ServerFailed, EchoMismatch."""
    started = time.monotonic()
    summaries: dict[tuple[str, int], Summary] = {}
    checks: list[_paths.PathCheck] = []
    on_progress("starting servers", 0.0)
    with run_directory() as rundir, _connected(plan, rundir) as clients:
        for index, size in enumerate(plan.sizes):
            done_before = float(index * len(clients))
            measured = _measure_size(size, clients, plan.budget, on_progress, done_before)
            for name, summary in measured.summaries:
                summaries[(name, size)] = summary
            checks.extend(measured.paths)
    elapsed = time.monotonic() - started
    return Results(plan, summaries, elapsed, tuple(checks), tuple(rundir.leftovers))


@contextlib.contextmanager
def _connected(plan: Plan, rundir: RunDir) -> Iterator[dict[str, GuardedClient]]:
    modules = list(dict.fromkeys(t.server for t in plan.transports))
    with (
        arena_settings(arena_size_for(max(plan.sizes))),
        pinned(plan.pin) as server_cpus,
        running_servers(
            modules, rundir.path, plan.sizes, cpus=server_cpus, shm_dir=str(rundir.shm_dir)
        ) as servers,
        contextlib.closing(Watchdog(servers.stop)) as watchdog,
        contextlib.ExitStack() as stack,
    ):
        clients: dict[str, GuardedClient] = {}
        for t in plan.transports:
            connect = functools.partial(t.connect, servers.ready[t.server])
            client = connect_guarded(t.name, connect, watchdog)
            stack.callback(client.close)
            clients[t.name] = client
        yield clients


@dataclass(frozen=True, slots=True)
class _Measured:
    summaries: list[tuple[str, Summary]]
    paths: list[_paths.PathCheck]


def _measure_size(
    size: int,
    clients: Mapping[str, GuardedClient],
    budget: _schedule.Budget,
    on_progress: Progress,
    done_before: float,
) -> _Measured:
    gc.collect()
    payload = _payload(size)
    label = format_size(size)
    typical: dict[str, int] = {}
    for name, client in clients.items():
        on_progress(f"{label} warm-up {name}", done_before)
        typical[name] = _warm_up(name, client, payload, budget)
    inspected = {n: c.inner for n, c in clients.items() if isinstance(c.inner, ShmInspectable)}
    before = _read_counters(inspected)
    cells = _interleave(
        clients, payload, budget, typical, lambda d, f: on_progress(f"{label} {d}", done_before + f)
    )
    after = _read_counters(inspected)
    paths = [
        _paths.check(
            name,
            size,
            client.expected_path(size),
            len(cells[name].samples),
            before[name],
            after[name],
        )
        for name, client in inspected.items()
    ]
    return _Measured([(n, Summary.of_ns(cells[n].samples)) for n in clients], paths)


def _read_counters(clients: Mapping[str, ShmInspectable]) -> dict[str, ShmStats | None]:
    """Every inspectable client's counters, read between timed blocks, never inside one."""
    return {name: client.shm_stats() for name, client in clients.items()}


def _interleave(
    clients: Mapping[str, Client],
    payload: Payload,
    budget: _schedule.Budget,
    typical: dict[str, int],
    on_progress: Progress,
) -> dict[str, _Cell]:
    cells = {name: _Cell() for name in clients}
    names = list(clients)
    for round_index in range(_schedule.max_rounds(budget)):
        open_cells = [
            n
            for n in names
            if not _schedule.is_done(budget, len(cells[n].samples), cells[n].spent_ns)
        ]
        if not open_cells:
            break
        for name in _schedule.turn_order(open_cells, round_index):
            cell = cells[name]
            reps = _schedule.block_reps(budget, len(cell.samples), typical[name])
            cell.add(clients[name].round_trips(payload, reps))
            typical[name] = int(np.median(cell.samples[-reps:]))
            on_progress(name, _completed(budget, cells))
    return cells


def _completed(budget: _schedule.Budget, cells: Mapping[str, _Cell]) -> float:
    return sum(_schedule.progress(budget, len(c.samples), c.spent_ns) for c in cells.values())


def _warm_up(name: str, client: Client, payload: Payload, budget: _schedule.Budget) -> int:
    """Check one echo, run the discarded warm-up; return a typical round trip in ns."""
    start = time.perf_counter_ns()
    out = client.echo(payload)
    first_ns = time.perf_counter_ns() - start
    if not np.array_equal(out, payload):
        raise EchoMismatch(f"{name} returned different bytes for {format_size(payload.nbytes)}")
    del out
    samples = client.round_trips(payload, _schedule.warmup_reps(budget, first_ns))
    return int(np.median(samples))


def _payload(size: int) -> Payload:
    """Random bytes (nothing compresses them), a repeated random pattern to build fast."""
    pattern = np.random.default_rng(size).integers(0, 256, _PATTERN_BYTES, dtype=np.uint8)
    return np.resize(pattern, size)
