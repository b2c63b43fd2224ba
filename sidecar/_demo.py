"""`sidecar demo`: a small mesh on this machine, real traffic over each path, a table of results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ._blocking import BlockingMeshClient
from ._toy import embed

SIZES = (4 * 1024, 1024 * 1024, 16 * 1024 * 1024)
_READY_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


@dataclass
class Replica:
    """A toy-model process and where it listens."""

    proc: subprocess.Popen[bytes]
    mesh: str
    uds: str


@dataclass
class Cell:
    """Round trips measured on one path at one size."""

    path: str
    size: int
    samples: list[float] = field(default_factory=list)
    wrong: int = 0
    by_reference: int = 0


def _start(workdir: Path, index: int, shm_dir: Path) -> Replica:
    ready = workdir / f"replica-{index}.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sidecar._toy",
            "--ready-file",
            str(ready),
            "--uds",
            str(workdir / f"replica-{index}.sock"),
        ],
        env={**os.environ, "ARROWMESH_SHM_DIR": str(shm_dir)},
    )
    deadline = time.monotonic() + _READY_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"replica {index} did not become ready (exit code {proc.poll()})")
        time.sleep(0.02)
    info = json.loads(ready.read_text())
    return Replica(proc, info["mesh"], info["uds"])


@contextmanager
def _replicas(count: int, shm_dir: Path) -> Iterator[list[Replica]]:
    with tempfile.TemporaryDirectory(prefix="arrowmesh-demo-") as tmp:
        started: list[Replica] = []
        try:
            for i in range(count):
                started.append(_start(Path(tmp), i, shm_dir))
            yield started
        finally:
            codes = _stop(started)
            if any(code != 0 for code in codes):
                raise RuntimeError(f"replicas exited with {codes}, expected 0 after SIGTERM")


def _stop(replicas: list[Replica]) -> list[int]:
    for r in replicas:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGTERM)
    codes = []
    for r in replicas:
        try:
            codes.append(r.proc.wait(_STOP_TIMEOUT))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            codes.append(r.proc.wait())
    return codes


def _measure(client: BlockingMeshClient, cell: Cell, requests: int, in_shm: bool) -> None:
    rows = max(1, cell.size // (4 * 256))
    x = client.alloc((rows, 256), np.float32) if in_shm else np.empty((rows, 256), np.float32)
    x[:] = np.random.default_rng(cell.size).standard_normal((rows, 256), dtype=np.float32)
    expected = embed({"x": x})
    for _ in range(requests):
        start = time.perf_counter()
        out = client.infer("embedder", {"x": x}, timeout=30.0)
        cell.samples.append(time.perf_counter() - start)
        if not np.allclose(out["embedding"], expected["embedding"], atol=1e-6):
            cell.wrong += 1


def _table(cells: list[Cell]) -> Table:
    table = Table(title="arrowmesh demo: toy embedder, 2 replicas, round trips")
    for column in ("path", "size", "requests", "median", "p99", "GB/s", "by reference", "wrong"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for c in cells:
        med = float(np.median(c.samples))
        p99 = float(np.percentile(c.samples, 99))
        table.add_row(
            c.path,
            _size(c.size),
            str(len(c.samples)),
            f"{med * 1e3:.3f} ms",
            f"{p99 * 1e3:.3f} ms",
            f"{2 * c.size / med / 1e9:.2f}",
            _size(c.by_reference) if c.by_reference else "-",
            str(c.wrong),
        )
    return table


def _size(n: int) -> str:
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"


def main(requests: int = 50) -> int:
    """Run the demo; returns the process exit code."""
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)
    cells: list[Cell] = []
    shm_dir = Path(tempfile.mkdtemp(prefix="arrowmesh-demo-", dir=_shm_root()))
    try:
        with _replicas(2, shm_dir) as replicas:
            paths = _paths(replicas, shm_dir)
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("sending tensors", total=len(paths) * len(SIZES))
                for name, address, client_shm, in_shm in paths:
                    with BlockingMeshClient(address, shm_dir=client_shm) as client:
                        client.infer("embedder", {"x": np.ones((1, 256), np.float32)})  # connect
                        for size in SIZES:
                            cell = Cell(name, size)
                            before = _by_reference(client)
                            _measure(client, cell, max(10, requests * 4096 // size), in_shm)
                            cell.by_reference = _by_reference(client) - before
                            cells.append(cell)
                            progress.advance(task)
        left = sorted(p.name for p in shm_dir.iterdir())
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
    console.print(_table(cells))
    wrong = sum(c.wrong for c in cells)
    console.print(
        f"replicas stopped cleanly; {sum(len(c.samples) for c in cells)} requests, {wrong} wrong; "
        + (f"LEFT in shared memory: {left}" if left else "shared-memory directory left empty")
    )
    return 1 if wrong or left else 0


def _paths(replicas: list[Replica], shm_dir: Path) -> list[tuple[str, str, str, bool]]:
    """(label, address, client shm_dir, input allocated in shared memory) per path."""
    shm = str(shm_dir)
    paths: list[tuple[str, str, str, bool]] = []
    for label, shared, in_shm in (
        ("tcp", "", False),
        ("uds", "", False),
        ("shm copy-in", shm, False),
        ("shm alloc()", shm, True),
    ):
        for i, r in enumerate(replicas):
            address = r.uds if label == "uds" else r.mesh
            paths.append((f"{label} -> replica {i}", address, shared, in_shm))
    return paths


def _by_reference(client: BlockingMeshClient) -> int:
    stats = client.shm_stats()
    return 0 if stats is None else stats.bytes_by_reference


def _shm_root() -> str | None:
    return "/dev/shm" if Path("/dev/shm").is_dir() else None
