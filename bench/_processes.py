"""Server children: start them, wait for their ready files, and always stop them.

Each server runs in its own interpreter (`python -m bench._child`), bound to 127.0.0.1
port 0, and reports its addresses in a JSON ready file. Its output goes to a log file in
the work directory, quoted in the error if it fails to start. What clients are told of a
server is its ready file plus the run's `workdir` and `shm_dir`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ._errors import ServerFailed

logger = logging.getLogger(__name__)

Addresses = dict[str, str]

_POLL_S: Final = 0.01
_STOP_GRACE_S: Final = 5.0
_LOG_TAIL: Final = 2000
_ROOT: Final = str(Path(__file__).resolve().parent.parent)


@dataclass(frozen=True, slots=True)
class _Child:
    module: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    log: Path


@dataclass(frozen=True, slots=True)
class Servers:
    """The running server children: each one's ready info, by server module."""

    ready: Mapping[str, Addresses]
    children: Sequence[_Child]

    def stop(self) -> None:
        """Stop every child now; safe from another thread and more than once."""
        _stop(self.children)


@contextlib.contextmanager
def running_servers(
    modules: Sequence[str],
    workdir: Path,
    sizes: Sequence[int],
    timeout: float = 60.0,
    cpus: frozenset[int] | None = None,
    shm_dir: str = "",
) -> Iterator[Servers]:
    """Start one child per server module, wait until all are ready; stop them all after.

    `shm_dir` is the shared-memory directory servers and clients use ("" for none).
    Raises ServerFailed if a child exits or is not ready within `timeout` seconds.
    """
    children: list[_Child] = []
    run = {"workdir": str(workdir), "shm_dir": shm_dir}
    try:
        for module in modules:
            children.append(_start(module, workdir, sizes, cpus, shm_dir))
        deadline = time.monotonic() + timeout
        ready = {child.module: {**_wait_ready(child, deadline), **run} for child in children}
        yield Servers(ready, children)
    finally:
        _stop(children)


def _start(
    module: str, workdir: Path, sizes: Sequence[int], cpus: frozenset[int] | None, shm_dir: str
) -> _Child:
    name = module.rpartition(".")[2].lstrip("_")
    ready, log = workdir / f"{name}.ready.json", workdir / f"{name}.log"
    sizes_arg = ",".join(map(str, sizes))
    argv = [module, str(ready), str(workdir), shm_dir, sizes_arg, str(os.getpid())]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])),
    }
    # taskset before exec: every thread the server starts inherits the CPU set
    pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*pin, sys.executable, "-m", "bench._child", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            process_group=0,
        )
    logger.debug("server started", extra={"server": module, "pid": process.pid})
    return _Child(module, process, ready, log)


def _wait_ready(child: _Child, deadline: float) -> Addresses:
    while not child.ready_file.exists():
        code = child.process.poll()
        if code is not None:
            raise ServerFailed(
                f"{child.module} exited with {code} before it was ready{_tail(child)}"
            )
        if time.monotonic() > deadline:
            raise ServerFailed(f"{child.module} was not ready in time{_tail(child)}")
        time.sleep(_POLL_S)  # paces the poll of a file another process writes
    info = json.loads(child.ready_file.read_text())
    return {key: value for key, value in info.items() if isinstance(value, str)}


def _tail(child: _Child) -> str:
    try:
        text = child.log.read_text(errors="replace")[-_LOG_TAIL:]
    except OSError:
        return ""
    return f"; its output ends:\n{text}" if text else ""


def _stop(children: Sequence[_Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    for child in children:
        try:
            child.process.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("server ignored SIGTERM, killing it", extra={"server": child.module})
            child.process.kill()
            child.process.wait()
