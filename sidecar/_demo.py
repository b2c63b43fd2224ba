"""`sidecar demo`: a small mesh on this machine, real traffic over each path, a table.

Two replicas of a toy embedder, a sidecar in front of each, and a caller's sidecar, found
through mDNS on loopback (no infrastructure). Paths: straight to a replica over TCP and
shared memory; through two sidecars, over the network and by shared memory; proxyless
(the client discovers and picks replicas itself). Every answer is checked. With `--keep`
the mesh stays up and the demo prints how to call it; Ctrl-C ends it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ._blocking import BlockingMeshClient
from ._client import MeshClient
from ._toy import embed

SIZES = (4 * 1024, 1024 * 1024, 16 * 1024 * 1024)
DISCOVERY = "mdns://?interface=lo"
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0


@dataclass
class Child:
    """A process of the demo mesh and what its ready file said."""

    name: str
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]


@dataclass
class Cell:
    """Round trips measured on one path at one size."""

    path: str
    size: int
    samples: list[float] = field(default_factory=list)
    wrong: int = 0
    by_reference: int = 0


class Mesh:
    """The demo's processes; `stop()` ends them all with SIGTERM and checks they drained."""

    def __init__(self, workdir: Path, shm_dir: Path) -> None:
        self.workdir, self.shm_dir = workdir, shm_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str]) -> Child:
        ready = self.workdir / f"{name}.json"
        log = (self.workdir / f"{name}.log").open("wb")
        env = {**os.environ, "ARROWMESH_SHM_DIR": str(self.shm_dir)}
        proc = subprocess.Popen([sys.executable, "-m", *argv, "--ready-file", str(ready)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        deadline = time.monotonic() + _READY_TIMEOUT
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                tail = (self.workdir / f"{name}.log").read_text()[-2000:]
                raise RuntimeError(f"{name} did not become ready:\n{tail}")
            time.sleep(0.02)
        child = Child(name, proc, json.loads(ready.read_text()))
        self.children.append(child)
        return child

    def stop(self) -> list[int]:
        for child in reversed(self.children):  # callers first, replicas last
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        return [child.proc.returncode for child in self.children]


@contextmanager
def _mesh(shm_dir: Path) -> Iterator[Mesh]:
    with tempfile.TemporaryDirectory(prefix="arrowmesh-demo-") as tmp:
        mesh = Mesh(Path(tmp), shm_dir)
        try:
            for i in range(2):
                replica = mesh.start(f"replica-{i}", ["sidecar._toy", "--uds", f"{tmp}/r{i}.sock"])
                mesh.start(f"sidecar-{i}", _sidecar("embedder", f"tcp://{replica.info['mesh']}"))
            mesh.start("caller-sidecar", _sidecar("pipeline", None))
            yield mesh
        finally:
            codes = mesh.stop()
            if any(code != 0 for code in codes):
                raise RuntimeError(f"processes exited with {codes}, expected 0 after SIGTERM")


def _sidecar(service: str, app: str | None) -> list[str]:
    argv = ["sidecar", "run", "--service", service, "--discovery", DISCOVERY,
            "--mesh-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
            "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
            "--app-health-interval", "0.25", "--log-format", "text"]  # fmt: skip
    return argv + (["--app", app] if app else [])


def _input(client_alloc: Callable[..., npt.NDArray[Any]] | None, size: int) -> npt.NDArray[Any]:
    rows = max(1, size // (4 * 256))
    x = client_alloc((rows, 256), np.float32) if client_alloc else np.empty((rows, 256), np.float32)
    x[:] = np.random.default_rng(size).standard_normal((rows, 256), dtype=np.float32)
    return x


def _measure(client: BlockingMeshClient, cell: Cell, requests: int, in_shm: bool) -> None:
    x = _input(client.alloc if in_shm else None, cell.size)
    expected = embed({"x": x})["embedding"]
    for _ in range(requests):
        start = time.perf_counter()
        out = client.infer("embedder", {"x": x}, timeout=30.0)
        cell.samples.append(time.perf_counter() - start)
        cell.wrong += not np.allclose(out["embedding"], expected, atol=1e-6)


async def _measure_proxyless(shm_dir: Path, cells: list[Cell], requests: int) -> None:
    async with MeshClient(discovery=DISCOVERY, shm_dir=str(shm_dir)) as client:
        await client.infer("embedder", {"x": np.ones((1, 256), np.float32)}, timeout=30.0)
        for cell in cells:
            rows = max(1, cell.size // (4 * 256))
            x = await client.alloc((rows, 256), np.float32)
            x[:] = np.random.default_rng(cell.size).standard_normal((rows, 256), dtype=np.float32)
            expected = embed({"x": x})["embedding"]
            before = _by_reference(client.shm_stats())
            for _ in range(_count(requests, cell.size)):
                start = time.perf_counter()
                out = await client.infer("embedder", {"x": x}, timeout=30.0)
                cell.samples.append(time.perf_counter() - start)
                cell.wrong += not np.allclose(out["embedding"], expected, atol=1e-6)
            cell.by_reference = _by_reference(client.shm_stats()) - before


def _count(requests: int, size: int) -> int:
    return max(10, requests * 4096 // size)


def _table(cells: list[Cell]) -> Table:
    table = Table(title="arrowmesh demo: toy embedder, 2 replicas, round trips")
    for column in ("path", "size", "requests", "median", "p99", "GB/s", "by reference", "wrong"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for c in cells:
        med = float(np.median(c.samples))
        p99 = float(np.percentile(c.samples, 99))
        table.add_row(
            c.path, _size(c.size), str(len(c.samples)), f"{med * 1e3:.3f} ms",
            f"{p99 * 1e3:.3f} ms", f"{2 * c.size / med / 1e9:.2f}",
            _size(c.by_reference) if c.by_reference else "-", str(c.wrong),
        )  # fmt: skip
    return table


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"


def main(requests: int = 50, keep: bool = False) -> int:
    """Run the demo; returns the process exit code."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    cells: list[Cell] = []
    shm_dir = Path(tempfile.mkdtemp(prefix="arrowmesh-demo-", dir=_shm_root()))
    try:
        with console.status("starting 2 replicas, their sidecars and a caller's sidecar"):
            mesh_cm = _mesh(shm_dir)
            mesh = mesh_cm.__enter__()
        try:
            _run_paths(mesh, shm_dir, cells, requests, console)
            console.print(_table(cells))
            if keep:
                _keep(mesh, console)
        finally:
            mesh_cm.__exit__(None, None, None)
        left = sorted(p.name for p in shm_dir.iterdir())
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
    wrong = sum(c.wrong for c in cells)
    console.print(
        f"mesh stopped cleanly; {sum(len(c.samples) for c in cells)} requests, {wrong} wrong; "
        + (f"LEFT in shared memory: {left}" if left else "shared-memory directory left empty")
    )
    return 1 if wrong or left else 0


def _run_paths(
    mesh: Mesh, shm_dir: Path, cells: list[Cell], requests: int, console: Console
) -> None:
    by_name = {c.name: c for c in mesh.children}
    shm = str(shm_dir)
    paths = [
        ("direct tcp -> replica 0", by_name["replica-0"].info["mesh"], "", False),
        ("direct shm alloc() -> replica 1", by_name["replica-1"].info["mesh"], shm, True),
        ("2 sidecars, network", by_name["caller-sidecar"].info["mesh"], "", False),
        ("2 sidecars, shm alloc()", by_name["caller-sidecar"].info["mesh"], shm, True),
    ]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sending tensors", total=(len(paths) + 1) * len(SIZES))
        for name, address, client_shm, in_shm in paths:
            with BlockingMeshClient(address, shm_dir=client_shm) as client:
                _warm(client)
                for size in SIZES:
                    cell = Cell(name, size)
                    before = _by_reference(client.shm_stats())
                    _measure(client, cell, _count(requests, size), in_shm)
                    cell.by_reference = _by_reference(client.shm_stats()) - before
                    cells.append(cell)
                    progress.advance(task)
        proxyless = [Cell("proxyless (mDNS), shm alloc()", size) for size in SIZES]
        asyncio.run(_measure_proxyless(shm_dir, proxyless, requests))
        cells.extend(proxyless)
        progress.advance(task, len(SIZES))


def _warm(client: BlockingMeshClient) -> None:
    """The first call waits for discovery to find both replicas' sidecars."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        try:
            client.infer("embedder", {"x": np.ones((1, 256), np.float32)}, timeout=10.0)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _keep(mesh: Mesh, console: Console) -> None:
    by_name = {c.name: c for c in mesh.children}
    caller = by_name["caller-sidecar"].info
    console.print(
        "\nThe mesh keeps running (Ctrl-C stops it). Call it:\n"
        f"  curl http://{caller['admin']}/endpoints\n"
        f"  curl http://{caller['admin']}/metrics\n"
        '  python -c "import numpy as np, sidecar;'
        f" c = sidecar.BlockingMeshClient('{caller['mesh']}');"
        " print(c.infer('embedder', {'x': np.ones((2, 256), np.float32)}))\"\n"
    )
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop)


def _by_reference(stats: object) -> int:
    return int(getattr(stats, "bytes_by_reference", 0))


def _shm_root() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None
