"""Fixtures of the end-to-end tests: the Consul emulator and `sidecar run` children."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import child_env, stop_process, wait_for


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    info: dict[str, str]
    log: Path

    @property
    def mesh(self) -> str:
        return self.info["mesh"]

    def admin(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.info['admin']}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.admin("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def stop(self, timeout: float = 30.0) -> int:
        return stop_process(self.proc, timeout)


@pytest.fixture
def consul(tmp_path: Path) -> Iterator[str]:
    """The Consul emulator in a child process, with fast reaping; its address."""
    ready = tmp_path / "consul.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.consul_emulator", "--port", "0", "--ready-file", str(ready),
         "--reap-interval", "0.5", "--min-deregister-after", "1"],
        env=child_env(),
    )  # fmt: skip
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 30, "the consul emulator")
        assert proc.poll() is None, "the consul emulator exited"
        yield str(json.loads(ready.read_text())["address"])
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def sidecars(tmp_path: Path, consul: str) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def start(
        service: str,
        app: str | None = None,
        shm_dir: str | None = None,
        app_protocol: str = "mesh",
        extra: Sequence[str] = (),
    ) -> Sidecar:
        n = len(started)
        ready, log = tmp_path / f"sidecar-{n}.json", tmp_path / f"sidecar-{n}.log"
        argv = [sys.executable, "-m", "sidecar", "run", "--service", service,
                "--discovery", f"consul://{consul}", "--mesh-addr", "127.0.0.1:0",
                "--admin-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
                "--grpc-addr", "127.0.0.1:0", "--ready-file", str(ready),
                "--app-health-interval", "0.2", "--drain-timeout", "10",
                "--log-format", "text"]  # fmt: skip
        if app is not None:
            argv += ["--app", app, "--app-protocol", app_protocol]
        argv += extra
        env = child_env()
        if shm_dir is not None:
            env["ARROWMESH_SHM_DIR"] = shm_dir
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: ready.exists() or proc.poll() is not None, 30, "the sidecar's ready file")
        assert proc.poll() is None, log.read_text()[-3000:]
        started.append(Sidecar(proc, json.loads(ready.read_text()), log))
        return started[-1]

    yield start
    for sidecar in started:
        if sidecar.proc.poll() is None:
            sidecar.proc.kill()
            sidecar.proc.wait()
