"""`sidecar demo`: a small mesh on this machine, real traffic over each path, a table of results."""

from __future__ import annotations

import json
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


def _start(workdir: Path, index: int) -> Replica:
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
        ]
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
def _replicas(count: int) -> Iterator[list[Replica]]:
    with tempfile.TemporaryDirectory(prefix="arrowmesh-demo-") as tmp:
        started: list[Replica] = []
        try:
            for i in range(count):
                started.append(_start(Path(tmp), i))
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


def _measure(client: BlockingMeshClient, cell: Cell, requests: int) -> None:
    rows = max(1, cell.size // (4 * 256))
    x = np.random.default_rng(cell.size).standard_normal((rows, 256), dtype=np.float32)
    expected = embed({"x": x})
    for _ in range(requests):
        start = time.perf_counter()
        out = client.infer("embedder", {"x": x}, timeout=30.0)
        cell.samples.append(time.perf_counter() - start)
        if not np.allclose(out["embedding"], expected["embedding"], atol=1e-6):
            cell.wrong += 1


def _table(cells: list[Cell]) -> Table:
    table = Table(title="arrowmesh demo: toy embedder, 2 replicas, round trips")
    for column in ("path", "size", "requests", "median", "p99", "GB/s", "wrong"):
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
            str(c.wrong),
        )
    return table


def _size(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"


def main(requests: int = 50) -> int:
    """Run the demo; returns the process exit code."""
    console = Console()
    cells: list[Cell] = []
    with _replicas(2) as replicas:
        paths = [(f"tcp -> replica {i}", r.mesh) for i, r in enumerate(replicas)]
        paths += [(f"uds -> replica {i}", r.uds) for i, r in enumerate(replicas)]
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("sending tensors", total=len(paths) * len(SIZES))
            for name, address in paths:
                with BlockingMeshClient(address) as client:
                    client.infer("embedder", {"x": np.ones((1, 256), np.float32)})  # connect
                    for size in SIZES:
                        cell = Cell(name, size)
                        _measure(client, cell, max(10, requests * 4096 // size))
                        cells.append(cell)
                        progress.advance(task)
    console.print(_table(cells))
    wrong = sum(c.wrong for c in cells)
    console.print(
        f"replicas stopped cleanly; {sum(len(c.samples) for c in cells)} requests, {wrong} wrong"
    )
    return 1 if wrong else 0
