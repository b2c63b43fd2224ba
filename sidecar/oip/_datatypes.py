"""Tensors of the Open Inference Protocol as numpy arrays: from and to raw bytes and JSON.

Raw form (the binary tensor data extension, shared memory, gRPC `raw_*_contents`):
little-endian, row-major, no padding; BOOL is one byte (0 or 1); BYTES is each element as
a 4-byte little-endian unsigned length followed by its bytes. JSON form: a flat (or
row-major nested) list of numbers, booleans for BOOL, strings for BYTES.

Fixed-width tensors read from raw bytes are views on the buffer (no copy); BYTES tensors
are numpy object arrays of `bytes` and are always built element by element.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

import transport

from ._errors import OipError

Array = npt.NDArray[Any]
BYTES: Final = "BYTES"
DATATYPES: Final[tuple[str, ...]] = transport.DATATYPES
_LENGTH: Final = struct.Struct("<I")
_FIXED: Final = {d: transport.numpy_dtype(d) for d in DATATYPES if d != BYTES}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of `datatype` (object for BYTES). Raises OipError for unknown names."""
    if datatype == BYTES:
        return np.dtype(object)
    dtype = _FIXED.get(datatype)
    if dtype is None:
        raise OipError.invalid(
            f"invalid datatype '{datatype}': expected one of {', '.join(DATATYPES)}"
        )
    return dtype


def datatype_of(array: Array) -> str:
    """The OIP datatype of `array`. Raises OipError if the protocol has none for it."""
    try:
        return transport.datatype_of(array)
    except transport.FrameError as exc:
        raise OipError.internal(str(exc)) from None


def element_count(shape: Sequence[int]) -> int:
    """How many elements a tensor of `shape` holds."""
    return math.prod(shape)


def from_raw(name: str, datatype: str, shape: Sequence[int], data: memoryview) -> Array:
    """The tensor `name` whose raw bytes are `data` (a view for fixed-width types).

    Raises OipError when the size of `data` does not match the shape.
    """
    count = element_count(shape)
    if datatype == BYTES:
        return _bytes_from_raw(name, shape, data, count)
    dtype = numpy_dtype(datatype)
    expected = count * dtype.itemsize
    if data.nbytes != expected:
        raise OipError.invalid(
            f"input byte size mismatch for input '{name}': shape {list(shape)} of {datatype} "
            f"needs {expected} bytes, got {data.nbytes}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count)
    if datatype == "BOOL" and count and np.any(array.view(np.uint8) > 1):
        raise OipError.invalid(f"BOOL input '{name}' holds bytes other than 0 and 1")
    return array.reshape(shape)


def _bytes_from_raw(name: str, shape: Sequence[int], data: memoryview, count: int) -> Array:
    raw = data.cast("B") if data.format != "B" else data
    if count > len(raw) // 4:  # checked before allocating: each element takes 4 bytes or more
        raise OipError.invalid(
            f"BYTES input '{name}' of shape {list(shape)} needs {count} elements of at least "
            f"4 bytes each, but has {len(raw)} bytes"
        )
    out = np.empty(count, dtype=object)
    at = 0
    for i in range(count):
        if at + 4 > len(raw):
            raise OipError.invalid(
                f"BYTES input '{name}' ends after {i} of {count} elements (shape {list(shape)})"
            )
        (length,) = _LENGTH.unpack_from(raw, at)
        at += 4
        if at + length > len(raw):
            raise OipError.invalid(
                f"BYTES input '{name}': element {i} says {length} bytes, "
                f"only {len(raw) - at} are left"
            )
        out[i] = bytes(raw[at : at + length])
        at += length
    if at != len(raw):
        raise OipError.invalid(
            f"BYTES input '{name}' has {len(raw) - at} bytes after its {count} elements "
            f"(shape {list(shape)})"
        )
    return out.reshape(shape)


def raw_parts(array: Array) -> list[memoryview]:
    """`array` in raw form, as buffers to write in order (views where possible)."""
    if array.dtype.hasobject or array.dtype.kind in "SU":
        return [memoryview(serialize_bytes(array))]
    if sys.byteorder != "little" or not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("<"))
    contiguous = np.ascontiguousarray(array)
    return [contiguous.reshape(-1).view(np.uint8).data]


