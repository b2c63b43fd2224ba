"""The soak run: the processes, the load, the faults, the resource samples, the report."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import socket
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from rich.console import Console
from rich.table import Table

import sidecar
from bench._errors import BenchError, ServerFailed
from bench._machine import machine_info
from bench._rundir import RunDir, run_directory
from bench.hop._children import Child, Children, child_env, children
from sidecar._loop import new_event_loop

from . import _faults

SERVICE: Final = "soak"
REPLICAS: Final = 3
REQUEST_TIMEOUT_S: Final = 10.0
SMALL: Final = np.arange(1024, dtype=np.float32)  # 4 KiB: inline
LARGE: Final = np.ones(1 << 18, dtype=np.float32)  # 1 MiB: by reference where memory is shared
LARGE_EVERY: Final = 10
HELLO_TIMEOUT_S: Final = 2.0  # below the slow-loris fault's 3 s of trickling
SETTLE_S: Final = 3.0  # after the load, before the last resource sample
WARMUP_S: Final = 2.0
MAX_REQUESTS: Final = 2_000_000  # a bound on the load loop besides time
_DISCOVERY_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How long, how many callers, how often a fault."""

    seconds: float
    callers: int
    fault_every: float


@dataclass(slots=True)
class Tally:
    """What the load saw."""

    sent: int = 0
    succeeded: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    wrong: int = 0  # answered, but not the echo of what was sent
    started: float = field(default_factory=time.monotonic)
    failed_at: collections.Counter[int] = field(default_factory=collections.Counter)
    examples: dict[str, str] = field(default_factory=dict)
    """The first message of each failure reason."""
    """Failures by whole second since the load started."""


@dataclass
class Stack:
    """The run's processes and where they listen."""

    running: Children
    run: RunDir
    env: dict[str, str]
    consul_port: int
    emulator: Child | None = None
    replicas: dict[int, tuple[Child, Child]] = field(default_factory=dict)
    caller: Child | None = None
    caller_info: dict[str, Any] = field(default_factory=dict)
    generation: collections.Counter[str] = field(default_factory=collections.Counter)
    load_started: float = 0.0

    def _name(self, base: str) -> str:
        self.generation[base] += 1
        return f"{base}.{self.generation[base]}"

    def start_emulator(self) -> None:
        name = self._name("consul")
        ready = self.run.path / f"{name}.ready.json"
        argv = [
            sys.executable, "-m", "tests.consul_emulator", "--port", str(self.consul_port),
            "--ready-file", str(ready), "--reap-interval", "3", "--min-deregister-after", "6",
        ]  # fmt: skip
        self.emulator = self.running.start(name, argv, self.env)
        self.running.wait_until(self.emulator, ready.exists, "its ready file")

    def start_replica(self, index: int) -> None:
        app_name, side_name = self._name(f"app-{index}"), self._name(f"replica-{index}")
        app_ready = self.run.path / f"{app_name}.ready.json"
        app = self.running.start(
            app_name,
            [sys.executable, "-m", "bench.balance._replica", str(app_ready), SERVICE,
             str(index), "0.002", "0"],
            self.env,
        )  # fmt: skip
        info = self.running.wait_ready_file(app, app_ready)
        side = self._sidecar(side_name, SERVICE, app=f"tcp://{info['mesh']}")
        self.replicas[index] = (app, side)

    def start_caller(self) -> None:
        self.caller = self._sidecar(self._name("caller"), "soak-caller", hedge=True)
        ready = self.run.path / f"{self.caller.name}.ready.json"
        self.caller_info = self.running.wait_ready_file(self.caller, ready)
        self.running.wait_http_ok(self.caller, f"http://{self.caller_info['admin']}/readyz")

    def _sidecar(
        self, name: str, service: str, *, app: str | None = None, hedge: bool = False
    ) -> Child:
        ready = self.run.path / f"{name}.ready.json"
        argv = [
            sys.executable, "-m", "sidecar", "run", "--service", service,
            "--discovery", f"consul://127.0.0.1:{self.consul_port}",
            "--advertise-addr", "127.0.0.1", "--mesh-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--admin-addr", "127.0.0.1:0", "--ready-file", str(ready),
            "--drain-timeout", "2", "--log-level", "warning", "--log-format", "text",
            "--app-health-interval", "0.5", "--hello-timeout", str(HELLO_TIMEOUT_S),
        ]  # fmt: skip
        if app is not None:
            argv += ["--app", app, "--app-protocol", "mesh"]
        if hedge:
            argv += ["--hedge", "true"]
        child = self.running.start(name, argv, self.env)
        if app is not None:
            self.running.wait_ready_file(child, ready)
        return child

    @property
    def caller_mesh(self) -> str:
        return str(self.caller_info["mesh"])

    @property
    def caller_http(self) -> str:
        return str(self.caller_info["http"])

    @property
    def caller_admin(self) -> str:
        return str(self.caller_info["admin"])


