"""One mesh for all of tests/oip: two `serve()` replicas and a sidecar, as child processes.

The sidecar fronts replica "simple" (its own app, the way Triton's examples name their
model) and reaches replica "routed" through its router (a static discovery file lists it).
Both replicas add and subtract INPUT0 and INPUT1 when given those, and echo any other
inputs back as outputs of the same names. They share one shared-memory directory, made for
this package and checked empty once everything has stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import child_env, stop_process, wait_for

REPLICA = """
import sys
from sidecar import TensorSpec, serve

def handler(inputs):
    if "INPUT0" in inputs and "INPUT1" in inputs:
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
    return dict(inputs)

pair = [TensorSpec(f"INPUT{i}", "INT32", (-1, 16)) for i in range(2)]
outs = [TensorSpec(f"OUTPUT{i}", "INT32", (-1, 16)) for i in range(2)]
serve(handler, service=sys.argv[1], ready_file=sys.argv[2], inputs=pair, outputs=outs)
"""
MAX_MESSAGE_SIZE = 65 << 20  # the sidecar's limit: a 64 MiB tensor fits, going over is cheap


@dataclass
class Mesh:
    """The running mesh: the sidecar's listeners and pid, the replicas' pids."""

    sidecar: dict[str, str]
    sidecar_pid: int
    replica_pids: dict[str, int]
    shm_dir: Path

    @property
    def http(self) -> str:
        return self.sidecar["http"]

    @property
    def url(self) -> str:
        return f"http://{self.sidecar['http']}"

    def metric(self, name: str) -> float:
        """A sample of the sidecar's Prometheus metrics (0 if absent)."""
        with urllib.request.urlopen(f"http://{self.sidecar['admin']}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def mapped(self, pid: int, key: str) -> bool:
        """True if process `pid` maps the shared-memory object `key`."""
        target = "/dev/shm/" + key.lstrip("/")
        maps = Path(f"/proc/{pid}/maps").read_text()
        # An unlinked object still mapped shows as "/dev/shm/key (deleted)".
        return any(line.endswith((target, target + " (deleted)")) for line in maps.splitlines())


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _ready(proc: subprocess.Popen[bytes], ready: Path, log: Path) -> dict[str, object]:
    wait_for(lambda: ready.exists() or proc.poll() is not None, 30, f"{ready.name}")
    assert proc.poll() is None, log.read_text()[-3000:]
    info: dict[str, object] = json.loads(ready.read_text())
    return info


@pytest.fixture(scope="package")
def mesh() -> Iterator[Mesh]:
    """The replicas and the sidecar, started once for the package (see the module doc)."""
    work = Path(tempfile.mkdtemp(prefix="arrowmesh-oip-"))
    shm_dir = Path(tempfile.mkdtemp(prefix="arrowmesh-oip-", dir="/dev/shm"))
    env = child_env() | {"ARROWMESH_SHM_DIR": str(shm_dir)}
    script = textwrap.dedent(REPLICA)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        replicas = {}
        for name in ("simple", "routed"):
            ready, log = work / f"{name}.json", work / f"{name}.log"
            proc = _start([sys.executable, "-c", script, name, str(ready)], env, log)
            procs.append(proc)
            replicas[name] = (proc, ready, log)
        infos = {name: _ready(*replicas[name]) for name in replicas}
        host, port = str(infos["routed"]["mesh"]).rsplit(":", 1)
        static = work / "mesh.yaml"
        endpoint = {"id": "routed-1", "address": host, "port": int(port)}
        static.write_text(json.dumps({"services": {"routed": [endpoint]}}))
        ready, log = work / "sidecar.json", work / "sidecar.log"
        argv = [sys.executable, "-m", "sidecar", "run", "--service", "simple",
                "--app", f"tcp://{infos['simple']['mesh']}", "--app-protocol", "mesh",
                "--discovery", f"static://{static}", "--mesh-addr", "127.0.0.1:0",
                "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
                "--admin-addr", "127.0.0.1:0", "--ready-file", str(ready),
                "--app-health-interval", "0.2", "--max-message-size", str(MAX_MESSAGE_SIZE),
                "--log-format", "text"]  # fmt: skip
        proc = _start(argv, env, log)
        procs.append(proc)
        info = _ready(proc, ready, log)
        running = Mesh(
            sidecar={k: str(v) for k, v in info.items()},
            sidecar_pid=proc.pid,
            replica_pids={name: p.pid for name, (p, _, _) in replicas.items()},
            shm_dir=shm_dir,
        )
        wait_for(lambda: _ok(f"{running.url}/v2/health/ready"), 30, "the sidecar to be ready")
        yield running
        for proc in reversed(procs):
            assert stop_process(proc, 30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        left = sorted(p.name for p in shm_dir.iterdir())
        shutil.rmtree(shm_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    assert not left, f"files left in the shared-memory directory: {left}"


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
