"""The processes of one `bench oip` run, each a child, and where each path connects.

    triton           the Triton echo model (bench.oip._triton: PyTriton in its own venv)
    sidecar-triton-http  `sidecar run --app http://TRITON --app-protocol oip-http`
    sidecar-triton-grpc  `sidecar run --app grpc://TRITON --app-protocol oip-grpc`
    replica          a `serve()` echo (bench.oip._replica)
    sidecar-serve    `sidecar run --app tcp://REPLICA --app-protocol mesh`

Every sidecar serves service `echo` (the model name tritonclient asks for, and the model
name it asks Triton for), with static discovery from an empty file: it only fronts its
app. Replica and sidecars share the run's shared-memory directory, so the sidecar hands
the replica large tensors by reference. Triton is optional: when its venv cannot be made,
model servers are off, or it does not start, its paths are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench._errors import ServerFailed
from bench._rundir import RunDir
from bench.hop._children import ROOT, Child, Children, child_env

from ._paths import PROTOCOLS, Protocol, Route
from ._replica import SERVICE

INSTALL_TIMEOUT_S: Final = 1200.0  # a venv, then pip: servers.py allows 600 s each
# Triton's Python backend stub ignores SIGTERM: ModelServer.stop SIGKILLs Triton's process
# group after its leader exits plus up to 5 s, and a wrapper killed before that (Children
# gives each child 5 s) leaves the stub running, and its 128 MiB segment in /dev/shm.
TRITON_STOP_S: Final = 45.0
_POLL_S: Final = 0.05
_DISABLED: Final = 3  # bench.oip._triton's exit code when model servers are off
_TAIL: Final = 1500


@dataclass(slots=True)
class Stack:
    """Where each (route, protocol) connects, the routes left out with a one-line why, and
    notes that say more."""

    addresses: dict[tuple[Route, Protocol], str] = field(default_factory=dict)
    skipped: dict[Route, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    triton_start_s: float | None = None


def triton_venv() -> tuple[str | None, str]:
    """Make or find the PyTriton venv (blocking): (None, its path) or (why not, "")."""
    argv = [sys.executable, "-m", "bench.oip._triton", "install"]
    try:
        done = subprocess.run(
            argv, env=child_env(), cwd=ROOT, capture_output=True, text=True,
            timeout=INSTALL_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the PyTriton venv could not be made: {exc}", ""
    said = (done.stderr.strip() or done.stdout.strip())[-_TAIL:]
    if done.returncode == _DISABLED:
        return said, ""
    if done.returncode != 0:
        return f"the PyTriton venv could not be made (exit {done.returncode}): {said}", ""
    return None, done.stdout.strip()


def first_line(text: str, limit: int = 160) -> str:
    """The first line of `text`, cut at `limit` characters: a reason for a table cell."""
    line = text.strip().partition("\n")[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def start(
    running: Children, run: RunDir, sizes: tuple[int, ...], triton_skipped: str | None
) -> Stack:
    """Start every process, Triton's first (the slowest). Raises ServerFailed for ours."""
    stack = Stack()
    env = child_env({"ARROWMESH_SHM_DIR": str(run.shm_dir)})
    empty = run.path / "discovery.json"
    empty.write_text(json.dumps({"services": {}}))
    triton = None
    if triton_skipped is not None:
        stack.skipped.update({"triton": triton_skipped, "sidecar-triton": triton_skipped})
    else:
        workdir = run.path / "triton"
        workdir.mkdir()
        argv = [sys.executable, "-m", "bench.oip._triton", "serve",
                str(run.path / "triton.ready.json"), str(workdir)]  # fmt: skip
        triton = running.start("triton", argv, child_env())
    replica = _replica(running, run, sizes, env)
    info = running.wait_ready_file(replica, run.path / "replica.ready.json")
    serve = _sidecar(running, run, "sidecar-serve", f"tcp://{info['mesh']}", "mesh", empty, env)
    fronts = []
    if triton is not None:
        try:
            ready = running.wait_ready_file(triton, run.path / "triton.ready.json")
        except ServerFailed as exc:
            why = "Triton did not start (its output is in the notes)"
            stack.skipped.update({"triton": why, "sidecar-triton": why})
            stack.notes.append(f"Triton did not start: {exc}")
        else:
            stack.triton_start_s = float(str(ready["start_s"]))
            for protocol in PROTOCOLS:
                stack.addresses["triton", protocol] = str(ready[protocol])
                app = f"{protocol}://{ready[protocol]}"
                name = f"sidecar-triton-{protocol}"
                child = _sidecar(running, run, name, app, f"oip-{protocol}", empty, env)
                fronts.append((protocol, child))
    for protocol, address in _ready(running, run, serve).items():
        stack.addresses["sidecar-serve", protocol] = address
    for protocol, child in fronts:
        stack.addresses["sidecar-triton", protocol] = _ready(running, run, child)[protocol]
    return stack


def stop_triton(running: Children) -> None:
    """Stop the Triton wrapper first, giving it the time Triton's group needs to go."""
    pid = running.pids().get("triton")
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TRITON_STOP_S
    while "triton" in running.pids() and time.monotonic() < deadline:
        time.sleep(_POLL_S)  # paces the poll of another process's exit


def _replica(
    running: Children, run: RunDir, sizes: tuple[int, ...], env: Mapping[str, str]
) -> Child:
    # bench._child's argv: MODULE READY_FILE WORKDIR SHM_DIR SIZES PARENT (the exec
    # wrapper keeps this process as the parent).
    argv = [sys.executable, "-m", "bench._child", "bench.oip._replica",
            str(run.path / "replica.ready.json"), str(run.path), str(run.shm_dir),
            ",".join(map(str, sizes)), str(os.getpid())]  # fmt: skip
    return running.start("replica", argv, env)


def _sidecar(
    running: Children,
    run: RunDir,
    name: str,
    app: str,
    protocol: str,
    discovery: Path,
    env: Mapping[str, str],
) -> Child:
    argv = [
        sys.executable, "-m", "sidecar", "run", "--service", SERVICE,
        "--app", app, "--app-protocol", protocol,
        "--discovery", f"static://{discovery}", "--advertise-addr", "127.0.0.1",
        "--mesh-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
        "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
        "--ready-file", str(run.path / f"{name}.ready.json"), "--drain-timeout", "2",
        "--app-health-interval", "0.2", "--log-level", "warning", "--log-format", "text",
    ]  # fmt: skip
    return running.start(name, argv, env)


def _ready(running: Children, run: RunDir, child: Child) -> dict[Protocol, str]:
    """Once its ready file is written and its app answers (/readyz 200): its OIP ports."""
    info = running.wait_ready_file(child, run.path / f"{child.name}.ready.json")
    running.wait_http_ok(child, f"http://{info['admin']}/readyz")
    return {protocol: str(info[protocol]) for protocol in PROTOCOLS}
