"""Fixtures of the upstream adapter tests: real model servers, and sidecars fronting them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ..conftest import child_env, wait_for
from ..e2e.conftest import Sidecar
from . import servers
from .servers import MLSERVER, TRITON, ModelServer, ServerKind

StartSidecar = Callable[..., Sidecar]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the real model servers cost: venv installs and starts."""
    if not servers.TIMINGS:
        return
    terminalreporter.section("model servers")
    for what, seconds in servers.TIMINGS:
        terminalreporter.write_line(
            f"{what}: " + ("cached" if seconds is None else f"{seconds:.1f} s")
        )


def _venv(kind: ServerKind) -> Path:
    servers.skip_unless_enabled()
    return servers.venv_for(kind)


@pytest.fixture(scope="session")
def triton_venv() -> Path:
    """The PyTriton venv (installed on first use, then cached)."""
    return _venv(TRITON)


@pytest.fixture(scope="session")
def mlserver_venv() -> Path:
    """The MLServer venv (installed on first use, then cached)."""
    return _venv(MLSERVER)


def _server(kind: ServerKind, venv: Path, workdir: Path) -> Iterator[ModelServer]:
    http_port, grpc_port = servers.free_ports(2)
    server = ModelServer(kind, venv, workdir, http_port, grpc_port)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def triton(triton_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """A Triton Inference Server serving `echo`, shared by a module's tests."""
    yield from _server(TRITON, triton_venv, tmp_path_factory.mktemp("triton"))


@pytest.fixture(scope="module")
def mlserver(
    mlserver_venv: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    """An MLServer serving `echo`, shared by a module's tests."""
    yield from _server(MLSERVER, mlserver_venv, tmp_path_factory.mktemp("mlserver"))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Callable[[ServerKind, Path], ModelServer]]:
    """Start a server of one's own (a test that stops it); stopped at the end."""
    started: list[ModelServer] = []

    def start(kind: ServerKind, venv: Path) -> ModelServer:
        workdir = tmp_path / f"{kind.name}-{len(started)}"
        workdir.mkdir()
        http_port, grpc_port = servers.free_ports(2)
        server = ModelServer(kind, venv, workdir, http_port, grpc_port)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


class SidecarGroup:
    """`sidecar run` children fronting OIP apps, with static discovery and one shm dir."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.shm_dir = tempfile.mkdtemp(prefix="arrowmesh-oip-upstream-", dir="/dev/shm")
        self.mesh_yaml = workdir / "mesh.yaml"
        self.mesh_yaml.write_text("services: {}\n")
        self.started: list[Sidecar] = []

    def start(
        self, service: str, app: str, protocol: str, *flags: str, ready: bool = True
    ) -> Sidecar:
        """A sidecar fronting `app`; with `ready`, returned once /readyz answers 200."""
        n = len(self.started)
        ready_file, log = self.workdir / f"sidecar-{n}.json", self.workdir / f"sidecar-{n}.log"
        argv = [sys.executable, "-m", "sidecar", "run", "--service", service, "--app", app,
                "--app-protocol", protocol, "--discovery", f"static://{self.mesh_yaml}",
                "--mesh-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
                "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
                "--ready-file", str(ready_file), "--app-health-interval", "0.2",
                "--drain-timeout", "5", "--log-format", "text", *flags]  # fmt: skip
        env = child_env()
        env["ARROWMESH_SHM_DIR"] = self.shm_dir
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: ready_file.exists() or proc.poll() is not None, 30, "the ready file")
        assert proc.poll() is None, log.read_text()[-3000:]
        sidecar = Sidecar(proc, json.loads(ready_file.read_text()), log)
        self.started.append(sidecar)
        if ready:
            wait_for(lambda: sidecar.admin("/readyz")[0] == 200, 30, f"{service} to be ready")
        return sidecar

    def close(self) -> None:
        """Stop every sidecar (each must exit 0) and check the shm directory is empty."""
        codes = []
        for sidecar in self.started:
            try:
                codes.append(sidecar.stop(15))
            finally:
                if sidecar.proc.poll() is None:
                    sidecar.proc.kill()
                    sidecar.proc.wait()
        left = sorted(p.name for p in Path(self.shm_dir).iterdir())
        shutil.rmtree(self.shm_dir, ignore_errors=True)
        assert codes == [0] * len(codes), codes
        assert not left, f"files left in the shared-memory directory: {left}"


@pytest.fixture(scope="module")
def module_sidecars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarGroup]:
    """Sidecars shared by a module's tests."""
    group = SidecarGroup(tmp_path_factory.mktemp("sidecars"))
    yield group
    group.close()


@pytest.fixture
def sidecars(tmp_path: Path) -> Iterator[SidecarGroup]:
    """Sidecars of one test."""
    group = SidecarGroup(tmp_path)
    yield group
    group.close()


# The gRPC front has its own service name and names the model: --app-model.
SERVICE = {"http": "echo", "grpc": "echo-grpc"}
PROTOCOLS = ["http", "grpc"]


def front_both(server: ModelServer, group: SidecarGroup) -> dict[str, Sidecar]:
    """One sidecar fronting `server` over each protocol, by protocol."""
    return {
        "http": group.start("echo", server.http_url, "oip-http"),
        "grpc": group.start("echo-grpc", server.grpc_url, "oip-grpc", "--app-model", "echo"),
    }
