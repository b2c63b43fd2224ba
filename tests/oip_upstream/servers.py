"""Real model servers for the upstream adapter tests, each in its own virtual environment.

A server runs as its container would: its own interpreter environment (a venv made from
this Python, holding only the server's pinned package), its own process group, its own
ports, none of arrowmesh on its path. Venvs are made once and kept under
ARROWMESH_SERVER_VENVS (default ~/.cache/arrowmesh/server-venvs), one per requirement set
and Python version: a second run installs nothing. A lock file lets concurrent test runs
share the cache; a marker written last means an interrupted install is redone, not used.
Installs and starts are timed (`TIMINGS`) and the conftest prints them after the run.

ARROWMESH_MODEL_SERVERS=off skips the tests that need these servers, saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

MODELS: Final = Path(__file__).resolve().parent / "models"
SWITCH: Final = "ARROWMESH_MODEL_SERVERS"
VENV_ROOT: Final = "ARROWMESH_SERVER_VENVS"
INSTALL_TIMEOUT: Final = 600.0
MODEL: Final = "echo"


@dataclass(frozen=True)
class ServerKind:
    """A model server package, pinned, and the model code it runs."""

    name: str
    requirements: tuple[str, ...]


TRITON: Final = ServerKind("triton", ("nvidia-pytriton==0.7.0",))
MLSERVER: Final = ServerKind("mlserver", ("mlserver==1.7.1",))

# (what, seconds or None when it was cached): printed at the end of the run.
TIMINGS: list[tuple[str, float | None]] = []


def skip_unless_enabled() -> None:
    """Skip the calling test (with the reason) when ARROWMESH_MODEL_SERVERS=off."""
    if os.environ.get(SWITCH, "").lower() in ("0", "off", "no", "false"):
        pytest.skip(f"real model servers are off ({SWITCH}={os.environ[SWITCH]})")


def venv_root() -> Path:
    """Where server venvs are kept."""
    configured = os.environ.get(VENV_ROOT)
    return Path(configured) if configured else Path.home() / ".cache/arrowmesh/server-venvs"


def venv_for(kind: ServerKind) -> Path:
    """The venv of `kind`, installed first if it is not in the cache yet (blocking)."""
    identity = json.dumps([kind.requirements, sys.version, platform.machine()])
    venv = venv_root() / f"{kind.name}-{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run installing the same venv: wait for it
        marker = venv / "arrowmesh-installed.json"
        if marker.exists():
            TIMINGS.append((f"{kind.name} venv (cached at {venv})", None))
            return venv
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", "--clear", str(venv)])
        _run(
            [str(venv / "bin/python"), "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", "--quiet", *kind.requirements],
        )  # fmt: skip
        seconds = time.monotonic() - started
        size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
        marker.write_text(json.dumps({"requirements": kind.requirements, "seconds": seconds,
                                      "bytes": size}))  # fmt: skip
        TIMINGS.append((f"{kind.name} venv installed ({size >> 20} MiB at {venv})", seconds))
        return venv


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, timeout=INSTALL_TIMEOUT, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
        pytest.fail(f"{' '.join(argv)} exited with {done.returncode}:\n{output}")


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (third-party servers cannot report a port 0 they bound)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class ModelServer:
    """A model server process (the leader of its own process group) and its ports."""

    kind: ServerKind
    venv: Path
    workdir: Path
    http_port: int
    grpc_port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / f"{self.kind.name}.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 120.0) -> None:
        """Start the server; return once its model answers ready. Fails with its log."""
        started = time.monotonic()
        argv, env = self._command()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = started + timeout
        while not self.model_ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                pytest.fail(f"{self.kind.name} did not get ready in {timeout} s:\n{tail}")
            time.sleep(0.1)
        TIMINGS.append((f"{self.kind.name} start to model ready", time.monotonic() - started))

    def model_ready(self) -> bool:
        """True if the server answers OIP model-ready for `echo` over HTTP."""
        url = f"{self.http_url}/v2/models/{MODEL}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process group, wait for it; SIGKILL whatever is left after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        deadline = time.monotonic() + 5.0
        while _group_alive(proc.pid):  # its children (tritonserver, stubs) go with it
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait(5)
        TIMINGS.append((f"{self.kind.name} stop", time.monotonic() - started))

    def _command(self) -> tuple[list[str], dict[str, str]]:
        python = str(self.venv / "bin/python")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        if self.kind == TRITON:
            workspace = self.workdir / "workspace"
            argv = [python, str(MODELS / "triton_echo.py"), "--http-port", str(self.http_port),
                    "--grpc-port", str(self.grpc_port), "--workspace", str(workspace)]  # fmt: skip
            return argv, env
        repository = self.workdir / "models"
        (repository / MODEL).mkdir(parents=True, exist_ok=True)
        (repository / MODEL / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": MODEL,
                    "implementation": "mlserver_echo.Echo",
                    # Metadata only (MLServer does not hold requests to it): what sidecars
                    # report as the model's signature.
                    "inputs": [{"name": "f32", "datatype": "FP32", "shape": [-1, -1]}],
                    "outputs": [{"name": "out_f32", "datatype": "FP32", "shape": [-1, -1]}],
                }
            )
        )
        (repository / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "http_port": self.http_port,
                    "grpc_port": self.grpc_port,
                    "metrics_endpoint": None,  # no third port
                    "parallel_workers": 0,  # the model in the server process: starts faster
                }
            )
        )
        env["PYTHONPATH"] = str(MODELS)
        return [str(self.venv / "bin/mlserver"), "start", str(repository)], env


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
