"""decode_tensors under headers and bodies that disagree: only FrameError, and what it returns
is exactly what the header promised.

tests/transport/test_tensors.py corrupts the body of a fixed, honest header. Here the
header is the liar: metas as `unpack_header` lets them through (any datatype string,
shape, order, placement and data) against no body, random bytes, or a valid Arrow IPC body
of other tensors, plus shared-memory views of any size. An array that comes back must have
the shape and dtype its meta says, be read-only, and view the bytes that came in rather
than memory allocated on the header's word.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport import (
    DATATYPES,
    FrameError,
    Limits,
    Placement,
    TensorMeta,
    decode_tensors,
    encode_tensors,
    numpy_dtype,
    unpack_header,
)

from . import _budget
from ._budget import event
from ._strategies import edge_ints, rarely

pytestmark = pytest.mark.timeout(_budget.timeout())

LIMITS = Limits(max_rank=6, inline_threshold=64, max_message_size=1 << 20)

SOURCE_TENSORS: list[dict[str, object]] = [
    {"a": np.arange(40, dtype=np.int32), "b": np.ones((2, 3), dtype=np.float64)},
    {"s": np.array([b"x", b"yz", b""], dtype=object), "h": np.arange(50, dtype=np.uint16)},
    {"f": np.asfortranarray(np.arange(60, dtype=np.int8).reshape(6, 10))},
]


def _arrow_body(tensors: dict[str, object]) -> bytes:
    _, parts, _ = encode_tensors(tensors, LIMITS)
    return b"".join(bytes(memoryview(p).cast("B")) for p in parts)


BODIES = [_arrow_body(t) for t in SOURCE_TENSORS]
HONEST = [
    (list(encode_tensors(t, LIMITS)[0]), body)
    for t, body in zip(SOURCE_TENSORS, BODIES, strict=True)
] + [(list(encode_tensors(t, Limits(inline_threshold=4096))[0]), None) for t in SOURCE_TENSORS]

dims = rarely(st.integers(0, 6), edge_ints.filter(lambda d: d >= 0), 8)


@st.composite
def metas(draw: st.DrawFn) -> TensorMeta:
    """A meta `unpack_header` accepts, its data sometimes the right size for its shape."""
    datatype = draw(rarely(st.sampled_from(DATATYPES), st.text(max_size=5), 8))
    shape = tuple(draw(st.lists(dims, max_size=4)))
    placement = draw(st.sampled_from(list(Placement)))
    count = math.prod(shape)
    if placement is Placement.ARROW:
        data: bytes | list[bytes] | int = draw(rarely(st.integers(0, 3), edge_ints, 6))
    elif datatype == "BYTES":
        size = count if count <= 64 and draw(st.booleans()) else draw(st.integers(0, 8))
        data = draw(st.lists(st.binary(max_size=6), min_size=size, max_size=size))
    else:
        itemsize = numpy_dtype(datatype).itemsize if datatype in DATATYPES else 1
        exact = count * itemsize if count * itemsize <= 512 else 0
        size = draw(st.sampled_from([exact, exact, max(exact - 1, 0), exact + 1]))
        data = draw(st.binary(min_size=size, max_size=size))
    return TensorMeta(draw(st.sampled_from("abfhsx")), datatype, shape, draw(
        st.sampled_from("CF")), placement, data)  # fmt: skip


bodies = st.one_of(
    st.none(),
    st.sampled_from(BODIES),
    st.binary(max_size=200),
    st.sampled_from(BODIES).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
)


@st.composite
def perturbed(draw: st.DrawFn) -> tuple[list[TensorMeta], bytes | None]:
    """The metas of a real message with one field changed, against its own body."""
    honest, body = draw(st.sampled_from(HONEST))
    metas_ = [TensorMeta(m.name, m.datatype, m.shape, m.order, m.placement, m.data) for m in honest]
    meta = draw(st.sampled_from(metas_))
    field = draw(st.sampled_from(["datatype", "shape", "order", "placement", "data", "none"]))
    if field == "datatype":
        meta.datatype = draw(st.sampled_from(DATATYPES))
    elif field == "shape":
        meta.shape = tuple(draw(st.lists(dims, max_size=4)))
    elif field == "order":
        meta.order = "F" if meta.order == "C" else "C"
    elif field == "placement":
        meta.placement = draw(st.sampled_from(list(Placement)))
    elif field == "data":
        meta.data = draw(st.integers(-1, 3) | st.binary(max_size=40))
    return metas_, body


shared_views = st.lists(st.integers(0, 64).map(lambda n: np.zeros(n, dtype=np.uint8)), max_size=3)


def _expected_dtype(datatype: str) -> np.dtype[np.generic]:
    return np.dtype(object) if datatype == "BYTES" else numpy_dtype(datatype)


@_budget.fuzz(examples=200)
@given(st.tuples(st.lists(metas(), max_size=4), bodies) | perturbed(), shared_views)
def test_lying_metas_give_frame_error_or_exactly_the_promised_arrays(
    message: tuple[list[TensorMeta], bytes | None], shared: list[np.ndarray]
) -> None:
    meta_list, body = message
    view = None if body is None else memoryview(body)
    try:
        out = decode_tensors(meta_list, view, LIMITS, shared)
    except FrameError as exc:
        event(f"refused: {str(exc)[:24]}")
        return
    except ValueError as exc:
        if not _empty_but_too_big(meta_list):
            raise
        event(f"finding: {exc}")  # pinned below; fuzzing goes on
        return
    event(f"decoded {len(out)} tensors")
    received = (0 if body is None else len(body)) + sum(v.nbytes for v in shared)
    for meta in meta_list:
        array = out[meta.name]
        assert array.shape == meta.shape
        assert array.dtype == _expected_dtype(meta.datatype)
        if meta.placement is not Placement.SHM:  # our stand-in views are writable
            assert not array.flags.writeable
        if meta.datatype != "BYTES" and meta.placement is Placement.INLINE:
            assert isinstance(meta.data, bytes) and array.nbytes == len(meta.data)
        elif meta.datatype != "BYTES":
            assert array.nbytes <= received  # a view on what came in, never a fresh buffer
        else:
            assert array.size <= max(received, len(meta.data) if isinstance(meta.data, list) else 0)


def _empty_but_too_big(metas: list[TensorMeta]) -> bool:
    """A shape with a 0 whose other dimensions overflow numpy's size (the finding below)."""
    return any(0 in m.shape and math.prod(d for d in m.shape if d) >= (1 << 63) // 8 for m in metas)


@pytest.mark.parametrize("datatype", ["BOOL", "FP32", "BYTES"])
def test_an_empty_tensor_with_an_overflowing_shape_is_a_frame_error(datatype: str) -> None:
    data: bytes | list[bytes] = [] if datatype == "BYTES" else b""
    raw = {"k": 1, "x": [["a", datatype, [0, 1 << 32, 1 << 32], "C", 0, data]]}
    header = unpack_header(msgpack.packb(raw, use_bin_type=True), LIMITS)  # the wire accepts it
    with pytest.raises(FrameError):
        decode_tensors(header.tensors, None, LIMITS)
