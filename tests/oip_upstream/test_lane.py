"""The local listeners' fast lanes (sidecar._oip_lane): unmodified tritonclient.http and
.grpc against a sidecar fronting a real Triton or MLServer over OIP HTTP or gRPC.

A lane passes an inference request for the fronted model to the server as it came and
brings the server's answer back as sent; `arrowmesh_fast_lane_total` counts what it
served, so each test shows which path a request took, not only that it worked.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from sidecar.oip import OipError
from transport import ErrorCode

from ..conftest import wait_for
from ..e2e.conftest import Sidecar
from .conftest import SidecarGroup
from .helpers import every_datatype, same
from .servers import ModelServer

pytestmark = [pytest.mark.model_servers, pytest.mark.timeout(300)]

LANE = "arrowmesh_fast_lane_total"


@pytest.fixture(scope="module")
def front(triton: ModelServer, module_sidecars: SidecarGroup) -> Sidecar:
    """A sidecar fronting the module's Triton over OIP HTTP."""
    return module_sidecars.start("echo", triton.http_url, "oip-http")


@pytest.fixture
def client(front: Sidecar) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(front.info["http"], network_timeout=60)
    yield c
    c.close()


def lane_count(front: Sidecar, outcome: str = "ok", protocol: str = "http") -> float:
    return front.metric(LANE, service="echo", protocol=protocol, outcome=outcome)


