"""The protobuf framing of tensor bytes (sidecar.oip._grpc_wire) against protobuf itself."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2

from sidecar.oip._grpc_wire import WireError, nested, split_raw, with_raw

pytestmark = pytest.mark.timeout(60)

raws = st.lists(st.binary(max_size=300), max_size=5)
names = st.text(max_size=20)


@settings(max_examples=80, deadline=None)
@given(contents=raws, model=names, request_id=names, shape=st.lists(st.integers(-1, 2**40)))
def test_raw_input_contents_come_apart_as_views_and_the_rest_parses(
    contents: list[bytes], model: str, request_id: str, shape: list[int]
) -> None:
    message = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    message.inputs.add(name="x", datatype="FP32", shape=shape)
    message.parameters["p"].int64_param = -3
    message.raw_input_contents.extend(contents)
    data = message.SerializeToString()
    rest, views = split_raw(data)
    assert [bytes(v) for v in views] == contents
    assert all(v.obj is data for v in views)  # views on the received buffer, not copies
    parsed = service_pb2.ModelInferRequest.FromString(rest)
    message.ClearField("raw_input_contents")
    assert parsed == message


@settings(max_examples=80, deadline=None)
@given(contents=raws, request_id=names)
def test_raw_output_contents_spliced_in_parse_as_protobuf_built_them(
    contents: list[bytes], request_id: str
) -> None:
    message = service_pb2.ModelInferResponse(model_name="m", id=request_id)
    for i in range(len(contents)):
        message.outputs.add(name=f"o{i}", datatype="BYTES", shape=[1])
    parts = with_raw(message.SerializeToString(), [memoryview(c) for c in contents])
    message.raw_output_contents.extend(contents)
    assert service_pb2.ModelInferResponse.FromString(b"".join(parts)) == message
    stream = service_pb2.ModelStreamInferResponse.FromString(b"".join(nested(parts)))
    assert stream.infer_response == message and not stream.error_message


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=64))
def test_garbage_raises_only_wire_errors(garbage: bytes) -> None:
    with contextlib.suppress(WireError):
        split_raw(garbage)


def test_truncated_and_unsupported_fields_are_wire_errors() -> None:
    for garbage, words in [
        (b"\x3a\x05ab", "runs past the end"),
        (b"\x08", "runs past the end"),
        (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0b", "wire type 3"),
        (b"\x00", "field number 0"),
    ]:
        with pytest.raises(WireError, match=words):
            split_raw(garbage)
