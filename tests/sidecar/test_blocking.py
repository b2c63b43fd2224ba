"""BlockingMeshClient from plain threads, against a serve() process."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sidecar import BlockingMeshClient, HandlerError, InvalidInput, RoutePolicy, Unavailable

from ..conftest import ServeProcess

SERVER = """
import numpy as np
from sidecar import serve
def handler(inputs):
    if "fail" in inputs:
        raise RuntimeError("asked to fail")
    return {{"y": inputs["x"] + 1}}
serve(handler, service="inc", ready_file={ready!r}, uds_path={uds!r})
"""


def test_blocking_client_calls_from_many_threads(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    server = serve_process(SERVER)
    errors: list[BaseException] = []
    with BlockingMeshClient(server.mesh) as client:

        def worker(k: int) -> None:
            try:
                for i in range(30):
                    x = np.full(100 + i, k * 1000 + i, dtype=np.int32)
                    np.testing.assert_array_equal(client.infer("inc", {"x": x})["y"], x + 1)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(HandlerError, match="asked to fail"):
            client.infer("inc", {"fail": np.zeros(1)})
        assert client.ping() > 0
    assert not errors
    with pytest.raises(InvalidInput, match="closed"):
        client.infer("inc", {"x": np.zeros(1)})
    assert server.stop() == 0


def test_blocking_client_over_a_unix_socket(serve_process: Callable[[str], ServeProcess]) -> None:
    server = serve_process(SERVER)
    with BlockingMeshClient(server.uds) as client:
        assert client.infer("inc", {"x": np.arange(3)})["y"].tolist() == [1, 2, 3]
    assert server.stop() == 0


REPLICA = """
import os
import numpy as np
from sidecar import Unavailable, serve
def handler(inputs):
    if "fail" in inputs:
        raise Unavailable("not this one")  # retried on the other replica
    return {{"y": inputs["x"] + 1, "pid": np.array([os.getpid()])}}
serve(handler, service="inc", ready_file={ready!r}, uds_path={uds!r})
"""


def test_a_proxyless_blocking_client_balances_from_many_threads_and_cleans_up(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    replicas = [serve_process(REPLICA) for _ in range(2)]
    rows = "".join(
        f"    - {{id: r{i}, address: 127.0.0.1, port: {r.mesh.rsplit(':', 1)[1]}}}\n"
        for i, r in enumerate(replicas)
    )
    static = tmp_path / "mesh.yaml"
    static.write_text(f"services:\n  inc:\n{rows}")
    pids: set[int] = set()
    errors: list[BaseException] = []
    policy = RoutePolicy(balancer="round_robin")
    with BlockingMeshClient(discovery=f"static://{static}", policy=policy) as client:

        def worker(k: int) -> None:
            try:
                for i in range(20):
                    out = client.infer("inc", {"x": np.array([k * 100 + i])}, timeout=5)
                    assert out["y"][0] == k * 100 + i + 1
                    pids.add(int(out["pid"][0]))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        x = client.alloc(1 << 16, np.float64)  # in shared memory: sent by reference
        x[:] = 1
        assert (client.infer("inc", {"x": x}, timeout=5)["y"] == 2).all()
        stats = client.shm_stats()
        assert stats is not None and stats.bytes_copied == 0 and stats.bytes_by_reference > 0
        with pytest.raises(Unavailable):  # both replicas refuse: nowhere left to retry
            client.infer("inc", {"fail": np.ones(1)}, timeout=5)
        with pytest.raises(InvalidInput, match="no sidecar to ping"):
            client.ping()
        del x
    assert not errors, errors[:3]
    assert pids == {r.proc.pid for r in replicas}
    assert not [t for t in threading.enumerate() if t.name == "arrowmesh-client"]
    with pytest.raises(InvalidInput, match="closed"):
        client.infer("inc", {"x": np.zeros(1)})
    for replica in replicas:
        assert replica.stop() == 0


def test_a_blocking_client_needs_a_sidecar_or_a_discovery_uri() -> None:
    with pytest.raises(InvalidInput, match="not both"):
        BlockingMeshClient()
    with pytest.raises(InvalidInput, match="not both"):
        BlockingMeshClient("127.0.0.1:1", discovery="mdns://")
