"""Unmodified tritonclient.grpc (sync and aio) against the sidecar's OIP gRPC front door."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from .conftest import MAX_MESSAGE_SIZE, Mesh

pytestmark = pytest.mark.timeout(60)

NUMPY = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
         "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
         "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
         "BF16": ml_dtypes.bfloat16}  # fmt: skip
DATATYPES = [*NUMPY, "BYTES"]
PAIR = [f"INPUT{i}" for i in range(2)]


def sample(datatype: str) -> npt.NDArray[Any]:
    """A (2, 3) tensor of `datatype` with values at the edges of its range."""
    if datatype == "BYTES":
        items = [b"", b"a", "\u00e9t\u00e9".encode(), b"x" * 300, b"tab\tnl\n", b"\x00\xff"]
        return np.array(items, dtype=object).reshape(2, 3)
    if datatype == "BOOL":
        return np.array([True, False, True, True, False, False]).reshape(2, 3)
    dtype = np.dtype(NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        edges = [info.min, info.max, 0, 1, info.max // 3, info.min // 3 if info.min else 7]
        return np.array(edges, dtype=dtype).reshape(2, 3)
    return np.array([0.0, -1.5, 3.25, 1e-3, -7.0, 65504.0], np.float32).astype(dtype).reshape(2, 3)


def pair_inputs(module: Any, a: npt.NDArray[Any], b: npt.NDArray[Any]) -> list[Any]:
    inputs = [module.InferInput(name, list(a.shape), "INT32") for name in PAIR]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    return inputs


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[Any]:
    with grpcclient.InferenceServerClient(url=mesh.sidecar["grpc"]) as c:
        yield c


@pytest.fixture
async def aio(mesh: Mesh) -> AsyncIterator[Any]:
    c = aioclient.InferenceServerClient(url=mesh.sidecar["grpc"])
    try:
        yield c
    finally:
        await c.close()


def test_health_and_metadata_answer_as_triton_does(mesh: Mesh, client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("simple") and client.is_model_ready("routed", "3")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "arrowmesh" and "system_shared_memory" in server["extensions"]
    meta = client.get_model_metadata("simple", as_json=True)
    assert meta["name"] == "simple" and meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        (name, "INT32", ["-1", "16"])
        for name in PAIR  # int64 as JSON strings, as protobuf does
    ]
    config = client.get_model_config("routed").config
    assert config.name == "routed" and [o.name for o in config.output] == ["OUTPUT0", "OUTPUT1"]
    assert list(config.input[0].dims) == [-1, 16]
    index = client.get_model_repository_index(as_json=True)["models"]
    assert {"name": "simple", "version": "1", "state": "READY"} in index
    with grpc.insecure_channel(mesh.sidecar["grpc"]) as channel:  # the health service too
        check = health_pb2_grpc.HealthStub(channel).Check
        health = check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_through_the_replica(client: Any, datatype: str) -> None:
    x = sample(datatype)
    tensor = grpcclient.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    result = client.infer("simple", [tensor], outputs=[grpcclient.InferRequestedOutput("x")])
    output = result.get_output("x")
    assert output.datatype == datatype and list(output.shape) == [2, 3]
    out = result.as_numpy("x")
    if datatype == "BYTES":
        assert out.tolist() == x.tolist()
    else:
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(out.view(np.uint8), x.view(np.uint8))


def test_requested_outputs_are_the_only_ones_returned_in_the_order_asked(client: Any) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = pair_inputs(grpcclient, a, b)
    only = client.infer("simple", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    assert [o.name for o in only.get_response().outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), a - b)
    wanted = [grpcclient.InferRequestedOutput(n) for n in ("OUTPUT1", "OUTPUT0")]
    both = client.infer("routed", inputs, outputs=wanted)
    assert [o.name for o in both.get_response().outputs] == ["OUTPUT1", "OUTPUT0"]
    np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), a + b)
    everything = client.infer("simple", inputs)
    assert sorted(o.name for o in everything.get_response().outputs) == ["OUTPUT0", "OUTPUT1"]


def test_request_id_is_echoed_and_parameters_are_accepted(client: Any) -> None:
    tensor = grpcclient.InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(np.ones(3, np.float32))
    result = client.infer(
        "simple",
        [tensor],
        model_version="2",
        request_id="req-42",
        parameters={"temperature": 0.5, "tag": "a", "greedy": True, "top_k": 3},
        sequence_id=7,
        priority=1,
        timeout=10_000_000,
        client_timeout=20,
        headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-42", "simple", "2")
    np.testing.assert_array_equal(result.as_numpy("x"), np.ones(3, np.float32))


def test_typed_contents_are_read_when_no_raw_contents_are_sent(mesh: Mesh) -> None:
    request = service_pb2.ModelInferRequest(model_name="simple", id="typed")
    ints = request.inputs.add(name="i", datatype="INT16", shape=[3])
    ints.contents.int_contents.extend([-32768, 0, 32767])
    words = request.inputs.add(name="w", datatype="BYTES", shape=[2])
    words.contents.bytes_contents.extend([b"a", b"\xff"])
    flags = request.inputs.add(name="f", datatype="BOOL", shape=[1])
    flags.contents.bool_contents.append(True)
    with grpc.insecure_channel(mesh.sidecar["grpc"]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=10)
    result = grpcclient.InferResult(response)
    assert result.as_numpy("i").tolist() == [-32768, 0, 32767]
    assert result.as_numpy("w").tolist() == [b"a", b"\xff"]
    assert result.as_numpy("f").tolist() == [True]


def test_tensors_far_over_grpcs_4_mb_default_cross_both_ways(client: Any) -> None:
    # The mesh allows 64 MiB per message here (conftest): one tensor just under it.
    x = np.random.default_rng(1).integers(0, 255, 64 << 20, np.uint8)  # 16x gRPC's default cap
    tensor = grpcclient.InferInput("x", [x.size], "UINT8")
    tensor.set_data_from_numpy(x)
    result = client.infer("simple", [tensor], client_timeout=30)
    assert np.array_equal(result.as_numpy("x"), x)


def test_a_message_over_max_message_size_is_resource_exhausted(client: Any) -> None:
    x = np.zeros(MAX_MESSAGE_SIZE + 1, np.uint8)
    tensor = grpcclient.InferInput("x", [x.size], "UINT8")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("simple", [tensor], client_timeout=30)
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "over max_message_size" in caught.value.message()


def test_the_stream_answers_in_order_and_survives_a_failed_request(client: Any) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(12):
            x = np.full((1, 16), i, np.int32)
            model = "no-such-model" if i == 5 else ("simple", "routed")[i % 2]
            client.async_stream_infer(model, pair_inputs(grpcclient, x, x), request_id=str(i))
        got = [answers.get(timeout=20) for _ in range(12)]
    finally:
        client.stop_stream()
    for i, (result, error) in enumerate(got):
        if i == 5:
            assert result is None
            assert "Request for unknown model: 'no-such-model'" in error.message()
            continue
        assert error is None
        assert result.get_response().id == str(i)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 2 * i))


def test_statistics_count_what_was_served(client: Any) -> None:
    def successes() -> int:
        stats = client.get_inference_statistics("simple", as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["success"].get("count", 0))

    before = successes()
    tensor = grpcclient.InferInput("x", [2], "INT64")
    tensor.set_data_from_numpy(np.array([1, 2]))
    for _ in range(3):
        client.infer("simple", [tensor])
    stats = client.get_inference_statistics("simple", as_json=True)["model_stats"][0]
    assert successes() == before + 3
    assert stats["name"] == "simple" and int(stats["last_inference"]) > 0
    assert int(stats["inference_stats"]["compute_infer"]["ns"]) > 0
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert "simple" in [s["name"] for s in every]


async def test_the_aio_client_infers_streams_and_reads_metadata(aio: Any) -> None:
    assert await aio.is_server_live() and await aio.is_model_ready("simple")
    assert (await aio.get_model_metadata("routed")).name == "routed"
    words = np.array([b"hello", b"\x00world"], dtype=object)
    tensor = aioclient.InferInput("words", [2], "BYTES")
    tensor.set_data_from_numpy(words)
    result = await aio.infer("simple", [tensor], request_id="aio", client_timeout=20)
    assert result.as_numpy("words").tolist() == words.tolist()
    assert result.get_response().id == "aio"

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for i in range(6):
            x = np.full((1, 16), i, np.int32)
            yield {"model_name": "routed", "inputs": pair_inputs(aioclient, x, x),
                   "request_id": f"s{i}"}  # fmt: skip

    seen = []
    async with asyncio.timeout(20):
        async for result, error in aio.stream_infer(requests()):
            assert error is None
            seen.append(result.get_response().id)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 16)))
            if len(seen) == 6:
                break
    assert seen == [f"s{i}" for i in range(6)]


async def test_concurrent_aio_requests_each_get_their_own_answer(aio: Any) -> None:
    async def one(i: int) -> None:
        x = np.full((64, 64), i, dtype=np.int32)  # 16 KiB: inline
        y = np.full((256, 256), i, dtype=np.float32)  # 256 KiB: through the arena
        inputs = [aioclient.InferInput("x", [64, 64], "INT32"),
                  aioclient.InferInput("y", [256, 256], "FP32")]  # fmt: skip
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(y)
        model = "simple" if i % 2 else "routed"
        result = await aio.infer(model, inputs, request_id=str(i), client_timeout=20)
        assert result.get_response().id == str(i)
        np.testing.assert_array_equal(result.as_numpy("x"), x)
        np.testing.assert_array_equal(result.as_numpy("y"), y)

    await asyncio.gather(*(one(i) for i in range(24)))
