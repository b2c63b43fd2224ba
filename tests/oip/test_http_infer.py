"""Unmodified tritonclient.http (sync and aio) against the sidecar's OIP REST front door."""

from __future__ import annotations

import asyncio
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient

from .conftest import Mesh

pytestmark = pytest.mark.timeout(60)

DATATYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES"]  # fmt: skip
NUMPY = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
         "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
         "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
         "BF16": ml_dtypes.bfloat16}  # fmt: skip


def sample(datatype: str, json_safe: bool) -> npt.NDArray[Any]:
    """A (2, 3) tensor of `datatype` with values at the edges of its range."""
    rng = np.random.default_rng(7)
    if datatype == "BYTES":
        items = [b"", b"a", "\u00e9t\u00e9".encode(), b"x" * 300, b"tab\tnl\n", b"\x00\xff"]
        if json_safe:  # JSON carries UTF-8 strings only
            items[-1] = b"end"
        return np.array(items, dtype=object).reshape(2, 3)
    if datatype == "BOOL":
        return np.array([True, False, True, True, False, False]).reshape(2, 3)
    dtype = np.dtype(NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        edges = [info.min, info.max, 0, 1, info.max // 3, info.min // 3 if info.min else 7]
        return np.array(edges, dtype=dtype).reshape(2, 3)
    floats = rng.standard_normal(6).astype(np.float32)
    floats[:2] = [0.0, -1.5]
    return floats.astype(dtype).reshape(2, 3)


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Any:
    with httpclient.InferenceServerClient(url=mesh.http) as c:
        yield c


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_through_the_replica(
    client: Any, datatype: str, binary: bool
) -> None:
    if datatype == "BF16" and not binary:
        pytest.skip("tritonclient sends BF16 as binary data only (see test_core's JSON BF16 test)")
    x = sample(datatype, json_safe=not binary)
    tensor = httpclient.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(
        "simple", [tensor], outputs=[httpclient.InferRequestedOutput("x", binary_data=binary)]
    )
    out = result.as_numpy("x")
    output = result.get_output("x")
    assert output["datatype"] == datatype and output["shape"] == [2, 3]
    assert ("data" in output) is not binary
    if datatype == "BYTES" and not binary:  # JSON strings come back as str
        assert out.tolist() == [[b.decode() for b in row] for row in x.tolist()]
    elif datatype == "BYTES":
        assert out.tolist() == x.tolist()
    else:
        assert out.dtype == x.dtype
        np.testing.assert_array_equal(out.view(np.uint8), x.view(np.uint8))


def test_requested_outputs_are_the_only_ones_returned_in_the_form_asked(client: Any) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    inputs = [httpclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in range(2)]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    only = [httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    result = client.infer("simple", inputs, outputs=only)
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == ["OUTPUT1"]
    assert outputs[0]["data"] == (a - b).ravel().tolist()
    both = [httpclient.InferRequestedOutput("OUTPUT1"), httpclient.InferRequestedOutput("OUTPUT0")]
    result = client.infer("simple", inputs, outputs=both)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    everything = client.infer("simple", inputs)  # no outputs named: all of them, binary
    outputs = everything.get_response()["outputs"]
    assert sorted(o["name"] for o in outputs) == ["OUTPUT0", "OUTPUT1"]
    assert all("binary_data_size" in o["parameters"] for o in outputs)


def test_request_id_is_echoed_and_parameters_are_accepted(client: Any) -> None:
    tensor = httpclient.InferInput("x", [3], "FP32")
    tensor.set_data_from_numpy(np.ones(3, np.float32))
    result = client.infer(
        "simple",
        [tensor],
        request_id="req-42",
        parameters={"temperature": 0.5, "tag": "a", "greedy": True, "top_k": 3},
        sequence_id=7,
        priority=1,
        timeout=10_000_000,
    )
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == "simple" and response["model_version"] == "1"
    np.testing.assert_array_equal(result.as_numpy("x"), np.ones(3, np.float32))


def test_a_version_in_the_path_is_served_and_echoed(client: Any) -> None:
    tensor = httpclient.InferInput("x", [2], "INT64")
    tensor.set_data_from_numpy(np.array([5, 6]))
    result = client.infer("simple", [tensor], model_version="3")
    assert result.get_response()["model_version"] == "3"
    assert client.is_model_ready("simple", "3")
    assert client.get_model_metadata("simple", "3")["name"] == "simple"


def test_a_model_behind_the_router_is_served_like_the_fronted_one(client: Any) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [httpclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in range(2)]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    result = client.infer("routed", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)
    assert client.is_model_ready("routed")
    assert [t["name"] for t in client.get_model_metadata("routed")["outputs"]] == [
        "OUTPUT0",
        "OUTPUT1",
    ]


def test_large_binary_tensors_cross_both_ways(client: Any) -> None:
    x = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)  # 4 MiB
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("simple", [tensor])
    np.testing.assert_array_equal(result.as_numpy("x"), x)


def test_compressed_requests_are_inflated(client: Any) -> None:
    x = np.arange(20_000, dtype=np.int64)
    tensor = httpclient.InferInput("x", [20_000], "INT64")
    tensor.set_data_from_numpy(x)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("simple", [tensor], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("x"), x)


async def test_the_aio_client_infers_and_reads_metadata(mesh: Mesh) -> None:
    async with aioclient.InferenceServerClient(url=mesh.http) as client:
        assert await client.is_server_live()
        assert await client.is_model_ready("simple")
        words = np.array([b"hello", b"\x00world"], dtype=object)
        tensor = aioclient.InferInput("words", [2], "BYTES")
        tensor.set_data_from_numpy(words)
        half = np.array([1.5, -2.25], dtype=ml_dtypes.bfloat16)
        other = aioclient.InferInput("half", [2], "BF16")
        other.set_data_from_numpy(half)
        result = await client.infer("simple", [tensor, other], request_id="aio")
        assert result.as_numpy("words").tolist() == words.tolist()
        assert result.as_numpy("half").tolist() == half.tolist()
        assert result.get_response()["id"] == "aio"
        meta = await client.get_model_metadata("simple")
        assert [t["datatype"] for t in meta["inputs"]] == ["INT32", "INT32"]
        stats = await client.get_inference_statistics("simple")
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 1


async def test_concurrent_requests_each_get_their_own_answer(mesh: Mesh) -> None:
    async with aioclient.InferenceServerClient(url=mesh.http, conn_limit=8) as client:

        async def one(i: int) -> None:
            x = np.full((64, 64), i, dtype=np.int32)  # 16 KiB: inline
            y = np.full((256, 256), i, dtype=np.float32)  # 256 KiB: through the arena
            inputs = [aioclient.InferInput("x", [64, 64], "INT32"),
                      aioclient.InferInput("y", [256, 256], "FP32")]  # fmt: skip
            inputs[0].set_data_from_numpy(x)
            inputs[1].set_data_from_numpy(y)
            result = await client.infer("simple" if i % 2 else "routed", inputs, request_id=str(i))
            assert result.get_response()["id"] == str(i)
            np.testing.assert_array_equal(result.as_numpy("x"), x)
            np.testing.assert_array_equal(result.as_numpy("y"), y)

        await asyncio.gather(*(one(i) for i in range(24)))
