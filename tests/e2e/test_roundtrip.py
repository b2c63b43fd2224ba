"""A serve() process and a separate client process: every datatype, 0 bytes to 1 GiB."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sidecar import BlockingMeshClient

from ..conftest import ServeProcess, child_env, wait_for

ECHO = """
from sidecar import serve
async def echo(inputs):
    return dict(inputs)
serve(echo, service="echo", ready_file={ready!r}, uds_path={uds!r})
"""

CLIENT = """
import json, sys
import numpy as np
from sidecar import BlockingMeshClient
from transport import DATATYPES, numpy_dtype

def make(datatype, nbytes, rng):
    if datatype == "BYTES":
        count = nbytes // 8
        array = np.empty(count, dtype=object)
        array[:] = [rng.bytes(int(n)) for n in rng.integers(0, 16, count)]
        return array
    dtype = numpy_dtype(datatype)
    raw = np.frombuffer(rng.bytes(nbytes - nbytes % dtype.itemsize), dtype=np.uint8)
    array = raw.astype(bool) if datatype == "BOOL" else raw.view(dtype)
    return array.reshape(-1, 2) if array.size % 2 == 0 and array.size else array

def same(a, b):
    if a.dtype == object:
        return a.shape == b.shape and a.ravel().tolist() == b.ravel().tolist()
    same_type = a.dtype == b.dtype and a.shape == b.shape
    return same_type and np.array_equal(a.view(np.uint8), b.view(np.uint8))

address, plan = sys.argv[1], json.loads(sys.argv[2])
rng = np.random.default_rng(1)
done = []
with BlockingMeshClient(address) as client:
    for datatype, nbytes in plan:
        x = make(datatype, nbytes, rng)
        scalar, empty = np.array(7, dtype=np.int64), np.zeros((0, 3), np.float32)
        inputs = {{"x": x, "scalar": scalar, "empty": empty}}
        out = client.infer("echo", inputs, timeout=300)
        assert same(out["x"], x), (datatype, nbytes)
        assert out["scalar"].shape == () and int(out["scalar"]) == 7
        assert out["empty"].shape == (0, 3)
        del out
        done.append([datatype, nbytes])
    stats = client.shm_stats()
print(json.dumps({{"done": done, "by_reference": stats.bytes_by_reference if stats else 0}}))
"""

SMALL_SIZES = [0, 1, 8, 4096, 65_536, 65_537, 1 << 20, 16 << 20]
DATATYPES = [
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]


def run_client(
    address: str, plan: list[tuple[str, int]], timeout: float
) -> tuple[list[list[object]], int]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CLIENT).replace("{{", "{").replace("}}", "}"),
            address,
            json.dumps(plan),
        ],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    return report["done"], int(report["by_reference"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", ["tcp", "uds", "shm"])
def test_every_datatype_round_trips_between_two_processes(
    serve_process: Callable[[str], ServeProcess], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path != "shm":
        monkeypatch.setenv("ARROWMESH_SHM_DIR", "")  # the network link alone
    server = serve_process(ECHO)
    plan = [(d, n) for d in DATATYPES for n in SMALL_SIZES if not (d == "BYTES" and n > (1 << 20))]
    done, by_reference = run_client(server.uds if path == "uds" else server.mesh, plan, 240)
    assert [tuple(x) for x in done] == plan
    if path == "shm":  # every fixed-width tensor over the inline threshold went by reference
        assert by_reference >= sum(n for d, n in plan if d != "BYTES" and n > 65_536)
    else:
        assert by_reference == 0
    assert server.stop() == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", ["tcp", "shm"])
def test_one_gibibyte_tensors_round_trip_between_two_processes(
    serve_process: Callable[[str], ServeProcess], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "tcp":
        monkeypatch.setenv("ARROWMESH_SHM_DIR", "")
    server = serve_process(ECHO)
    plan = [("UINT8", 1 << 30)] if path == "shm" else [("UINT8", 1 << 30), ("FP32", 1 << 30)]
    done, _ = run_client(server.mesh, plan, timeout=280)
    assert [tuple(x) for x in done] == plan
    assert server.stop() == 0


SLOW = """
import time
from pathlib import Path
from sidecar import serve
def slow(inputs):
    (Path({ready!r}).parent / f"started-{{int(inputs['x'])}}").touch()
    time.sleep(0.5)
    return {{"y": inputs["x"]}}
serve(slow, service="slow", ready_file={ready!r}, uds_path={uds!r})
"""


@pytest.mark.timeout(60)
def test_sigterm_lets_requests_in_flight_finish_then_exits_zero(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    server = serve_process(SLOW)
    results: list[object] = []
    with BlockingMeshClient(server.mesh) as client:
        client.ping()

        def call(i: int) -> None:
            try:
                results.append(int(client.infer("slow", {"x": np.array(i)}, timeout=20)["y"]))
            except Exception as exc:  # collected and asserted below
                results.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        wait_for(
            lambda: len(list(tmp_path.glob("started-*"))) == 4, 10, "4 requests in the handler"
        )
        assert server.stop() == 0
        for t in threads:
            t.join()
    assert sorted(results) == [0, 1, 2, 3], results  # type: ignore[type-var]
