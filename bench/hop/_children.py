"""The run's child processes: each pinned, logged in the run directory, waited for, stopped.

Every child starts through `bench.hop._exec`, which pins it to the servers' CPUs and has
the kernel send it SIGTERM should this process die without stopping it. Each lives in its
own process group, so Ctrl-C reaches only the bench, which unwinds through `children()`
and stops them all: SIGTERM, a grace period, then SIGKILL. The watchdog may call
`stop_all` from its thread to end a hung round trip.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench._errors import ServerFailed

logger = logging.getLogger(__name__)

ROOT: Final = Path(__file__).resolve().parent.parent.parent
START_TIMEOUT_S: Final = 60.0  # a loaded 2-core machine imports a sidecar in ~1-3 s
_POLL_S: Final = 0.01
_GRACE_S: Final = 5.0
_LOG_TAIL: Final = 2000


@dataclass(frozen=True, slots=True)
class Child:
    """One started child: its name, process and log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The program's pid (the exec wrapper keeps it)."""
        return self.process.pid

    def tail(self) -> str:
        """The end of its output, for error messages ("" if none)."""
        try:
            text = self.log.read_text(errors="replace")[-_LOG_TAIL:]
        except OSError:
            return ""
        return f"; its output ends:\n{text}" if text.strip() else ""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, the repository on PYTHONPATH, plus `extra`."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


class Children:
    """The children of one run. `stop_all` is safe from any thread, more than once."""

    def __init__(self, workdir: Path, cpus: frozenset[int] | None) -> None:
        self._workdir = workdir
        self._cpus = "-" if not cpus else ",".join(map(str, sorted(cpus)))
        self._started: list[Child] = []
        self._lock = threading.Lock()
        self._stopped = False

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        """Start `argv` as child `name`, its output in `name`.log. Raises ServerFailed."""
        log = self._workdir / f"{name}.log"
        wrapper = [sys.executable, "-m", "bench.hop._exec", str(os.getpid()), self._cpus, *argv]
        with self._lock:
            if self._stopped:
                raise ServerFailed(f"not starting {name}: the run is being stopped")
            with log.open("wb") as out:
                try:
                    process = subprocess.Popen(
                        wrapper,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=dict(env),
                        cwd=str(ROOT),
                        process_group=0,
                    )
                except OSError as exc:
                    raise ServerFailed(f"cannot start {name}: {exc}") from exc
            child = Child(name, process, log)
            self._started.append(child)
        logger.debug("child started", extra={"child": name, "pid": process.pid})
        return child

    def wait_ready_file(self, child: Child, path: Path) -> dict[str, object]:
        """The JSON object `child` writes to `path` once ready. Raises ServerFailed."""
        self.wait_until(child, path.exists, "its ready file")
        info: dict[str, object] = json.loads(path.read_text())
        return info

    def wait_listening(self, child: Child, address: str) -> None:
        """Until `address` ("host:port") accepts a connection. Raises ServerFailed."""
        host, _, port = address.rpartition(":")
        self.wait_until(child, lambda: _accepts(host, int(port)), f"a listener on {address}")

    def wait_http_ok(self, child: Child, url: str) -> None:
        """Until GET `url` answers 2xx (a sidecar's /readyz). Raises ServerFailed."""
        self.wait_until(child, lambda: _http_ok(url), f"{url} to answer 200")

    def wait_until(self, child: Child, ready: Callable[[], bool], what: str) -> None:
        """Poll `ready` until true. Raises ServerFailed if `child` exits or time runs out."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            code = child.process.poll()
            if code is not None:
                raise ServerFailed(f"{child.name} exited with {code} before {what}{child.tail()}")
            if time.monotonic() > deadline:
                raise ServerFailed(
                    f"{child.name}: no {what} in {START_TIMEOUT_S:g} s{child.tail()}"
                )
            time.sleep(_POLL_S)  # paces the poll of another process's progress

    def pids(self) -> dict[str, int]:
        """Every running child's pid, by name."""
        with self._lock:
            return {c.name: c.pid for c in self._started if c.process.poll() is None}

    def dead(self) -> list[Child]:
        """The children that exited, for error messages."""
        with self._lock:
            return [child for child in self._started if child.process.poll() is not None]

    def stop_all(self) -> None:
        """Stop every child: SIGTERM, up to a grace period, then SIGKILL."""
        with self._lock:
            self._stopped = True
            started = list(self._started)
        for child in started:
            if child.process.poll() is None:
                child.process.terminate()
        for child in started:
            try:
                child.process.wait(_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("child ignored SIGTERM, killing it", extra={"child": child.name})
                child.process.kill()
                child.process.wait()


@contextlib.contextmanager
def children(workdir: Path, cpus: frozenset[int] | None) -> Iterator[Children]:
    """A `Children` whose every child is stopped when the block ends, however it ends."""
    running = Children(workdir, cpus)
    try:
        yield running
    finally:
        running.stop_all()


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False
