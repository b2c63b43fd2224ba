"""The load of `bench balance`: per scenario, each policy's client, blocks taking turns.

One proxyless `MeshClient` per policy, kept for the whole scenario, so each balancer keeps
what it learnt between its blocks; its callers are asyncio tasks sharing it, so one
balancer sees (and decides for) all of its policy's traffic. Every block is bounded: a
fixed number of requests, each with a deadline, and no new request after `block_cap_s`.

Tries are counted by the replicas: each keeps how many requests it has been sent in a
mapped file, which the bench reads before and after each block (asking with a request
would give a failing replica a success to report as app health). Only one policy runs at
a time, so a block's difference is that policy's tries, failed ones too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from sidecar import MeshClient, RoutePolicy

from . import Plan

Phase = Literal["warmup", "measure"]
Policy = Literal["peak_ewma", "least_request", "round_robin", "ring_hash"]  # RoutePolicy's
PAYLOAD: Final = {"x": np.ones(256, dtype=np.float32)}  # 1 KiB, echoed back


@dataclass(frozen=True, slots=True)
class Scenario:
    """Four replicas of one service: their service times, and which one fails (if any)."""

    name: str
    service: str
    delays: tuple[float, ...]
    failing: int | None

    def role(self, index: int) -> str:
        """ "slow 10x", "failing" or "fast"."""
        if index == self.failing:
            return "failing"
        fastest = min(self.delays)
        if self.delays[index] > fastest:
            return f"slow {self.delays[index] / fastest:g}x"
        return "fast"


def scenarios(plan: Plan) -> list[Scenario]:
    """The plan's scenarios; the odd replica is the last one, r3."""
    fast, slow = plan.fast_s, plan.fast_s * plan.slow_factor
    known = {
        "slow": Scenario("slow", "bench-slow", (fast, fast, fast, slow), None),
        "failing": Scenario("failing", "bench-failing", (fast,) * 4, 3),
    }
    return [known[name] for name in plan.scenarios]


@dataclass(frozen=True, slots=True)
class Row:
    """A policy as one row of the report; ring_hash's callers send affinity keys."""

    policy: Policy
    keys: int = 0

    @property
    def name(self) -> str:
        """ "peak_ewma", "ring_hash (64 keys)"."""
        return f"{self.policy} ({self.keys} keys)" if self.keys else self.policy


def rows(plan: Plan) -> list[Row]:
    """The policies, the default first, round robin (the baseline) after the P2C ones."""
    return [
        Row("peak_ewma"),
        Row("least_request"),
        Row("round_robin"),
        Row("ring_hash", plan.keys),
    ]


@dataclass(frozen=True, slots=True)
class Block:
    """One block of one policy. Times are seconds since the policy's first request."""

    phase: Phase
    started_s: float
    elapsed_s: float
    requests: int
    failures: int
    tries: tuple[int, ...]
    """Requests each replica was sent during the block (its own count)."""
    answered: tuple[int, ...]
    """Successful answers from each replica."""
    p50_s: float | None
    p99_s: float | None
    client_cpu_s: float
    router: dict[str, Any] = field(default_factory=dict)
    """What the router's private state said at the block's end (see `router_view`)."""


@dataclass(slots=True)
class RowRun:
    """Everything one policy's client did in one scenario."""

    scenario: Scenario
    row: Row
    blocks: list[Block] = field(default_factory=list)
    latencies_ns: dict[int, list[int]] = field(default_factory=dict)
    """Successful requests of the measured blocks, by the replica that answered."""
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    """Failed requests by exception type, warm-up included."""
    key_answers: dict[str, collections.Counter[int]] = field(default_factory=dict)
    """For keyed rows: which replica answered each key (measured blocks)."""
    first_request: float | None = None


Tick = Callable[[str, bool], None]  # (what is running, whether a measured block ended)


async def measure_scenario(
    plan: Plan, scenario: Scenario, counters: Sequence[Path], mesh_file: str, tick: Tick
) -> list[RowRun]:
    """Warm up, then the measured rounds, every policy taking turns; one RowRun each.

    `counters` are the replicas' request-count files, in replica order.
    """
    runs = [RowRun(scenario, row) for row in rows(plan)]
    rng = random.Random(f"bench-balance-{scenario.name}")
    direct = await asyncio.to_thread(_map_counters, counters)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                MeshClient(
                    discovery=f"static://{mesh_file}",
                    shm_dir="",
                    policy=RoutePolicy(balancer=run.row.policy),
                )
            )
            for run in runs
        ]
        loop = asyncio.get_running_loop()
        warm_until = loop.time() + plan.warmup_s
        turn = 0
        while turn == 0 or loop.time() < warm_until:
            for index in _order(len(runs), turn):
                tick(f"{scenario.name}: warm-up, {runs[index].row.name}", False)
                await _block(plan, runs[index], clients[index], direct, "warmup", rng)
            turn += 1
        for turn in range(plan.rounds):
            for index in _order(len(runs), turn):
                tick(f"{scenario.name}: round {turn + 1}/{plan.rounds}, {runs[index].row.name}",
                     False)  # fmt: skip
                await _block(plan, runs[index], clients[index], direct, "measure", rng)
                tick("", True)
    return runs


