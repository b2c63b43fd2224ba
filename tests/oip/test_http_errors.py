"""Bad requests get the protocol's answer: a 4xx/5xx status and {"error": ...}, nothing leaked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from ..conftest import wait_for
from .conftest import MAX_MESSAGE_SIZE, Mesh

pytestmark = pytest.mark.timeout(60)

INFER = "/v2/models/simple/infer"


@pytest.fixture
async def http(mesh: Mesh) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(mesh.url) as session:
        yield session


async def post(
    session: aiohttp.ClientSession, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with session.post(path, data=body, headers=headers or {}) as response:
        document = await response.json(content_type=None)
        assert isinstance(document, dict)
        return response.status, document


def binary_request(inputs: list[dict[str, Any]], data: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": inputs}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "failed to parse the request JSON buffer"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "needs 'inputs'"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2]}]}', "exactly one of"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]}',
         "unexpected number of elements 2"),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}]}',
         "do not fit in int8"),
        (b'{"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": ["a"]}]}',
         "unable to parse 'data' of input 'x' as INT8"),
        (b'{"inputs": [{"name": "x", "datatype": "FP17", "shape": [1], "data": [1]}]}',
         "invalid datatype 'FP17'"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}',
         "needs a 'shape'"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
         b' "outputs": [{"name": "nope"}]}', "unexpected inference output 'nope'"),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
         b' "outputs": [{"name": "x", "parameters": {"classification": 2}}]}',
         "classification extension is not supported"),
    ],
    ids=["malformed", "not-object", "no-inputs", "no-data", "shape-vs-data", "overflow",
         "not-numbers", "unknown-datatype", "negative-dim", "unknown-output", "classification"],
)  # fmt: skip
async def test_malformed_requests_get_400_and_what_was_wrong(
    http: aiohttp.ClientSession, body: bytes, expected: str
) -> None:
    status, document = await post(http, INFER, body)
    assert status == 400
    assert expected in document["error"]


@pytest.mark.parametrize(
    ("size", "data", "header_length", "expected"),
    [
        (12, b"\0" * 8, None, "only 8 are left"),
        (8, b"\0" * 12, None, "4 bytes of binary data beyond"),
        (8, b"\0" * 8, "999999", "Inference-Header-Content-Length is '999999'"),
        (8, b"\0" * 8, "abc", "Inference-Header-Content-Length is 'abc'"),
    ],
    ids=["short", "long", "header-past-body", "header-not-a-number"],
)
async def test_binary_sizes_that_do_not_add_up_get_400(
    http: aiohttp.ClientSession, size: int, data: bytes, header_length: str | None, expected: str
) -> None:
    body, headers = binary_request(
        [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": size}}],
        data,
    )
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    status, document = await post(http, INFER, body, headers)
    assert status == 400
    assert expected in document["error"]


async def test_binary_data_that_does_not_fit_the_shape_gets_400(
    http: aiohttp.ClientSession,
) -> None:
    inputs = [
        {"name": "x", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 8}}
    ]
    status, document = await post(http, INFER, *binary_request(inputs, b"\0" * 8))
    assert status == 400
    assert "input byte size mismatch for input 'x'" in document["error"]
    params = {"binary_data_size": 9}
    words = [{"name": "w", "datatype": "BYTES", "shape": [2], "parameters": params}]
    status, document = await post(http, INFER, *binary_request(words, b"\5\0\0\0hello"))
    assert status == 400
    assert "ends after 1 of 2 elements" in document["error"]


async def test_a_body_over_the_message_limit_gets_413(http: aiohttp.ClientSession) -> None:
    async def endless() -> AsyncIterator[bytes]:
        chunk = b"\0" * (1 << 20)
        for _ in range(MAX_MESSAGE_SIZE // len(chunk) + 2):
            yield chunk

    headers = {"Content-Length": str(MAX_MESSAGE_SIZE + 1)}
    async with http.post(INFER, data=b"\0" * 16, headers=headers) as response:
        assert response.status == 413
        assert "over max_message_size" in (await response.json())["error"]
    async with http.post(INFER, data=endless()) as response:  # chunked: counted as it comes
        assert response.status == 413


def test_an_unknown_model_gets_tritons_wording(mesh: Mesh) -> None:
    with httpclient.InferenceServerClient(url=mesh.http) as client:
        tensor = httpclient.InferInput("x", [1], "FP32")
        tensor.set_data_from_numpy(np.zeros(1, np.float32))
        calls: list[Callable[[], object]] = [
            lambda: client.infer("no-such-model", [tensor]),
            lambda: client.get_model_metadata("no-such-model"),
            lambda: client.get_inference_statistics("no-such-model"),
            lambda: client.infer("bad/name", [tensor]),
        ]
        for call in calls:
            with pytest.raises(InferenceServerException) as caught:
                call()
            assert caught.value.status() == "400"
            assert caught.value.message().startswith("Request for unknown model: '")
        assert not client.is_model_ready("no-such-model")


def test_a_failing_handler_is_a_500_with_its_message(mesh: Mesh) -> None:
    with httpclient.InferenceServerClient(url=mesh.http) as client:
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
                  httpclient.InferInput("INPUT1", [1, 15], "INT32")]  # fmt: skip
        inputs[0].set_data_from_numpy(np.zeros((1, 16), np.int32))
        inputs[1].set_data_from_numpy(np.zeros((1, 15), np.int32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("simple", inputs)
        assert caught.value.status() == "500"
        assert "operands could not be broadcast" in caught.value.message()


def test_nothing_is_leaked_after_errors(mesh: Mesh) -> None:
    wait_for(lambda: mesh.metric("arrowmesh_shm_leases") == 0, 10, "no shared-memory lease held")
    assert "/dev/shm/oip-test-" not in Path(f"/proc/{mesh.sidecar_pid}/maps").read_text()