def infer(client: Any, inputs: dict[str, Any], binary: bool = True, **kw: Any) -> Any:
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else None
        tensor = httpclient.InferInput(name, list(array.shape), datatype or _datatype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    wanted = [httpclient.InferRequestedOutput(f"out_{n}", binary_data=binary) for n in inputs]
    return client.infer("echo", tensors, outputs=wanted, **kw)


def _datatype(dtype: Any) -> str:
    return str(np_to_triton_dtype(dtype))


def test_every_datatype_takes_the_lane_binary_and_json(front: Sidecar, client: Any) -> None:
    before = lane_count(front)
    inputs = every_datatype(utf8_only=True)
    for binary in (True, False):
        if not binary:  # Triton takes FP16 only in binary form
            inputs = {k: v for k, v in inputs.items() if k != "f16"}
        result = infer(client, inputs, binary=binary)
        for name, array in inputs.items():
            got = result.as_numpy(f"out_{name}")
            if not binary and array.dtype == object:  # tritonclient reads JSON BYTES as str
                assert got.tolist() == [[b.decode() for b in row] for row in array.tolist()]
            elif binary or array.dtype.kind != "f":
                assert same(got, array), (binary, name)
            else:  # JSON numbers: Triton prints floats with fewer digits than repr
                assert got.dtype == array.dtype and np.allclose(got, array, rtol=1e-6), name
    assert lane_count(front) == before + 2


def test_the_answer_is_tritons_own(front: Sidecar, client: Any) -> None:
    result = infer(client, {"i32": np.arange(6, dtype=np.int32).reshape(2, 3)}, request_id="r-1")
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "1"  # Triton's version
    with pytest.raises(InferenceServerException) as caught:
        infer(client, {"f32": np.zeros((2, 2, 2), np.float32)})
    assert caught.value.status() == "400"
    assert "unexpected shape for input 'f32' for model 'echo'" in caught.value.message()
    assert lane_count(front, "invalid_argument") >= 1


def test_statistics_count_what_the_lane_served(front: Sidecar, client: Any) -> None:
    def counts() -> tuple[int, int]:
        stats = client.get_inference_statistics("echo")["model_stats"][0]["inference_stats"]
        return int(stats["success"]["count"]), int(stats["fail"]["count"])

    ok, failed = counts()
    infer(client, {"u8": np.ones((1, 4), np.uint8)})
    with pytest.raises(InferenceServerException):
        infer(client, {"nosuch": np.ones((1, 4), np.uint8)})
    assert counts() == (ok + 1, failed + 1)


def test_health_metadata_and_inference_share_one_connection(front: Sidecar) -> None:
    body = json.dumps(
        {"inputs": [{"name": "i8", "datatype": "INT8", "shape": [1, 2], "data": [3, 4]}]}
    ).encode()
    host, port = front.info["http"].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    before = lane_count(front)
    try:
        for _ in range(3):
            connection.request("GET", "/v2/health/ready")
            answer = connection.getresponse()
            assert answer.status == 200, answer.read()
            answer.read()
            connection.request("POST", "/v2/models/echo/versions/1/infer", body)
            answer = connection.getresponse()
            document = json.loads(answer.read())
            assert answer.status == 200 and document["outputs"][0]["data"] == [3, 4]
            connection.request("GET", "/v2/models/echo")
            answer = connection.getresponse()
            assert json.loads(answer.read())["name"] == "echo"
    finally:
        connection.close()
    assert lane_count(front) == before + 3


def test_the_queue_limit_sheds_lane_requests(triton: ModelServer, sidecars: SidecarGroup) -> None:
    front = sidecars.start("echo", triton.http_url, "oip-http", "--queue-limit", "1")
    address = front.info["http"]

    def call(inputs: dict[str, Any]) -> str:
        c = httpclient.InferenceServerClient(address, network_timeout=60)
        try:
            infer(c, inputs)
            return "ok"
        except InferenceServerException as exc:
            return f"{exc.status()} {exc.message()}"
        finally:
            c.close()

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(call, {"delay_s": np.array([2.0], np.float32)})
        wait_for(lambda: in_flight(front) == 1, 30, "the slow request in flight")
        second = call({"i8": np.ones((1, 1), np.int8)})
        assert first.result(60) == "ok"
    status = OipError(ErrorCode.RESOURCE_EXHAUSTED, "").http_status
    assert second.startswith(f"{status} overloaded: 1 requests in progress"), second
    assert lane_count(front, "resource_exhausted") == 1
    assert lane_count(front) == 1


def in_flight(front: Sidecar) -> float:
    return front.metric("arrowmesh_requests_in_flight", service="echo")


def test_a_server_gone_is_503_with_the_reason(triton: ModelServer, sidecars: SidecarGroup) -> None:
    front = sidecars.start("echo", triton.http_url, "oip-http")
    c = httpclient.InferenceServerClient(front.info["http"], network_timeout=60)
    try:
        infer(c, {"i8": np.ones((1, 1), np.int8)})
        triton.stop()
        try:
            with pytest.raises(InferenceServerException) as caught:
                infer(c, {"i8": np.ones((1, 1), np.int8)})
        finally:
            triton.start()
    finally:
        c.close()
    assert caught.value.status() == "503", caught.value
    assert f"the app at {triton.http_url} cannot be reached" in caught.value.message()


def test_a_request_in_flight_finishes_through_a_drain(
    triton: ModelServer, sidecars: SidecarGroup
) -> None:
    front = sidecars.start("echo", triton.http_url, "oip-http")
    address = front.info["http"]

    def slow_call() -> str:
        c = httpclient.InferenceServerClient(address, network_timeout=60)
        try:
            out = infer(c, {"delay_s": np.array([1.0], np.float32)})
            return str(out.as_numpy("out_delay_s").tolist())
        finally:
            c.close()

    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(slow_call)
        wait_for(lambda: in_flight(front) == 1, 30, "the slow request in flight")
        front.proc.send_signal(signal.SIGTERM)
        assert call.result(60) == "[1.0]"
    assert front.proc.wait(30) == 0


def test_mlserver_gets_json_through_the_lane_and_binary_through_the_front_door(
    mlserver: ModelServer, sidecars: SidecarGroup
) -> None:
    front = sidecars.start("echo", mlserver.http_url, "oip-http")
    c = httpclient.InferenceServerClient(front.info["http"], network_timeout=60)
    x = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3)}
    try:
        assert same(infer(c, x, binary=False).as_numpy("out_f32"), x["f32"])
        assert front.metric(LANE, service="echo", outcome="ok") == 1
        # Binary tensors: MLServer has no binary extension, so the front door sends JSON.
        assert same(infer(c, x, binary=True).as_numpy("out_f32"), x["f32"])
        assert front.metric(LANE, service="echo", outcome="ok") == 1
    finally:
        c.close()


def test_nothing_leaks_after_callers_hang_up_mid_request(
    triton: ModelServer, sidecars: SidecarGroup
) -> None:
    front = sidecars.start("echo", triton.http_url, "oip-http")
    host, port = front.info["http"].rsplit(":", 1)
    body = json.dumps(
        {"inputs": [{"name": "delay_s", "datatype": "FP32", "shape": [1], "data": [0.5]}]}
    ).encode()
    for _ in range(5):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/v2/models/echo/infer", body)
        connection.close()  # gone before the answer
    wait_for(
        lambda: front.metric(LANE, service="echo", outcome="cancelled") == 5, 30, "5 cancelled"
    )
    c = httpclient.InferenceServerClient(front.info["http"], network_timeout=60)
    try:
        assert infer(c, {"i8": np.ones((1, 1), np.int8)}).as_numpy("out_i8").tolist() == [[1]]
    finally:
        c.close()
    wait_for(lambda: in_flight(front) == 0, 30, "nothing in flight")
    fds = len(os.listdir(f"/proc/{front.proc.pid}/fd"))
    assert fds < 64, fds  # no connection per cancelled request left open