def _order(n: int, turn: int) -> list[int]:
    """Policies in turn, the first one rotating each round."""
    return [(turn + i) % n for i in range(n)]


async def _block(
    plan: Plan,
    run: RowRun,
    client: MeshClient,
    direct: Sequence[npt.NDArray[np.int64]],
    phase: Phase,
    rng: random.Random,
) -> None:
    scenario, keys = run.scenario, run.row.keys
    size = plan.block if phase == "measure" else plan.warmup_block
    loop = asyncio.get_running_loop()
    before = _served(direct)
    answered = [0] * len(scenario.delays)
    latencies: list[tuple[int, int]] = []  # (replica, ns)
    left, failures = size, 0
    if run.first_request is None:
        run.first_request = loop.time()
    started = loop.time()
    stop_at = started + plan.block_cap_s

    async def caller() -> None:
        nonlocal left, failures
        while left > 0 and loop.time() < stop_at:
            left -= 1
            key = f"key-{rng.randrange(keys)}" if keys else None
            t0 = time.perf_counter_ns()
            try:
                out = await client.infer(
                    scenario.service, PAYLOAD, timeout=plan.timeout_s, affinity_key=key
                )
            except Exception as exc:  # counted and reported: failures are what we measure
                failures += 1
                run.errors[type(exc).__name__] += 1
                continue
            who = int(out["who"][0])
            latencies.append((who, time.perf_counter_ns() - t0))
            answered[who] += 1
            if key is not None and phase == "measure":
                run.key_answers.setdefault(key, collections.Counter())[who] += 1

    cpu = time.process_time()
    await asyncio.gather(*(caller() for _ in range(plan.callers)))
    cpu = time.process_time() - cpu
    elapsed = loop.time() - started
    after = _served(direct)
    if phase == "measure":
        for who, ns in latencies:
            run.latencies_ns.setdefault(who, []).append(ns)
    ordered = np.asarray([ns for _, ns in latencies], dtype=np.float64) / 1e9
    run.blocks.append(
        Block(
            phase=phase,
            started_s=started - run.first_request,
            elapsed_s=elapsed,
            requests=size - left,
            failures=failures,
            tries=tuple(b - a for a, b in zip(before, after, strict=True)),
            answered=tuple(answered),
            p50_s=float(np.percentile(ordered, 50)) if len(ordered) else None,
            p99_s=float(np.percentile(ordered, 99)) if len(ordered) else None,
            client_cpu_s=cpu,
            router=router_view(client, scenario.service, loop.time()),
        )
    )


def _map_counters(paths: Sequence[Path]) -> list[npt.NDArray[np.int64]]:
    """The replicas' count files, mapped read-only (opening files blocks: not on the loop)."""
    return [np.memmap(path, np.int64, mode="r", shape=(1,)) for path in paths]


def _served(counters: Sequence[npt.NDArray[np.int64]]) -> list[int]:
    """How many requests each replica has been sent so far (its own count, a memory read)."""
    return [int(counter[0]) for counter in counters]


def router_view(client: MeshClient, service: str, now: float) -> dict[str, Any]:
    """The router's own view, read from its private state (empty if that has moved).

    `retry_window`: (first tries, retries) its retry account counts in the window ending
    now; `estimates_s`: peak-EWMA's latency estimate per endpoint id; `ejected`: the ids
    the outlier detector has ejected. `now` is in loop.time() terms, as the router's.
    """
    view: dict[str, Any] = {}
    try:
        route = client._router._routes[service]  # type: ignore[union-attr]
    except (AttributeError, KeyError):
        return view
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        view["retry_window"] = list(route.retrier.account.totals(now))
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        view["ejected"] = sorted(route.outlier.ejected(now))
    balancer = getattr(route.balancer, "inner", route.balancer)  # under the locality wrapper
    latency = getattr(balancer, "latency", None)
    if callable(latency):
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            endpoints = sorted(route.cluster.endpoints, key=lambda e: e.id)
            view["estimates_s"] = {e.id: float(latency(e, now)) for e in endpoints}
    return view
