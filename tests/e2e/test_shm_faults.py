"""Shared memory across real processes under faults: kills, other directories, forged input."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import transport
from sidecar import BlockingMeshClient, MeshClient, Service, Unavailable
from transport import Header, Kind, Placement, TensorMeta

from ..conftest import ServeProcess, child_env, wait_for

KILLS = int(os.environ.get("ARROWMESH_KILL_LOOPS", "50"))  # per direction: 100 in all


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll `predicate` (in a worker thread: it may read the directory) until it holds."""
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(predicate):  # noqa: ASYNC110  # no event to wait on
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


def only_files_of(directory: Path, proc: str) -> bool:
    names = {p.name for p in directory.iterdir()}
    return all(n == "domain" or n.startswith(proc) for n in names)


PRODUCER = """
import sys
import numpy as np
from sidecar import BlockingMeshClient
client = BlockingMeshClient(sys.argv[1])
x = np.ones(1 << 18)  # 2 MiB: copied into shared memory on every call
client.infer("slow", {"x": x})
print("sending", flush=True)
while True:
    client.infer("slow", {"x": x})
"""


@pytest.mark.timeout(240)
async def test_killing_producers_mid_transfer_leaves_no_lease_and_no_file(
    shm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARROWMESH_SHM_REAP_INTERVAL", "0.05")

    async def slow(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        await asyncio.sleep(0.005)
        return {"y": inputs["x"]}

    async with Service(slow, service="slow") as consumer:
        assert consumer.shm is not None
        for _ in range(KILLS):
            producer = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                textwrap.dedent(PRODUCER),
                consumer.address,
                stdout=asyncio.subprocess.PIPE,
                env=child_env(),
            )
            assert producer.stdout is not None
            assert await producer.stdout.readline() == b"sending\n"
            producer.send_signal(signal.SIGKILL)
            await producer.wait()
        domain = consumer.shm
        await eventually(
            lambda: domain.stats().leases == 0, "the consumer's leases to be reclaimed"
        )
        await eventually(lambda: only_files_of(shm_dir, domain.proc), "dead producers' files to go")
        await eventually(lambda: consumer.server.in_flight == 0, "requests to end")
        assert domain.stats().used_bytes == 0


CONSUMER = """
import time
from sidecar import serve
def stuck(inputs):
    print("handling", flush=True)
    time.sleep(60)
    return {{}}
serve(stuck, service="stuck", uds_path={uds!r}, ready_file={ready!r})
"""


@pytest.mark.timeout(240)
async def test_killing_consumers_mid_transfer_leaves_no_lease_and_no_file(
    shm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARROWMESH_SHM_REAP_INTERVAL", "0.05")
    sock, ready = tmp_path / "c.sock", tmp_path / "ready.json"
    script = textwrap.dedent(CONSUMER).format(uds=str(sock), ready=str(ready))
    async with MeshClient(f"unix:{sock}") as producer:
        for _ in range(KILLS):
            for stale in (sock, ready):
                await asyncio.to_thread(stale.unlink, missing_ok=True)
            consumer = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, env=child_env()
            )
            assert consumer.stdout is not None
            await eventually(ready.exists, "the consumer to listen")
            call = asyncio.create_task(producer.infer("stuck", {"x": np.ones(1 << 18)}))
            assert await consumer.stdout.readline() == b"handling\n"
            consumer.send_signal(signal.SIGKILL)
            await consumer.wait()
            with pytest.raises(Unavailable):
                await call
        stats = producer.shm_stats
        await eventually(lambda: (s := stats()) is not None and s.leases == 0, "leases back")
        domain = producer._shm.domain
        assert domain is not None
        await eventually(lambda: only_files_of(shm_dir, domain.proc), "dead consumers' files")


HOARDER = """
from sidecar import serve
kept = []
def hoard(inputs):
    kept.append(inputs["x"])  # holds the view, so the lease, forever
    return {{"n": kept[-1][:1]}}
serve(hoard, service="hoard", ready_file={ready!r}, uds_path={uds!r})
"""


@pytest.mark.timeout(60)
def test_a_consumer_that_never_releases_loses_its_lease_after_the_timeout(
    serve_process: Callable[[str], ServeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve_process(HOARDER)
    monkeypatch.setenv("ARROWMESH_SHM_LEASE_TIMEOUT", "0.5")
    monkeypatch.setenv("ARROWMESH_SHM_REAP_INTERVAL", "0.05")
    with BlockingMeshClient(server.mesh) as client:
        client.infer("hoard", {"x": np.ones(1 << 17)})
        stats = client.shm_stats()
        assert stats is not None and stats.leases == 1
        wait_for(lambda: (s := client.shm_stats()) is not None and s.leases == 0, 10, "timeout")
        final = client.shm_stats()
        assert final is not None and final.reaped_leases == 1
    assert server.stop() == 0


ECHO = """
from sidecar import serve
async def echo(inputs):
    return dict(inputs)
serve(echo, service="echo", ready_file={ready!r}, uds_path={uds!r})
"""


@pytest.mark.timeout(60)
def test_two_directories_on_one_host_fall_back_to_the_network(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    server = serve_process(ECHO)  # in the per-test directory
    other = tmp_path / "other-volume"
    with BlockingMeshClient(server.mesh, shm_dir=str(other)) as client:
        x = np.arange(1 << 20, dtype=np.float32)
        np.testing.assert_array_equal(client.infer("echo", {"x": x})["x"], x)
        stats = client.shm_stats()
        assert stats is not None
        assert stats.bytes_by_reference == 0 and stats.bytes_copied == 0
    assert server.stop() == 0
    assert not other.exists() or list(other.iterdir()) == []


@pytest.mark.timeout(60)
def test_same_directory_moves_tensors_by_reference(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    server = serve_process(ECHO)
    with BlockingMeshClient(server.mesh) as client:
        x = client.alloc((512, 512), np.float32)
        x[:] = 3
        out = client.infer("echo", {"x": x})["x"]
        assert (out == 3).all()
        stats = client.shm_stats()
        assert stats is not None
        assert stats.bytes_copied == 0 and stats.bytes_by_reference >= 2 * x.nbytes
        counters = client._link().shm.counters  # the same, counted on the link itself
        assert counters.by_reference == x.nbytes and counters.received == x.nbytes
        assert counters.copied == 0
        del out, x
    assert server.stop() == 0


@pytest.mark.timeout(60)
async def test_a_forged_descriptor_on_the_link_gets_a_clear_error(shm_dir: Path) -> None:
    async def echo(inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        return dict(inputs)

    async with Service(echo, service="echo") as svc, MeshClient(svc.address) as client:
        await client.infer("echo", {"warm": np.zeros(1)})
        assert client._links is not None
        link = await client._links.get()
        placer = link.placer
        assert placer is not None

        ref = placer.tensor(np.ones(100_000))
        assert ref is not None
        forged = [ref[0], ref[1], ref[2], ref[3] ^ 0xFF, ref[4], ref[5]]
        meta = TensorMeta("x", "FP64", (100_000,), "C", Placement.SHM, forged)
        header = Header(Kind.REQUEST, "echo", "infer", tensors=(meta,))
        with pytest.raises(transport.RemoteError, match="does not match a live lease") as info:
            await link.request(header)
        assert info.value.code is transport.ErrorCode.INVALID_ARGUMENT
        link.shm.domain.release(link.shm._peer, [ref])  # type: ignore[union-attr,arg-type]
        assert (await client.infer("echo", {"x": np.ones(3)}))["x"].sum() == 3


PRODUCING = """
import numpy as np
import sidecar
def make(inputs):
    out = sidecar.alloc((256, 1024), np.float32)  # written in place, sent by reference
    out[:] = float(inputs["k"])
    return {{"out": out}}
sidecar.serve(make, service="make", ready_file={ready!r}, uds_path={uds!r})
"""


@pytest.mark.timeout(60)
def test_a_handler_alloc_output_arrives_by_reference(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    server = serve_process(PRODUCING)
    with BlockingMeshClient(server.mesh) as client:
        out = client.infer("make", {"k": np.array(4)})["out"]
        assert out.shape == (256, 1024) and (out == 4).all()
        stats = client.shm_stats()
        assert stats is not None
        assert stats.bytes_by_reference == out.nbytes and stats.bytes_copied == 0
        del out
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_arrow_ipc_in_place_round_trips_every_fixed_datatype(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    server = serve_process(ECHO)
    with BlockingMeshClient(server.mesh, arrow_in_shm=True) as client:
        inputs = {
            name: np.arange(40_000).astype(transport.numpy_dtype(name))
            for name in transport.DATATYPES
            if name != "BYTES"
        }
        inputs["words"] = np.array([b"a", b"bc"] * 10, dtype=object)
        out = client.infer("echo", inputs)
        for name, array in inputs.items():
            np.testing.assert_array_equal(out[name], array)
        stats = client.shm_stats()
        assert (
            stats is not None and stats.bytes_copied > sum(a.nbytes for a in inputs.values()) // 2
        )
        del out
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_full_arenas_fall_back_to_the_network_without_failing(
    serve_process: Callable[[str], ServeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve_process(ECHO)
    monkeypatch.setenv("ARROWMESH_SHM_ARENA_SIZE", str(1 << 20))
    monkeypatch.setenv("ARROWMESH_SHM_MAX_BYTES", str(2 << 20))
    with BlockingMeshClient(server.mesh) as client:
        big = np.arange(1 << 20, dtype=np.float64)  # 8 MiB: no arena may hold it
        np.testing.assert_array_equal(client.infer("echo", {"x": big})["x"], big)
        small = np.ones(1 << 15)  # 256 KiB: fits
        np.testing.assert_array_equal(client.infer("echo", {"x": small})["x"], small)
        stats = client.shm_stats()
        assert stats is not None and stats.bytes_copied == small.nbytes
    assert server.stop() == 0


@pytest.mark.timeout(60)
def test_a_blocking_client_s_leases_do_not_pile_up(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    # Regression: releases that arrived in the same read as a reply were dropped.
    server = serve_process(ECHO)
    with BlockingMeshClient(server.mesh) as client:
        x = np.ones(1 << 17)
        client.infer("echo", {"x": x})
        first = client.shm_stats()
        for _ in range(40):
            client.infer("echo", {"x": x})
        stats = client.shm_stats()
        assert first is not None and stats is not None
        assert stats.leases <= 2
        assert stats.arena_bytes == first.arena_bytes
    assert server.stop() == 0