# The gRPC lane


@pytest.fixture(scope="module")
def grpc_front(triton: ModelServer, module_sidecars: SidecarGroup) -> Sidecar:
    """A sidecar fronting the module's Triton over OIP gRPC, under the model's own name."""
    return module_sidecars.start("echo", triton.grpc_url, "oip-grpc")


def grpc_infer(client: Any, inputs: dict[str, Any], **kw: Any) -> Any:
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else _datatype(array.dtype)
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    wanted = [grpcclient.InferRequestedOutput(f"out_{n}") for n in inputs]
    return client.infer("echo", tensors, outputs=wanted, **kw)


def test_grpc_model_infer_takes_the_lane_with_tritons_answers(grpc_front: Sidecar) -> None:
    client = grpcclient.InferenceServerClient(grpc_front.info["grpc"])
    try:
        before = lane_count(grpc_front, protocol="grpc")
        inputs = every_datatype()
        result = grpc_infer(client, inputs, request_id="g-1")
        for name, array in inputs.items():
            assert same(result.as_numpy(f"out_{name}"), array), name
        assert result.get_response().id == "g-1"
        assert lane_count(grpc_front, protocol="grpc") == before + 1
        with pytest.raises(InferenceServerException) as caught:
            grpc_infer(client, {"f32": np.zeros((2, 2, 2), np.float32)})
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "unexpected shape for input 'f32' for model 'echo'" in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:
            grpc_infer(client, {"delay_s": np.array([1.0], np.float32)}, client_timeout=0.3)
        assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        stats = client.get_inference_statistics("echo", as_json=True)["model_stats"][0]
        assert int(stats["inference_stats"]["fail"]["count"]) >= 1
    finally:
        client.close()
    wait_for(lambda: lane_count(grpc_front, "deadline_exceeded", "grpc") == 1, 30, "the deadline")


def test_a_grpc_server_gone_is_unavailable_with_the_reason(
    triton: ModelServer, sidecars: SidecarGroup
) -> None:
    front = sidecars.start("echo", triton.grpc_url, "oip-grpc")
    client = grpcclient.InferenceServerClient(front.info["grpc"])
    try:
        grpc_infer(client, {"i8": np.ones((1, 1), np.int8)})
        triton.stop()
        try:
            with pytest.raises(InferenceServerException) as caught:
                grpc_infer(client, {"i8": np.ones((1, 1), np.int8)}, client_timeout=20)
        finally:
            triton.start()
    finally:
        client.close()
    assert caught.value.status() == "StatusCode.UNAVAILABLE", caught.value
    assert f"the app at {triton.grpc_url} cannot be reached" in caught.value.message()


# System shared memory: regions registered with the sidecar, passed on by alias


class Regions:
    """A client of a sidecar (over `protocol`) with an input and an output region of `size`
    bytes registered; a context manager that unregisters, destroys and closes them all."""

    def __init__(self, sidecar: Sidecar, protocol: str, tag: str, size: int) -> None:
        self.module: Any = httpclient if protocol == "http" else grpcclient
        self.client = self.module.InferenceServerClient(sidecar.info[protocol])
        base = f"/arrowmesh-test-{tag}-{os.getpid()}"
        self.names = (f"{tag}-in", f"{tag}-out")
        self.handles = [
            shm.create_shared_memory_region(name, f"{base}-{n}", size)
            for n, name in enumerate(self.names)
        ]
        for name, n in zip(self.names, range(2), strict=True):
            self.client.register_system_shared_memory(name, f"{base}-{n}", size)

    def round_trip(self, x: Any) -> Any:
        shm.set_shared_memory_region(self.handles[0], [x])
        tensor = self.module.InferInput("f32", list(x.shape), "FP32")
        tensor.set_shared_memory(self.names[0], x.nbytes)
        wanted = self.module.InferRequestedOutput("out_f32")
        wanted.set_shared_memory(self.names[1], x.nbytes)
        self.client.infer("echo", [tensor], outputs=[wanted])
        return np.array(shm.get_contents_as_numpy(self.handles[1], np.float32, list(x.shape)))

    def __enter__(self) -> Regions:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.client.unregister_system_shared_memory()
        finally:
            for handle in self.handles:
                shm.destroy_shared_memory_region(handle)
            self.client.close()


