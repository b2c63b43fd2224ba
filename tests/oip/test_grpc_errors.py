"""Bad requests to the OIP gRPC front door get the protocol's status codes, the core's
(Triton's) wording, and leave nothing behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from ..conftest import wait_for
from .conftest import Mesh

pytestmark = pytest.mark.timeout(60)

METHOD = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[Any]:
    with grpcclient.InferenceServerClient(url=mesh.sidecar["grpc"]) as c:
        yield c


@pytest.fixture(scope="module")
def channel(mesh: Mesh) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(mesh.sidecar["grpc"]) as c:
        yield c


def failure(call: Callable[[], object]) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def raw_failure(channel: grpc.Channel, request: Any) -> grpc.RpcError:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    return caught.value


def test_an_unknown_model_gets_tritons_wording_and_code(client: Any) -> None:
    # Triton answers INVALID_ARG for a model name it has never heard of (gRPC
    # INVALID_ARGUMENT, HTTP 400), whichever RPC names it.
    tensor = grpcclient.InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.zeros(1, np.float32))
    calls: list[Callable[[], object]] = [
        lambda: client.infer("no-such-model", [tensor]),
        lambda: client.get_model_metadata("no-such-model"),
        lambda: client.get_model_config("no-such-model"),
        lambda: client.get_inference_statistics("no-such-model"),
        lambda: client.infer("bad/name", [tensor]),
    ]
    for call in calls:
        error = failure(call)
        assert error.status() == "StatusCode.INVALID_ARGUMENT"
        assert error.message().startswith("Request for unknown model: '")
    assert not client.is_model_ready("no-such-model")


def test_tensors_that_do_not_match_their_shape_are_invalid_arguments(client: Any) -> None:
    tensor = grpcclient.InferInput("x", [4], "FP32")
    tensor.set_data_from_numpy(np.zeros(4, np.float32))
    tensor.set_shape([5])  # 16 bytes sent for 5 FP32
    short = failure(lambda: client.infer("simple", [tensor]))
    assert short.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input byte size mismatch for input 'x'" in short.message()
    words = grpcclient.InferInput("w", [2], "BYTES")
    words.set_data_from_numpy(np.array([b"a", b"b"], dtype=object))
    words.set_shape([3])
    ragged = failure(lambda: client.infer("simple", [words]))
    assert ragged.status() == "StatusCode.INVALID_ARGUMENT"
    tensor.set_shape([4])
    missing = [grpcclient.InferRequestedOutput("nope")]
    unknown_output = failure(lambda: client.infer("simple", [tensor], outputs=missing))
    assert unknown_output.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected inference output 'nope'" in unknown_output.message()


def test_inconsistent_messages_are_invalid_arguments(channel: grpc.Channel) -> None:
    def request(**fields: Any) -> Any:
        return service_pb2.ModelInferRequest(model_name="simple", **fields)

    def typed(datatype: str, **contents: list[float]) -> Any:
        return request(inputs=[{"name": "x", "datatype": datatype, "shape": [1],
                                "contents": contents}])  # fmt: skip

    no_data = request(inputs=[{"name": "x", "datatype": "INT8", "shape": [1]}])
    extra_raw = request(
        inputs=[{"name": "x", "datatype": "INT8", "shape": [1]}], raw_input_contents=[b"\1", b"\2"]
    )
    bad_type = request(
        inputs=[{"name": "x", "datatype": "INT7", "shape": [1]}], raw_input_contents=[b"\1"]
    )
    wrong_contents = typed("INT8", fp32_contents=[1])
    out_of_range = typed("INT8", int_contents=[300])
    half = typed("FP16", fp32_contents=[1])
    no_inputs = request()
    for message, words in [
        (no_data, "input 'x' has no data"),
        (extra_raw, "2 raw_input_contents"),
        (bad_type, "invalid datatype 'INT7'"),
        (wrong_contents, "takes 'contents.int_contents'"),
        (out_of_range, "do not fit in int8"),
        (half, "raw_input_contents only"),
        (no_inputs, "has no inputs"),
    ]:
        error = raw_failure(channel, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, words
        assert words in error.details()


def test_a_malformed_message_is_an_invalid_argument(channel: grpc.Channel) -> None:
    infer = channel.unary_unary(METHOD)
    for garbage in (b"\xff", b"\x3a\x7f\x01", b"\x00\x00"):
        with pytest.raises(grpc.RpcError) as caught:
            infer(garbage, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed ModelInferRequest" in caught.value.details()


def test_a_failing_handler_is_internal_with_its_message(client: Any) -> None:
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
              grpcclient.InferInput("INPUT1", [1, 15], "INT32")]  # fmt: skip
    inputs[0].set_data_from_numpy(np.zeros((1, 16), np.int32))
    inputs[1].set_data_from_numpy(np.zeros((1, 15), np.int32))
    error = failure(lambda: client.infer("simple", inputs))
    assert error.status() == "StatusCode.INTERNAL"
    assert "operands could not be broadcast" in error.message()


def test_methods_not_served_are_unimplemented(client: Any) -> None:
    error = failure(lambda: client.load_model("simple"))
    assert error.status() == "StatusCode.UNIMPLEMENTED"


def test_nothing_is_leaked_after_errors(mesh: Mesh) -> None:
    wait_for(lambda: mesh.metric("arrowmesh_shm_leases") == 0, 10, "no shared-memory lease held")
    assert "/dev/shm/oip-grpc-" not in Path(f"/proc/{mesh.sidecar_pid}/maps").read_text()
