"""The system shared-memory extension with tritonclient.utils.shared_memory, and CUDA's
"not supported" answers, through an unmodified tritonclient.http."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from ..conftest import wait_for
from .conftest import Mesh

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def client(mesh: Mesh) -> Iterator[Any]:
    with httpclient.InferenceServerClient(url=mesh.http) as c:
        c.unregister_system_shared_memory()  # as Triton's examples start
        c.unregister_cuda_shared_memory()
        yield c
        c.unregister_system_shared_memory()


@pytest.fixture
def regions() -> Iterator[Any]:
    """Make regions as the client library does; destroyed (unlinked) at the end."""
    made: list[Any] = []

    def make(name: str, size: int) -> tuple[Any, str]:
        key = f"/oip-test-{name}-{uuid.uuid4().hex[:8]}"
        made.append(shm.create_shared_memory_region(name, key, size))
        return made[-1], key

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def test_inputs_and_outputs_travel_in_shared_memory(mesh: Mesh, client: Any, regions: Any) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    size = a.nbytes
    out_handle, out_key = regions("output_data", size * 2)
    client.register_system_shared_memory("output_data", out_key, size * 2)
    in_handle, in_key = regions("input_data", size * 2)
    shm.set_shared_memory_region(in_handle, [a])
    shm.set_shared_memory_region(in_handle, [b], offset=size)
    client.register_system_shared_memory("input_data", in_key, size * 2)
    assert mesh.mapped(mesh.sidecar_pid, in_key) and mesh.mapped(mesh.sidecar_pid, out_key)

    inputs = [httpclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in range(2)]
    inputs[0].set_shared_memory("input_data", size)
    inputs[1].set_shared_memory("input_data", size, offset=size)
    outputs = [httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=True) for i in range(2)]
    outputs[0].set_shared_memory("output_data", size)
    outputs[1].set_shared_memory("output_data", size, offset=size)
    for model in ("simple", "routed"):
        result = client.infer(model, inputs, outputs=outputs)
        first = result.get_output("OUTPUT0")
        assert first == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16]}
        dtype = utils.triton_to_np_dtype(first["datatype"])
        total = shm.get_contents_as_numpy(out_handle, dtype, first["shape"])
        difference = shm.get_contents_as_numpy(out_handle, dtype, [1, 16], offset=size)
        np.testing.assert_array_equal(total, a + b)
        np.testing.assert_array_equal(difference, a - b)
        shm.set_shared_memory_region(out_handle, [np.zeros((2, 16), np.int32)])

    status = {r["name"]: r for r in client.get_system_shared_memory_status()}
    assert status["input_data"] == {
        "name": "input_data", "key": in_key, "offset": 0, "byte_size": size * 2
    }  # fmt: skip
    assert client.get_system_shared_memory_status("output_data")[0]["key"] == out_key
    client.unregister_system_shared_memory("input_data")
    assert [r["name"] for r in client.get_system_shared_memory_status()] == ["output_data"]
    client.unregister_system_shared_memory()
    assert client.get_system_shared_memory_status() == []
    assert not mesh.mapped(mesh.sidecar_pid, in_key)
    assert not mesh.mapped(mesh.sidecar_pid, out_key)


def test_bytes_tensors_and_json_inputs_mix_with_shared_memory(client: Any, regions: Any) -> None:
    words = np.array([b"one", b"", b"three\x00"], dtype=object)
    raw = utils.serialize_byte_tensor(words)
    in_handle, in_key = regions("words_in", 64)
    out_handle, out_key = regions("words_out", 64)
    shm.set_shared_memory_region(in_handle, [raw], offset=8)
    client.register_system_shared_memory("words_in", in_key, 64)
    client.register_system_shared_memory("words_out", out_key, 64)
    text = httpclient.InferInput("words", [3], "BYTES")
    text.set_shared_memory("words_in", len(raw.item()), offset=8)
    plain = httpclient.InferInput("plain", [2], "FP64")
    plain.set_data_from_numpy(np.array([0.5, 2.0]), binary_data=False)
    out = httpclient.InferRequestedOutput("words")
    out.set_shared_memory("words_out", 64)
    result = client.infer(
        "simple", [text, plain], outputs=[out, httpclient.InferRequestedOutput("plain", False)]
    )
    assert result.get_output("plain")["data"] == [0.5, 2.0]
    back = shm.get_contents_as_numpy(out_handle, np.object_, [3])
    assert back.tolist() == words.tolist()


def test_unknown_regions_and_bad_bounds_are_refused(mesh: Mesh, client: Any, regions: Any) -> None:
    _, key = regions("small", 64)
    with pytest.raises(InferenceServerException, match="Unable to open shared memory region"):
        client.register_system_shared_memory("ghost", "/oip-test-no-such-object", 64)
    with pytest.raises(InferenceServerException, match="invalid args") as caught:
        client.register_system_shared_memory("too_big", key, 128)
    assert caught.value.status() == "400"
    with pytest.raises(InferenceServerException, match="is not a shared-memory key"):
        client.register_system_shared_memory("escape", "/../etc/passwd", 8)
    client.register_system_shared_memory("small", key, 32, offset=16)
    with pytest.raises(InferenceServerException, match="already in manager"):
        client.register_system_shared_memory("small", key, 32)
    with pytest.raises(InferenceServerException) as caught:
        client.get_system_shared_memory_status("nothing")
    assert caught.value.status() == "404"
    assert "Unable to find system shared memory region: 'nothing'" in caught.value.message()

    def infer(region: str, byte_size: int, offset: int) -> InferenceServerException:
        tensor = httpclient.InferInput("x", [byte_size // 4], "FP32")
        tensor.set_shared_memory(region, byte_size, offset=offset)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("simple", [tensor])
        return caught.value

    unknown = infer("nothing", 16, 0)
    assert unknown.status() == "404"
    assert "Unable to find shared memory region: 'nothing'" in unknown.message()
    past = infer("small", 16, 24)
    assert past.status() == "400"
    assert "Invalid offset + byte size for shared memory region: 'small'" in past.message()
    assert "Invalid offset for shared memory region" in infer("small", 4, 32).message()
    output = httpclient.InferRequestedOutput("x")
    output.set_shared_memory("small", 8)
    tensor = httpclient.InferInput("x", [4], "FP32")
    tensor.set_data_from_numpy(np.ones(4, np.float32))
    with pytest.raises(InferenceServerException, match=r"\(8 bytes\) should be at least 16"):
        client.infer("simple", [tensor], outputs=[output])

    client.unregister_system_shared_memory("small")
    client.unregister_system_shared_memory("never-registered")  # no error, as Triton
    assert not mesh.mapped(mesh.sidecar_pid, key)
    wait_for(lambda: mesh.metric("arrowmesh_shm_leases") == 0, 10, "no shared-memory lease held")


def test_cuda_shared_memory_is_not_supported_but_standard_calls_succeed(client: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.register_cuda_shared_memory("gpu", b"aGFuZGxl", 0, 64)
    assert caught.value.status() == "400"
    assert "failed to register CUDA shared memory region: 'gpu', GPUs not supported" in (
        caught.value.message()
    )
    assert client.get_cuda_shared_memory_status() == []
    with pytest.raises(InferenceServerException, match="Unable to find cuda shared memory"):
        client.get_cuda_shared_memory_status("gpu")
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("gpu")


def test_a_region_the_client_destroys_without_unregistering_is_released(
    mesh: Mesh, client: Any
) -> None:
    key = f"/oip-test-gone-{uuid.uuid4().hex[:8]}"
    handle = shm.create_shared_memory_region("gone", key, 64)
    client.register_system_shared_memory("gone", key, 64)
    assert mesh.mapped(mesh.sidecar_pid, key)
    shm.destroy_shared_memory_region(handle)  # the client goes away without unregistering
    wait_for(
        lambda: client.get_system_shared_memory_status() == [], 15, "the region to be released"
    )
    assert not mesh.mapped(mesh.sidecar_pid, key)
