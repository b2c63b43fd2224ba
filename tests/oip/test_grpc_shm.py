"""The system shared-memory extension with tritonclient.utils.shared_memory, and CUDA's
"not supported" answers, through an unmodified tritonclient.grpc."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from ..conftest import wait_for
from .conftest import Mesh

pytestmark = pytest.mark.timeout(60)

Make = Callable[[str, int], tuple[Any, str]]


@pytest.fixture
def client(mesh: Mesh) -> Iterator[Any]:
    with grpcclient.InferenceServerClient(url=mesh.sidecar["grpc"]) as c:
        c.unregister_system_shared_memory()  # as Triton's examples start
        c.unregister_cuda_shared_memory()
        yield c
        c.unregister_system_shared_memory()


@pytest.fixture
def regions() -> Iterator[Make]:
    """Make regions as the client library does; destroyed (unlinked) at the end."""
    made: list[Any] = []

    def make(name: str, size: int) -> tuple[Any, str]:
        key = f"/oip-grpc-{name}-{uuid.uuid4().hex[:8]}"
        made.append(shm.create_shared_memory_region(name, key, size))
        return made[-1], key

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def failure(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def test_inputs_and_outputs_travel_in_shared_memory(mesh: Mesh, client: Any, regions: Make) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 5, dtype=np.int32)
    size = a.nbytes
    out_handle, out_key = regions("output_data", size * 2)
    in_handle, in_key = regions("input_data", size * 2)
    shm.set_shared_memory_region(in_handle, [a])
    shm.set_shared_memory_region(in_handle, [b], offset=size)
    client.register_system_shared_memory("output_data", out_key, size * 2)
    client.register_system_shared_memory("input_data", in_key, size * 2)
    assert mesh.mapped(mesh.sidecar_pid, in_key) and mesh.mapped(mesh.sidecar_pid, out_key)

    inputs = [grpcclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in range(2)]
    inputs[0].set_shared_memory("input_data", size)
    inputs[1].set_shared_memory("input_data", size, offset=size)
    outputs = [grpcclient.InferRequestedOutput(f"OUTPUT{i}") for i in range(2)]
    outputs[0].set_shared_memory("output_data", size)
    outputs[1].set_shared_memory("output_data", size, offset=size)
    for model in ("simple", "routed"):
        result = client.infer(model, inputs, outputs=outputs, request_id=model)
        response = result.get_response()
        assert response.id == model
        assert response.raw_output_contents == [b"", b""]  # nothing inline: it is in the region
        first = result.get_output("OUTPUT0")
        assert (first.datatype, list(first.shape)) == ("INT32", [1, 16])
        dtype = utils.triton_to_np_dtype(first.datatype)
        total = shm.get_contents_as_numpy(out_handle, dtype, [1, 16])
        difference = shm.get_contents_as_numpy(out_handle, dtype, [1, 16], offset=size)
        np.testing.assert_array_equal(total, a + b)
        np.testing.assert_array_equal(difference, a - b)
        shm.set_shared_memory_region(out_handle, [np.zeros((2, 16), np.int32)])

    status = client.get_system_shared_memory_status(as_json=True)["regions"]
    assert status["input_data"] == {
        "name": "input_data", "key": in_key, "byte_size": str(size * 2)  # uint64: a string
    }  # fmt: skip
    one = client.get_system_shared_memory_status("output_data").regions
    assert list(one) == ["output_data"] and one["output_data"].key == out_key
    with httpclient.InferenceServerClient(url=mesh.http) as http:  # one registry for both
        assert {r["name"] for r in http.get_system_shared_memory_status()} == set(status)

    client.unregister_system_shared_memory("input_data")
    assert list(client.get_system_shared_memory_status().regions) == ["output_data"]
    wait_for(lambda: not mesh.mapped(mesh.sidecar_pid, in_key), 10, "the region to be unmapped")
    client.unregister_system_shared_memory()
    assert not client.get_system_shared_memory_status().regions
    wait_for(lambda: not mesh.mapped(mesh.sidecar_pid, out_key), 10, "the region to be unmapped")


def test_an_input_in_a_region_mixes_with_raw_inputs_and_outputs(client: Any, regions: Make) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    handle, key = regions("mixed", a.nbytes)
    shm.set_shared_memory_region(handle, [a])
    client.register_system_shared_memory("mixed", key, a.nbytes)
    inputs = [grpcclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in range(2)]
    inputs[0].set_shared_memory("mixed", a.nbytes)
    inputs[1].set_data_from_numpy(np.ones((1, 16), np.int32))
    outputs = [grpcclient.InferRequestedOutput(f"OUTPUT{i}") for i in range(2)]
    outputs[0].set_shared_memory("mixed", a.nbytes)  # written over the input, after reading it
    result = client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - 1)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.int32, [1, 16]), a + 1)


def test_unknown_regions_and_bad_bounds_are_refused(client: Any, regions: Make) -> None:
    _, key = regions("small", 64)
    client.register_system_shared_memory("small", key, 64)
    taken = failure(lambda: client.register_system_shared_memory("small", key, 64))
    assert taken.status() == "StatusCode.INVALID_ARGUMENT"
    assert "already in manager" in taken.message()
    too_big = failure(lambda: client.register_system_shared_memory("big", key, 65))
    assert too_big.status() == "StatusCode.INVALID_ARGUMENT"
    no_object = failure(lambda: client.register_system_shared_memory("x", "/oip-grpc-none", 8))
    assert no_object.status() == "StatusCode.INVALID_ARGUMENT"
    unknown = failure(lambda: client.get_system_shared_memory_status("nothing"))
    assert unknown.status() == "StatusCode.NOT_FOUND"

    def infer(region: str, byte_size: int, offset: int) -> InferenceServerException:
        tensor = grpcclient.InferInput("x", [4], "INT32")
        tensor.set_shared_memory(region, byte_size, offset=offset)
        return failure(lambda: client.infer("simple", [tensor]))

    missing = infer("nothing", 16, 0)
    assert missing.status() == "StatusCode.NOT_FOUND"
    assert "Unable to find shared memory region: 'nothing'" in missing.message()
    for byte_size, offset in ((16, 64), (16, 56), (16, 1 << 40)):
        beyond = infer("small", byte_size, offset)
        assert beyond.status() == "StatusCode.INVALID_ARGUMENT", (byte_size, offset)
        assert "Invalid offset" in beyond.message()
    wrong_size = infer("small", 12, 0)  # 4 INT32 need 16 bytes
    assert wrong_size.status() == "StatusCode.INVALID_ARGUMENT"

    tensor = grpcclient.InferInput("x", [8], "INT32")
    tensor.set_data_from_numpy(np.arange(8, dtype=np.int32))
    output = grpcclient.InferRequestedOutput("x")
    output.set_shared_memory("small", 16)  # the output needs 32
    small = failure(lambda: client.infer("simple", [tensor], outputs=[output]))
    assert small.status() == "StatusCode.INVALID_ARGUMENT"
    assert "should be at least 32 bytes" in small.message()


def test_cuda_shared_memory_is_not_supported_but_its_housekeeping_succeeds(client: Any) -> None:
    assert not client.get_cuda_shared_memory_status().regions
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("anything")
    refused = failure(lambda: client.register_cuda_shared_memory("gpu", b"\0" * 64, 0, 1024))
    assert refused.status() == "StatusCode.INVALID_ARGUMENT"
    assert "GPUs not supported" in refused.message()
    unknown = failure(lambda: client.get_cuda_shared_memory_status("gpu"))
    assert unknown.status() == "StatusCode.NOT_FOUND"
