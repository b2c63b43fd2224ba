"""Shared fixtures: blocking-call detection, child processes that serve, deadlines."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy.testing  # noqa: F401  # imported lazily it would read files inside the event loop
import pytest
from blockbuster import BlockBuster, blockbuster_ctx

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def shm_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh shared-memory directory per test (children inherit it); it must end empty."""
    path = Path(tempfile.mkdtemp(prefix="arrowmesh-test-", dir="/dev/shm"))
    monkeypatch.setenv("ARROWMESH_SHM_DIR", str(path))
    yield path
    left = sorted(p.name for p in path.iterdir()) if path.exists() else []
    shutil.rmtree(path, ignore_errors=True)
    assert not left, f"files left in the shared-memory directory: {left}"


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose event loop makes a blocking call."""
    with blockbuster_ctx(["transport", "sidecar", "discovery", "tests"]) as bb:
        # The buffer pool's lock is held for a few list operations, never across I/O.
        for name in ("threading.Lock.acquire", "threading.Lock.acquire_lock"):
            bb.functions[name].can_block_functions.append(
                ("transport/_pool.py", {"acquire", "_give_back", "stats"})
            )
        yield bb


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` until it is true or `timeout` passes (then fail, saying `what`)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@dataclass
class ServeProcess:
    """A `serve()` running in a child process."""

    proc: subprocess.Popen[bytes]
    info: dict[str, object]

    @property
    def mesh(self) -> str:
        return str(self.info["mesh"])

    @property
    def uds(self) -> str:
        return str(self.info["uds"])

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.proc, timeout)


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM `proc` and wait for its exit code; SIGKILL (and raise) after `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[[str], ServeProcess]]:
    """Start `serve()` in a child process running `source` (which must call serve)."""
    started: list[ServeProcess] = []

    def start(source: str, timeout: float = 30.0) -> ServeProcess:
        ready = tmp_path / f"ready-{len(started)}.json"
        sock = tmp_path / f"mesh-{len(started)}.sock"
        script = textwrap.dedent(source).format(ready=str(ready), uds=str(sock))
        proc = subprocess.Popen([sys.executable, "-c", script], env=child_env())
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout, "the ready file")
        if proc.poll() is not None:
            pytest.fail(f"serve process exited with {proc.returncode} before it was ready")
        started.append(ServeProcess(proc, json.loads(ready.read_text())))
        return started[-1]

    yield start
    for sp in started:
        if sp.proc.poll() is None:
            sp.proc.kill()
            sp.proc.wait()
