"""Drive `bench discovery`: per backend, replicas come and die while a cluster watches.

Appearance: from the replica's `register()` call (static: from the file write) to the
watching cluster listing it. Removal: from SIGKILL to the cluster dropping it. What dies:
for consul, the app (its stand-in sidecar stops passing the TTL check); for mdns, the
advertiser itself with its app (no goodbye: the backend's probes must notice); for static,
the app (the cluster's own probes drop it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from discovery import ConsulUri, Endpoint, Registry
from discovery._cluster import Cluster, Prober, tcp_prober
from discovery._consul import ConsulRegistry
from discovery._mdns import MdnsRegistry
from discovery._static import StaticRegistry

Backend = Literal["consul", "mdns", "static"]
BACKENDS: Final[tuple[Backend, ...]] = ("consul", "mdns", "static")
ROOT: Final = Path(__file__).resolve().parent.parent.parent
STEP_TIMEOUT: Final = 15.0  # a round that takes longer than this is a miss, not a hang


@dataclass(frozen=True, slots=True)
class Round:
    """One replica's life as the watcher saw it (None: not seen within STEP_TIMEOUT)."""

    backend: Backend
    appear_s: float | None
    remove_s: float | None


@dataclass(slots=True)
class _Watch:
    """When each endpoint id was first seen and last dropped by the cluster."""

    appeared: dict[str, float]
    removed: dict[str, float]
    changed: asyncio.Event

    def listener(self, endpoints: tuple[Endpoint, ...]) -> None:
        now = time.monotonic()
        ids = {e.id for e in endpoints}
        for i in ids - self.appeared.keys():
            self.appeared[i] = now
        for i in self.appeared.keys() - ids - self.removed.keys():
            self.removed[i] = now
        self.changed.set()

    async def until(self, what: Callable[[], bool]) -> bool:
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                while not what():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True


async def measure(
    backend: Backend, rounds: int, workdir: Path, tick: Callable[[], None]
) -> list[Round]:
    """`rounds` replica lives on `backend`; `tick` is called after each."""
    async with _registry(backend, workdir) as (uri, registry, prober):
        results = []
        for n in range(rounds):
            service = f"bench-{backend}-{os.getpid()}-{n}"
            results.append(await _one(backend, uri, registry, prober, service, workdir))
            tick()
        return results


async def _one(
    backend: Backend,
    uri: str,
    registry: Registry,
    prober: Prober | None,
    service: str,
    workdir: Path,
) -> Round:
    watch = _Watch({}, {}, asyncio.Event())
    replica_id = f"{service}-r"
    async with Cluster(service, registry, prober=prober, probe_interval=0.25) as cluster:
        cluster.add_listener(watch.listener)
        await cluster.wait_ready()
        replica = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.discovery._replica", "--discovery", uri,
            "--service", service, "--id", replica_id,
            stdout=asyncio.subprocess.PIPE, env=_child_env(),
        )  # fmt: skip
        try:
            started = await _event(replica, "registering")
            await _event(replica, "healthy")
            t0 = float(started["t"])
            if backend == "static":
                t0 = await _write_static(workdir, service, replica_id, int(started["port"]))
            seen = await watch.until(lambda: replica_id in watch.appeared)
            appear = watch.appeared[replica_id] - t0 if seen else None
            victim = replica.pid if backend == "mdns" else int(started["app_pid"])
            t_kill = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            if backend == "mdns":
                os.kill(int(started["app_pid"]), signal.SIGKILL)
            gone = seen and await watch.until(lambda: replica_id in watch.removed)
            remove = watch.removed[replica_id] - t_kill if gone else None
        finally:
            if replica.returncode is None:
                replica.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(10.0):
                        await replica.wait()
                except TimeoutError:
                    replica.kill()
                    await replica.wait()
    return Round(backend, appear, remove)


async def _event(proc: asyncio.subprocess.Process, name: str) -> dict[str, float]:
    assert proc.stdout is not None
    async with asyncio.timeout(STEP_TIMEOUT):
        while line := await proc.stdout.readline():
            event = json.loads(line)  # {"event": name, "t": ..., more numbers}
            if event.get("event") == name:
                return {k: float(v) for k, v in event.items() if k != "event"}
    raise RuntimeError(f"replica exited (code {proc.returncode}) before {name!r}")


async def _write_static(workdir: Path, service: str, replica_id: str, port: int) -> float:
    path = workdir / "mesh.yaml"
    text = (
        f"services:\n  {service}:\n    - {{id: {replica_id}, address: 127.0.0.1, port: {port}}}\n"
    )

    def write() -> float:
        path.with_suffix(".tmp").write_text(text)
        t = time.monotonic()
        os.replace(path.with_suffix(".tmp"), path)
        return t

    return await asyncio.to_thread(write)


@contextlib.asynccontextmanager
async def _registry(
    backend: Backend, workdir: Path
) -> AsyncIterator[tuple[str, Registry, Prober | None]]:
    """The watching side's registry, the URI replicas use, and the cluster's prober."""
    if backend == "mdns":
        async with MdnsRegistry(("lo",)) as mdns:
            yield "mdns://?interface=lo", mdns, None
    elif backend == "static":
        path = workdir / "mesh.yaml"
        await asyncio.to_thread(path.write_text, "services: {}\n")
        async with StaticRegistry(str(path)) as static:
            yield f"static://{path}", static, tcp_prober(0.25)
    else:
        async with _consul_agent(workdir) as address:
            host, port = address.rsplit(":", 1)
            async with ConsulRegistry(ConsulUri(host, int(port))) as consul:
                yield f"consul://{address}", consul, None


@contextlib.asynccontextmanager
async def _consul_agent(workdir: Path) -> AsyncIterator[str]:
    """A real agent at CONSUL_HTTP_ADDR, else the test emulator as a child process."""
    if os.environ.get("CONSUL_HTTP_ADDR"):
        yield os.environ["CONSUL_HTTP_ADDR"].split("://")[-1]
        return
    ready = workdir / "consul.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.consul_emulator", "--host", "127.0.0.1", "--port", "0",
        "--ready-file", str(ready), env=_child_env(), cwd=str(ROOT),
    )  # fmt: skip
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            while not await asyncio.to_thread(ready.exists):
                if proc.returncode is not None:
                    raise RuntimeError(f"consul emulator exited with {proc.returncode}")
                await asyncio.sleep(0.02)
        info = json.loads(await asyncio.to_thread(ready.read_text))
        yield str(info["address"])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