def raw_size(array: Array) -> int:
    """How many bytes `array` takes in raw form."""
    if array.dtype.hasobject or array.dtype.kind in "SU":
        return sum(4 + len(item) for item in _elements(array))
    return int(array.nbytes)


def serialize_bytes(array: Array) -> bytes:
    """A BYTES tensor in raw form: each element length-prefixed, row-major."""
    pieces: list[bytes] = []
    for item in _elements(array):
        pieces.append(_LENGTH.pack(len(item)))
        pieces.append(item)
    return b"".join(pieces)


def _elements(array: Array) -> list[bytes]:
    out = []
    for item in array.ravel(order="C").tolist():
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, str):
            out.append(item.encode())
        else:
            raise OipError.internal(
                f"BYTES tensors hold bytes or str elements, got {type(item).__name__}"
            )
    return out


def from_json(name: str, datatype: str, shape: Sequence[int], data: object) -> Array:
    """The tensor `name` given as a (flat or nested) list of values: JSON's `data`, or a
    gRPC request's typed `contents` (bytes for BYTES). Raises OipError on a type or size
    mismatch."""
    count = element_count(shape)
    if not isinstance(data, list):
        data = [data]
    dtype = numpy_dtype(datatype)
    try:
        if datatype == BYTES:
            flat = _json_bytes(name, data)
        elif datatype == "BOOL":
            flat = _json_bools(name, data)
        else:
            flat = _json_numbers(dtype, data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise OipError.invalid(
            f"unable to parse 'data' of input '{name}' as {datatype}: {exc}"
        ) from None
    if flat.size != count:
        raise OipError.invalid(
            f"unexpected number of elements {flat.size} in 'data' of input '{name}': "
            f"shape {list(shape)} needs {count}"
        )
    return flat.reshape(shape)


def _json_numbers(dtype: np.dtype[Any], data: list[Any]) -> Array:
    flat = np.asarray(data).reshape(-1)  # ragged nesting raises ValueError
    if flat.size == 0:
        return np.empty(0, dtype)
    if dtype.kind in "iu":
        if flat.dtype.kind not in "iu":  # floats, or integers numpy found no one type for
            flat = np.asarray(data, dtype=object).reshape(-1)
            if not all(type(v) is int for v in flat.tolist()):
                raise ValueError("expected JSON integers")
        info = np.iinfo(dtype)
        low, high = flat.min(), flat.max()
        if low < info.min or high > info.max:
            raise ValueError(f"values from {low} to {high} do not fit in {dtype}")
    elif flat.dtype.kind not in "iuf":
        raise ValueError("expected JSON numbers")
    return flat.astype(dtype)


def _json_bools(name: str, data: list[Any]) -> Array:
    flat = np.asarray(data, dtype=object).reshape(-1)
    if not all(type(v) is bool for v in flat.tolist()):
        raise ValueError(f"BOOL input '{name}' takes JSON true and false only")
    return flat.astype(np.bool_)


def _json_bytes(name: str, data: list[Any]) -> Array:
    flat = np.asarray(data, dtype=object).reshape(-1)
    out = np.empty(flat.size, dtype=object)
    for i, item in enumerate(flat.tolist()):
        if isinstance(item, str):
            out[i] = item.encode()
        elif isinstance(item, bytes):  # gRPC's bytes_contents
            out[i] = item
        else:
            raise ValueError(f"BYTES input '{name}' takes JSON strings, got {item!r:.40}")
    return out


def to_json(name: str, array: Array) -> list[Any]:
    """`array` as a flat JSON list. Raises OipError for BYTES that are not UTF-8."""
    flat = array.ravel(order="C")
    if array.dtype.hasobject or array.dtype.kind in "SU":
        try:
            return [item.decode() for item in _elements(flat)]
        except UnicodeDecodeError:
            raise OipError.invalid(
                f"output '{name}' holds bytes that are not UTF-8, which JSON cannot carry; "
                "ask for it as binary data"
            ) from None
    if datatype_of(array) in ("BF16", "FP16"):
        flat = flat.astype(np.float32)
    values: list[Any] = flat.tolist()
    return values
