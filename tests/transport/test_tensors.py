"""Tensor encoding: identity for every datatype and shape, views not copies, clear errors."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from transport import (
    DATATYPES,
    FrameError,
    Header,
    Kind,
    LimitExceeded,
    Limits,
    Placement,
    TransportError,
    decode_tensors,
    encode_tensors,
    numpy_dtype,
    pack_header,
    unpack_header,
)

INLINE = Limits()
ARROW = Limits(inline_threshold=0)
FIXED = [d for d in DATATYPES if d != "BYTES"]


def roundtrip(tensors: dict[str, Any], limits: Limits) -> dict[str, npt.NDArray[Any]]:
    """Encode, pack the header, lay the body out contiguously, unpack and decode."""
    metas, parts, body_len = encode_tensors(tensors, limits)
    header = unpack_header(
        pack_header(Header(Kind.REQUEST, "svc", tensors=metas, body_len=body_len)), limits
    )
    body = bytearray(body_len)
    offset = 0
    for part in parts:
        view = memoryview(part).cast("B")
        body[offset : offset + view.nbytes] = view
        offset += view.nbytes
    assert offset == body_len
    return decode_tensors(header.tensors, memoryview(body) if body_len else None, limits)


def same(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype == object:
        return b.dtype == object and a.ravel().tolist() == b.ravel().tolist()
    return (
        a.dtype == b.dtype
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7)


@st.composite
def tensors_of_any_type(draw: st.DrawFn) -> npt.NDArray[Any]:
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(shapes)
    if datatype == "BYTES":
        items = draw(
            st.lists(st.binary(max_size=20), min_size=math.prod(shape), max_size=math.prod(shape))
        )
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = numpy_dtype(datatype)
    raw = draw(
        st.binary(
            min_size=math.prod(shape) * dtype.itemsize, max_size=math.prod(shape) * dtype.itemsize
        )
    )
    array = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape)
    if datatype == "BOOL":
        array = array.view(np.uint8).astype(bool)
    if draw(st.booleans()) and array.ndim >= 2:
        array = np.asfortranarray(array)
    return array


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), tensors_of_any_type(), max_size=4), st.booleans())
def test_encode_decode_is_identity_for_every_datatype_and_shape(
    tensors: dict[str, npt.NDArray[Any]], arrow: bool
) -> None:
    out = roundtrip(tensors, ARROW if arrow else INLINE)
    assert list(out) == list(tensors)
    for name, array in tensors.items():
        assert same(out[name], array), name


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("limits", [INLINE, ARROW], ids=["inline", "arrow"])
def test_every_datatype_roundtrips_exactly(datatype: str, limits: Limits) -> None:
    array: npt.NDArray[Any]
    if datatype == "BYTES":
        array = np.array([b"", b"\x00\xff", "héllo".encode()] * 4, dtype=object).reshape(3, 4)
    elif datatype == "BOOL":
        array = (np.arange(24) % 3 == 0).reshape(2, 3, 4)
    else:
        dtype = numpy_dtype(datatype)
        array = np.frombuffer(
            np.random.default_rng(7).bytes(24 * dtype.itemsize), dtype=dtype
        ).reshape(2, 3, 4)
    assert same(roundtrip({"t": array}, limits)["t"], array)


def test_small_messages_travel_inline_and_large_ones_as_arrow() -> None:
    small, _, small_len = encode_tensors({"a": np.zeros(100, np.float32)}, INLINE)
    large, parts, large_len = encode_tensors({"a": np.zeros(1 << 20, np.float32)}, INLINE)
    assert small[0].placement is Placement.INLINE and small_len == 0
    assert large[0].placement is Placement.ARROW and large_len > (1 << 22)
    assert parts


def test_encoding_a_contiguous_tensor_does_not_copy_it() -> None:
    array = np.arange(1 << 18, dtype=np.float64)
    _, parts, _ = encode_tensors({"a": array}, INLINE)
    assert any(
        np.shares_memory(np.frombuffer(p, dtype=np.uint8), array)
        for p in parts
        if memoryview(p).nbytes == array.nbytes
    )


@pytest.mark.parametrize("datatype", FIXED)
def test_decoded_arrays_are_views_on_the_received_body(datatype: str) -> None:
    dtype = numpy_dtype(datatype)
    array = np.zeros(1 << 16, dtype=dtype)
    metas, parts, body_len = encode_tensors({"a": array, "b": array[:5]}, ARROW)
    body = np.zeros(body_len, dtype=np.uint8)
    offset = 0
    for part in parts:
        view = np.frombuffer(part, dtype=np.uint8)
        body[offset : offset + view.size] = view
        offset += view.size
    out = decode_tensors(metas, memoryview(body.data), ARROW)
    assert np.shares_memory(out["a"], body) and np.shares_memory(out["b"], body)
    assert not out["a"].flags.writeable


def test_non_contiguous_fortran_and_big_endian_inputs_arrive_equal() -> None:
    base = np.arange(4096, dtype=np.float32).reshape(64, 64)
    inputs = {
        "strided": base[::3, 1::2],
        "fortran": np.asfortranarray(base),
        "transposed": base.T,
        "big_endian": base.astype(">f4"),
        "negative": base[::-1],
    }
    for limits in (INLINE, ARROW):
        out = roundtrip(inputs, limits)
        for name, array in inputs.items():
            np.testing.assert_array_equal(out[name], array)
            assert out[name].dtype.isnative


def test_bfloat16_keeps_its_type() -> None:
    array = np.array([1.5, -2.25, np.inf], dtype=ml_dtypes.bfloat16)
    out = roundtrip({"x": array}, ARROW)["x"]
    assert out.dtype == ml_dtypes.bfloat16
    assert same(out, array)


def test_str_elements_of_a_bytes_tensor_arrive_as_utf8_bytes() -> None:
    out = roundtrip({"s": np.array(["a", "ß"])}, INLINE)["s"]
    assert out.tolist() == [b"a", "ß".encode()]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros(3, dtype=np.complex64), "no Open Inference Protocol datatype"),
        (np.array([object()], dtype=object), "bytes or str elements"),
    ],
)
def test_values_the_protocol_cannot_carry_raise_frame_error(value: Any, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        encode_tensors({"x": value}, INLINE)


def test_rank_and_count_limits_raise_limit_exceeded() -> None:
    with pytest.raises(LimitExceeded, match="max_rank"):
        encode_tensors({"x": np.zeros((1,) * 5)}, Limits(max_rank=4))
    with pytest.raises(LimitExceeded, match="max_tensors"):
        encode_tensors({str(i): np.zeros(1) for i in range(3)}, Limits(max_tensors=2))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_headers_raise_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        header = unpack_header(data, INLINE)
        decode_tensors(header.tensors, None, INLINE)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_or_truncated_bodies_raise_only_frame_error(data: st.DataObject) -> None:
    arrays = {"a": np.arange(3000, dtype=np.int32), "b": np.array([b"xy"] * 9, dtype=object)}
    metas, parts, body_len = encode_tensors(arrays, ARROW)
    body = bytearray(b"".join(bytes(memoryview(p).cast("B")) for p in parts))
    cut = data.draw(st.integers(0, body_len))
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, body_len - 1), st.integers(0, 255)), max_size=8)
    )
    for at, value in flips:
        body[at] = value
    with contextlib.suppress(FrameError):
        decode_tensors(metas, memoryview(body[:cut]), ARROW)


def test_header_and_body_that_disagree_raise_frame_error() -> None:
    metas, _, _ = encode_tensors({"a": np.zeros(4, np.int8)}, INLINE)
    bad = unpack_header(pack_header(Header(Kind.REQUEST, tensors=metas)), INLINE).tensors
    lying = [type(bad[0])(bad[0].name, "INT8", (5,), "C", bad[0].placement, bad[0].data)]
    with pytest.raises(FrameError, match="needs 5 bytes, got 4"):
        decode_tensors(lying, None, INLINE)
    arrow = [type(bad[0])("a", "FP32", (1,), "C", Placement.ARROW, 0)]
    with pytest.raises(FrameError, match="no body"):
        decode_tensors(arrow, None, INLINE)
    assert issubclass(FrameError, TransportError)