def soak(plan: Plan, out: Path, console: Console) -> int:
    """Run the soak; print and write the report. 0 if it ran (verdicts in the report)."""
    started = time.monotonic()
    with run_directory() as run, children(run.path, None) as running:
        env = child_env({"ARROWMESH_SHM_DIR": str(run.shm_dir)})
        stack = Stack(running, run, env, _free_port())
        try:
            stack.start_emulator()
            for index in range(REPLICAS):
                stack.start_replica(index)
            stack.start_caller()
        except ServerFailed as exc:
            raise BenchError(f"the soak's processes did not start: {exc}") from exc
        loop = new_event_loop()
        try:
            result = loop.run_until_complete(_soak(stack, plan, console))
        finally:
            loop.close()
        running.stop_all()
    result["shm_leftovers"] = run.leftovers
    result["elapsed_s"] = time.monotonic() - started
    report = {
        "benchmark": "soak",
        "machine": machine_info(),
        "settings": {"seconds": plan.seconds, "callers": plan.callers,
                     "fault_every_s": plan.fault_every, "replicas": REPLICAS},
        **result,
    }  # fmt: skip
    report["targets"] = _targets(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    _print(console, report)
    return 0


async def _soak(stack: Stack, plan: Plan, console: Console) -> dict[str, Any]:
    tally = Tally()
    # In the caller sidecar's shared-memory directory: the 1 MiB tensors go by reference.
    client = sidecar.MeshClient(sidecar=stack.caller_mesh, shm_dir=str(stack.run.shm_dir))
    try:
        await _wait_routable(client)
        stop = asyncio.Event()
        deadline = time.monotonic() + plan.seconds
        stack.load_started = tally.started = time.monotonic()
        callers = [
            asyncio.create_task(_caller(client, tally, stop, deadline, i))
            for i in range(plan.callers)
        ]
        await asyncio.sleep(WARMUP_S)
        before = await asyncio.to_thread(_resources, stack)
        faults = await _inject(stack, plan, deadline, console)
        stop.set()
        await asyncio.gather(*callers)
        await asyncio.sleep(SETTLE_S)
        after = await asyncio.to_thread(_resources, stack)
    finally:
        await client.aclose()
    return {
        "requests": {
            "sent": tally.sent,
            "succeeded": tally.succeeded,
            "failed": sum(tally.failed.values()),
            "failed_by_reason": dict(tally.failed),
            "wrong_answers": tally.wrong,
            "failures_by_second": dict(sorted(tally.failed_at.items())),
            "failure_examples": tally.examples,
            "retried": after["metrics"].get("retries"),
            "hedged": after["metrics"].get("hedges"),
        },
        "faults": faults,
        "resources": {"start": before, "end": after},
    }


async def _wait_routable(client: sidecar.MeshClient) -> None:
    """Until the caller sidecar has found the replicas and one answers."""
    deadline = time.monotonic() + _DISCOVERY_TIMEOUT_S
    while True:
        try:
            await client.infer(SERVICE, {"x": SMALL}, timeout=2.0)
            return
        except sidecar.MeshError as exc:
            if time.monotonic() > deadline:
                raise BenchError(f"the caller sidecar never reached {SERVICE}: {exc}") from exc
            await asyncio.sleep(0.1)


async def _caller(
    client: sidecar.MeshClient, tally: Tally, stop: asyncio.Event, deadline: float, seed: int
) -> None:
    n = seed
    while not stop.is_set() and time.monotonic() < deadline and tally.sent < MAX_REQUESTS:
        n += 1
        x = LARGE if n % LARGE_EVERY == 0 else SMALL
        tally.sent += 1
        try:
            out = await client.infer(SERVICE, {"x": x}, timeout=REQUEST_TIMEOUT_S)
        except sidecar.MeshError as exc:
            tally.failed[_reason(exc)] += 1
            tally.examples.setdefault(_reason(exc), str(exc)[:300])
            tally.failed_at[int(time.monotonic() - tally.started)] += 1
            continue
        if out["x"].shape == x.shape and float(out["x"][-1]) == float(x[-1]):
            tally.succeeded += 1
        else:
            tally.wrong += 1


def _reason(exc: sidecar.MeshError) -> str:
    code = getattr(exc, "code", None)
    name = type(exc).__name__
    return f"{name}: {code.value}" if code is not None else name


async def _inject(
    stack: Stack, plan: Plan, deadline: float, console: Console
) -> list[dict[str, Any]]:
    """One fault every `fault_every` seconds, in turn, until the deadline."""
    done: list[dict[str, Any]] = []
    steps: list[tuple[str, Callable[[Stack], Awaitable[str]]]] = list(_faults.FAULTS.items())
    turn = 0
    while time.monotonic() + plan.fault_every < deadline or turn < len(steps):
        name, inject = steps[turn % len(steps)]
        turn += 1
        started = time.monotonic()
        try:
            detail = await inject(stack)
            ok = True
        except (OSError, ServerFailed, BenchError) as exc:
            detail, ok = f"could not inject: {exc}", False
        took = time.monotonic() - started
        done.append(
            {
                "fault": name,
                "ok": ok,
                "detail": detail,
                "seconds": took,
                "at_s": started - stack.load_started,
            }
        )
        console.print(f"fault {turn}: {name}: {detail} ({took:.1f} s)")
        rest = plan.fault_every - took
        if time.monotonic() + max(rest, 0) >= deadline and turn >= len(steps):
            break
        if rest > 0:
            await asyncio.sleep(min(rest, max(deadline - time.monotonic(), 0)))
    return done


def _resources(stack: Stack) -> dict[str, Any]:
    """The caller sidecar's process figures and its own metrics (blocking: run in a thread)."""
    assert stack.caller is not None
    pid = stack.caller.pid
    status = _proc_status(pid)
    metrics = _metrics(stack.caller_admin)
    return {
        "rss_bytes": status.get("VmRSS", 0),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "fd_kinds": _fd_kinds(pid),
        "shm_files_open": _open_in(pid, stack.run.shm_dir),
        "threads": status.get("Threads", 0),
        "tasks": metrics.get("tasks"),
        "leases": metrics.get("leases"),
        "shm_used_bytes": metrics.get("shm_used"),
        "in_flight": metrics.get("in_flight"),
        "metrics": metrics,
    }


def _fd_kinds(pid: int) -> dict[str, int]:
    """Open descriptors by kind (socket, pipe, anon_inode:[eventpoll], a file's directory)."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed since the listing
        kind = target.partition(":")[0] if ":" in target else os.path.dirname(target)
        kinds[kind] += 1
    return dict(sorted(kinds.items()))


def _open_in(pid: int, directory: Path) -> list[str]:
    """The names of the files in `directory` that `pid` holds open."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = Path(os.readlink(f"/proc/{pid}/fd/{fd}"))
            if target.parent == directory:
                names.append(target.name)
    return sorted(names)


def _proc_status(pid: int) -> dict[str, int]:
    figures: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                number = int(value.split()[0])
                figures[key] = number * 1024 if key == "VmRSS" else number
    return figures


_METRICS: Final[Mapping[str, str]] = {
    "arrowmesh_event_loop_tasks": "tasks",
    "arrowmesh_shm_leases": "leases",
    "arrowmesh_shm_used_bytes": "shm_used",
    "arrowmesh_requests_in_flight": "in_flight",
    "arrowmesh_retries_total": "retries",
    "arrowmesh_hedges_total": "hedges",
}


def _metrics(admin: str) -> dict[str, float]:
    """The metrics the report needs, summed over labels; absent ones are left out."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5.0) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        metric = name.partition("{")[0]
        key = _METRICS.get(metric)
        if key is not None:
            found[key] = found.get(key, 0.0) + float(value)
    return found


def _targets(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    requests = report["requests"]
    start, end = report["resources"]["start"], report["resources"]["end"]
    rss_growth = end["rss_bytes"] - start["rss_bytes"]
    rows = [
        ("0 failed requests (all are idempotent)", requests["failed"] == 0,
         f"{requests['failed']} failed of {requests['sent']} ({requests['failed_by_reason']})"),
        ("every answer is the echo of its request", requests["wrong_answers"] == 0,
         f"{requests['wrong_answers']} wrong"),
        ("RSS growth ≤ 32 MiB", rss_growth <= 32 << 20,
         f"{start['rss_bytes'] / 2**20:.1f} → {end['rss_bytes'] / 2**20:.1f} MiB"),
        ("descriptors back to their start level", end["fds"] <= start["fds"],
         f"{start['fds']} → {end['fds']} ({_fd_change(start['fd_kinds'], end['fd_kinds'])})"),
        ("leases back to their start level", (end["leases"] or 0) <= (start["leases"] or 0),
         f"{start['leases']} → {end['leases']}"),
        ("tasks back to their start level",
         end["tasks"] is None or end["tasks"] <= (start["tasks"] or 0),
         f"{start['tasks']} → {end['tasks']}"),
        ("nothing left in the shared-memory directory", not report["shm_leftovers"],
         ", ".join(report["shm_leftovers"]) or "empty"),
        ("every fault was injected", all(f["ok"] for f in report["faults"]),
         f"{sum(f['ok'] for f in report['faults'])} of {len(report['faults'])}"),
    ]  # fmt: skip
    return [{"target": t, "met": bool(met), "detail": detail} for t, met, detail in rows]


def _fd_change(start: Mapping[str, int], end: Mapping[str, int]) -> str:
    changes = [
        f"{kind} {start.get(kind, 0)} → {end.get(kind, 0)}"
        for kind in sorted(set(start) | set(end))
        if start.get(kind, 0) != end.get(kind, 0)
    ]
    return ", ".join(changes) or "same kinds"


def _print(console: Console, report: Mapping[str, Any]) -> None:
    requests = report["requests"]
    console.print(
        f"sent {requests['sent']}, succeeded {requests['succeeded']}, failed "
        f"{requests['failed']} {requests['failed_by_reason'] or ''}, retried "
        f"{requests['retried']}, hedged {requests['hedged']}"
    )
    table = Table(title="caller sidecar resources", title_justify="left")
    for column in ("", "RSS", "fds", "threads", "tasks", "leases", "shm used"):
        table.add_column(column)
    for when in ("start", "end"):
        r = report["resources"][when]
        table.add_row(
            when, f"{r['rss_bytes'] / 2**20:.1f} MiB", str(r["fds"]), str(r["threads"]),
            str(r["tasks"]), str(r["leases"]), str(r["shm_used_bytes"]),
        )  # fmt: skip
    console.print(table)
    targets = Table(title="targets", title_justify="left")
    for column in ("target", "measured", "status"):
        targets.add_column(column, overflow="fold")
    for t in report["targets"]:
        targets.add_row(t["target"], t["detail"], "[green]met[/]" if t["met"] else "[red]missed[/]")
    console.print(targets)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
