"""Cluster over a real registry (the static file) with real TCP probes."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from discovery import Endpoint
from discovery._cluster import Cluster, tcp_prober
from discovery._metrics import CLUSTER_ENDPOINTS, CLUSTER_STALE
from discovery._static import StaticRegistry


async def _write(path: Path, text: str) -> None:
    def write() -> None:
        path.with_suffix(".tmp").write_text(text)
        os.replace(path.with_suffix(".tmp"), path)

    await asyncio.to_thread(write)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mesh(*ports: int) -> str:
    rows = "".join(f"  - {{id: r-{p}, address: 127.0.0.1, port: {p}}}\n" for p in ports)
    return f"services:\n svc:\n{rows}"


def _metric(metric: MetricWrapperBase, service: str) -> float | None:
    # Not REGISTRY.get_sample_value: the process collector reads /proc, blocking the loop.
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == {"service": service}:
                return sample.value
    return None


async def _until(cluster: Cluster, predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await cluster.wait_changed(cluster.version)


async def test_probes_drop_a_dead_endpoint_and_restore_it(tmp_path: Path) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    live = server.sockets[0].getsockname()[1]
    dead = _free_port()
    path = tmp_path / "mesh.yaml"
    await _write(path, _mesh(live, dead))
    seen: list[tuple[Endpoint, ...]] = []
    registry = StaticRegistry(str(path), poll_interval=0.05)
    async with registry, Cluster("svc", registry, prober=tcp_prober(0.2), probe_interval=0.05) as c:
        c.add_listener(seen.append)
        await c.wait_ready()
        await _until(c, lambda: [e.port for e in c.endpoints] == [live])
        assert _metric(CLUSTER_ENDPOINTS, "svc") == 1.0

        server.close()
        await server.wait_closed()
        await _until(c, lambda: c.endpoints == ())

        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", live)
        await _until(c, lambda: [e.port for e in c.endpoints] == [live])
        assert seen[-1] == c.endpoints
    server.close()
    await server.wait_closed()


async def test_a_broken_registry_keeps_the_last_good_set_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    await _write(path, _mesh(7001, 7002))
    registry = StaticRegistry(str(path), poll_interval=0.05)
    async with registry, Cluster("svc", registry) as cluster:
        await _until(cluster, lambda: len(cluster.endpoints) == 2)
        await _write(path, "services: {svc: [")
        await _until(cluster, lambda: cluster.stale)
        assert len(cluster.endpoints) == 2
        assert _metric(CLUSTER_STALE, "svc") == 1.0
        await _write(path, _mesh(7003))
        await _until(cluster, lambda: not cluster.stale)
        assert [e.port for e in cluster.endpoints] == [7003]
        assert _metric(CLUSTER_STALE, "svc") == 0.0


async def test_aclose_leaves_no_tasks(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    await _write(path, _mesh(7001))
    before = asyncio.all_tasks()
    registry = StaticRegistry(str(path), poll_interval=0.05)
    async with registry, Cluster("svc", registry, prober=tcp_prober(0.1)) as cluster:
        await cluster.wait_ready()
    assert asyncio.all_tasks() == before
