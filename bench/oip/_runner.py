"""The run: start the processes, connect a client per path, sample every cell interleaved.

Sizes go one after the other, the small one first; within a size every path takes turns
block by block, the first of each round rotating (bench.transfer._schedule decides how
many round trips each block gets and when a cell has enough). Each path starts a size
with one checked round trip (the echo must equal the payload) and a discarded warm-up.
Every call is watched: one that hangs stops the servers and ends the run (PeerHung).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from bench._pinning import Pinning, pinned
from bench._rundir import arena_settings, arena_size_for, run_directory
from bench._stats import Summary
from bench._units import format_size
from bench._watchdog import GuardedClient, Watchdog, connect_guarded
from bench.hop._children import children
from bench.transfer import _runner as transfer
from bench.transfer import _schedule

from . import _stack
from ._clients import OipEcho
from ._paths import OipPath

Progress = Callable[[str, float], None]  # description, cells completed so far


@dataclass(frozen=True, slots=True)
class Plan:
    """What to measure: the paths, the sizes, the budget, CPU placement, why Triton's
    paths are left out (None: they are measured), and cells left out, with why."""

    paths: tuple[OipPath, ...]
    sizes: tuple[int, ...]
    budget: _schedule.Budget
    pin: Pinning
    triton_skipped: str | None
    left_out: Mapping[tuple[OipPath, int], str] = field(default_factory=dict)

    @property
    def cells(self) -> int:
        """How many cells the plan would measure with Triton there."""
        return len(self.paths) * len(self.sizes) - len(self.left_out)


@dataclass(frozen=True, slots=True)
class Results:
    """Summaries per (path, size); the cells left out, with why; timings of the run."""

    plan: Plan
    summaries: Mapping[tuple[OipPath, int], Summary]
    skipped: Mapping[tuple[OipPath, int], str]
    elapsed_s: float
    startup_s: float
    triton_start_s: float | None
    shm_leftovers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def median(self, path: OipPath, size: int) -> float | None:
        """The p50 of a cell, or None if it was not measured."""
        summary = self.summaries.get((path, size))
        return None if summary is None else summary.median


def run(plan: Plan, on_progress: Progress) -> Results:
    """Measure every cell of `plan`. Raises ServerFailed, EchoMismatch, PeerHung."""
    started = time.monotonic()
    summaries: dict[tuple[OipPath, int], Summary] = {}
    on_progress("starting servers", 0.0)
    with (
        run_directory() as rundir,
        arena_settings(arena_size_for(max(plan.sizes))),
        pinned(plan.pin) as server_cpus,
        children(rundir.path, server_cpus) as running,
        contextlib.closing(Watchdog(running.stop_all)) as watchdog,
        contextlib.ExitStack() as stack,
    ):
        stack.callback(_stack.stop_triton, running)  # after the clients, before the rest
        layout = _stack.start(running, rundir, plan.sizes, plan.triton_skipped)
        skipped = dict(plan.left_out)
        for path in plan.paths:
            if path.route in layout.skipped:
                skipped.update({(path, size): layout.skipped[path.route] for size in plan.sizes})
        clients: dict[OipPath, GuardedClient] = {}
        for path in plan.paths:
            if all((path, size) in skipped for size in plan.sizes):
                continue
            address = layout.addresses[path.route, path.protocol]
            connect = functools.partial(OipEcho, path, address)
            client = connect_guarded(path.label, connect, watchdog)
            stack.callback(client.close)
            clients[path] = client
        startup = time.monotonic() - started
        done = 0.0
        for size in plan.sizes:
            now = {p: c for p, c in clients.items() if (p, size) not in skipped}
            for path, summary in _measure_size(size, now, plan.budget, on_progress, done):
                summaries[path, size] = summary
            done += len(now)
    return Results(
        plan, summaries, skipped, time.monotonic() - started, startup, layout.triton_start_s,
        tuple(rundir.leftovers), tuple(layout.notes),
    )  # fmt: skip


def _measure_size(
    size: int,
    clients: Mapping[OipPath, GuardedClient],
    budget: _schedule.Budget,
    on_progress: Progress,
    done_before: float,
) -> Iterator[tuple[OipPath, Summary]]:
    # The loop of `bench transfer`, whose clients are the same Protocol, keyed by label.
    gc.collect()
    payload = transfer._payload(size)
    label = format_size(size)
    by_label = {path.label: client for path, client in clients.items()}
    typical = {}
    for name, client in by_label.items():
        on_progress(f"{label} warm-up {name}", done_before)
        typical[name] = transfer._warm_up(name, client, payload, budget)
    cells = transfer._interleave(
        by_label,
        payload,
        budget,
        typical,
        lambda d, f: on_progress(f"{label} {d}", done_before + f),
    )
    for path in clients:
        yield path, Summary.of_ns(cells[path.label].samples)