def server_regions(server: ModelServer, protocol: str) -> list[str]:
    """The names of the regions registered with the model server itself."""
    if protocol == "http":
        c = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        try:
            return sorted(r["name"] for r in c.get_system_shared_memory_status())
        finally:
            c.close()
    g = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    try:
        return sorted(g.get_system_shared_memory_status(as_json=True).get("regions", {}))
    finally:
        g.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_regions_are_passed_to_a_server_that_maps_our_shared_memory(
    triton: ModelServer, front: Sidecar, grpc_front: Sidecar, protocol: str
) -> None:
    sidecar = front if protocol == "http" else grpc_front
    x = np.arange(4096, dtype=np.float32).reshape(1, -1)
    with Regions(sidecar, protocol, f"alias-{protocol}", x.nbytes) as regions:
        assert np.array_equal(regions.round_trip(x), x)  # the front door's, probing
        wait_for(lambda: "maps our shared memory" in sidecar.log.read_text(), 30, "the probe")
        before = lane_count(sidecar, protocol=protocol)
        for k in range(3):
            assert np.array_equal(regions.round_trip(x + k), x + k)
        assert lane_count(sidecar, protocol=protocol) == before + 3
        aliases = server_regions(triton, protocol)
        assert len(aliases) == 2 and all(a.startswith("arrowmesh-") for a in aliases), aliases
    # Unregistered with the sidecar: gone from the server too.
    wait_for(lambda: server_regions(triton, protocol) == [], 30, "the aliases to go")


def test_a_restarted_server_gets_the_aliases_again(
    triton: ModelServer, sidecars: SidecarGroup
) -> None:
    sidecar = sidecars.start("echo", triton.http_url, "oip-http")
    x = np.arange(64, dtype=np.float32).reshape(1, -1)
    with Regions(sidecar, "http", "restart", x.nbytes) as regions:
        regions.round_trip(x)
        wait_for(lambda: "maps our shared memory" in sidecar.log.read_text(), 30, "the probe")
        assert np.array_equal(regions.round_trip(x), x)
        triton.stop()
        triton.start()
        wait_for(lambda: sidecar.admin("/readyz")[0] == 200, 60, "the sidecar ready again")
        assert np.array_equal(regions.round_trip(x * 2), x * 2)
        assert lane_count(sidecar) == 2


def test_a_server_without_the_extension_has_regions_read_by_the_sidecar(
    mlserver: ModelServer, sidecars: SidecarGroup
) -> None:
    sidecar = sidecars.start("echo", mlserver.http_url, "oip-http")
    x = np.arange(64, dtype=np.float32).reshape(1, -1)
    with Regions(sidecar, "http", "mlserver", x.nbytes) as regions:
        assert np.array_equal(regions.round_trip(x), x)
        wait_for(lambda: "does not map our shared memory" in sidecar.log.read_text(), 30, "probe")
        assert np.array_equal(regions.round_trip(x + 1), x + 1)
        assert lane_count(sidecar) == 0  # both read by the sidecar (the front door)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_timeout_parameter_cuts_a_lane_request_short(
    front: Sidecar, grpc_front: Sidecar, protocol: str
) -> None:
    # The protocol's `timeout` (microseconds) is a deadline at the front door; Triton reads
    # it only as a queue limit, so the lane must enforce it too.
    sidecar = front if protocol == "http" else grpc_front
    delay = {"delay_s": np.array([1.0], np.float32)}
    client: Any
    if protocol == "http":
        client = httpclient.InferenceServerClient(sidecar.info["http"], network_timeout=60)
    else:
        client = grpcclient.InferenceServerClient(sidecar.info["grpc"])

    def call() -> None:
        if protocol == "http":
            infer(client, delay, timeout=200_000)
        else:
            grpc_infer(client, delay, timeout=200_000)

    try:
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as caught:
            call()
        took = time.monotonic() - started
    finally:
        client.close()
    if protocol == "http":
        status = OipError(ErrorCode.DEADLINE_EXCEEDED, "").http_status
        assert caught.value.status() == str(status), caught.value
        assert "timeout (200000 us) passed" in caught.value.message()
    else:
        assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED", caught.value
    assert took < 0.9, f"answered after {took:.2f} s: the model's 1 s, not the timeout"
    wait_for(lambda: lane_count(sidecar, "deadline_exceeded", protocol) >= 1, 30, "the count")


def test_a_large_tensor_takes_the_lane_through_pooled_buffers(front: Sidecar, client: Any) -> None:
    x = np.random.default_rng(5).integers(0, 255, (1, 24 << 20), dtype=np.uint8)  # 24 MiB
    before = lane_count(front)
    for _ in range(2):  # the second reuses the pooled buffers
        assert same(infer(client, {"u8": x}).as_numpy("out_u8"), x)
    assert lane_count(front) == before + 2
