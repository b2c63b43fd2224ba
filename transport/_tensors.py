"""Tensors to and from a message: inline in the header when small, an Arrow IPC body when large.

Small messages (total tensor bytes <= `Limits.inline_threshold`) carry their bytes inline in
the msgpack header: between two processes an Arrow IPC write + read costs 40-50 us, several
times the payload (../shared/BASELINES.md). Larger messages carry an Arrow IPC stream: one
record batch of one row, one `large_list<T>` column per tensor. BOOL travels as uint8 and
BF16 as uint16 (Arrow has no byte-wide bool or bfloat16); the header's datatype restores
them. Encoding never copies a contiguous tensor: the IPC writer hands back references to the
numpy memory. Decoding returns read-only numpy views on the received body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ._dtypes import BYTES, datatype_of, numpy_dtype
from ._errors import FrameError, LimitExceeded
from ._header import Placement, TensorMeta
from ._limits import Limits

Array = npt.NDArray[np.generic]
Buffer = Any  # bytes, memoryview or pyarrow.Buffer (pyarrow has no type stubs)

# Arrow storage type of each fixed-width datatype.
_STORAGE: Final[dict[str, pa.DataType]] = {
    "BOOL": pa.uint8(),
    "INT8": pa.int8(),
    "INT16": pa.int16(),
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "FP16": pa.float16(),
    "FP32": pa.float32(),
    "FP64": pa.float64(),
    "BF16": pa.uint16(),
}


class _Sink:
    """A write-only file that keeps references to what the Arrow IPC writer hands it."""

    def __init__(self) -> None:
        self.parts: list[Buffer] = []
        self.size = 0
        self.closed = False

    def write(self, data: Buffer) -> int:
        n = memoryview(data).nbytes
        self.parts.append(data)
        self.size += n
        return n

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Placer(Protocol):
    """Puts bytes where a link's peer can read them in place (shared memory)."""

    @property
    def arrow_body(self) -> bool:
        """True: a large message goes as one Arrow IPC stream in place, not per tensor."""

    def tensor(self, array: Array) -> list[Any] | None:
        """A descriptor for `array` (by reference or copied in), or None if there is no room."""

    def body(self, parts: Sequence[Buffer], nbytes: int) -> list[Any] | None:
        """A descriptor for `parts` copied into one lease, or None if there is no room."""


def encode_tensors(
    tensors: Mapping[str, object], limits: Limits, place: Placer | None = None
) -> tuple[tuple[TensorMeta, ...], list[Buffer], int]:
    """As `encode_message`, without a body placed in shared memory."""
    metas, parts, body_len, _ = encode_message(tensors, limits, place)
    return metas, parts, body_len


def encode_message(
    tensors: Mapping[str, object], limits: Limits, place: Placer | None = None
) -> tuple[tuple[TensorMeta, ...], list[Buffer], int, list[Any] | None]:
    """Describe `tensors` for a header and lay out the body:
    (metas, body parts, body length, body descriptor).

    With `place` (a link that shares memory with its peer), fixed-width tensors of at least
    `inline_threshold` bytes travel as shared-memory descriptors (None from `place`: no
    room, they go in the body); with `place.arrow_body`, a large message's Arrow IPC body
    is written into one lease instead, and the body descriptor says where. Raises
    FrameError for a value that is not a tensor of an OIP datatype, LimitExceeded over a
    limit.
    """
    if place is not None and place.arrow_body:
        return _arrow_in_place(tensors, limits, place)
    if len(tensors) > limits.max_tensors:
        raise LimitExceeded(
            f"{len(tensors)} tensors, over max_tensors={limits.max_tensors} "
            "(ARROWMESH_MAX_TENSORS); send fewer tensors or raise it"
        )
    arrays = []
    total = 0
    shared: dict[str, TensorMeta] = {}
    for name, value in tensors.items():
        array = _prepare(name, value, limits)
        ref = _place(array, limits, place)
        if ref is not None:
            datatype = datatype_of(array)
            shape = tuple(array.shape)
            shared[name] = TensorMeta(name, datatype, shape, _order(array), Placement.SHM, ref)
            continue
        arrays.append((name, array))
        total += _payload_size(array)
    metas, parts, body_len = _encode_rest(arrays, total, limits)
    if shared:
        by_name = {m.name: m for m in metas} | shared
        metas = tuple(by_name[str(name)] for name in tensors)
    return metas, parts, body_len, None


def _arrow_in_place(
    tensors: Mapping[str, object], limits: Limits, place: Placer
) -> tuple[tuple[TensorMeta, ...], list[Buffer], int, list[Any] | None]:
    arrays = [(name, _prepare(name, value, limits)) for name, value in tensors.items()]
    total = sum(_payload_size(a) for _, a in arrays)
    metas, parts, body_len = _encode_rest(arrays, total, limits)
    if not body_len:
        return metas, parts, body_len, None
    ref = place.body(parts, body_len)
    return (metas, parts, body_len, None) if ref is None else (metas, [], 0, ref)


def _place(array: Array, limits: Limits, place: Placer | None) -> list[Any] | None:
    if place is None or array.nbytes < max(limits.inline_threshold, 1) or array.dtype.hasobject:
        return None
    return place.tensor(array)


def _encode_rest(
    arrays: list[tuple[str, Array]], total: int, limits: Limits
) -> tuple[tuple[TensorMeta, ...], list[Buffer], int]:
    if total <= limits.inline_threshold:
        return tuple(_inline(name, a) for name, a in arrays), [], 0
    if total > limits.max_message_size:
        raise LimitExceeded(
            f"tensors hold {total} bytes, over max_message_size={limits.max_message_size} "
            "(ARROWMESH_MAX_MESSAGE_SIZE); send smaller tensors or raise it"
        )
    return _arrow(arrays)


def _prepare(name: object, value: object, limits: Limits) -> Array:
    if type(name) is not str:
        raise FrameError(f"tensor names must be strings, got {name!r:.80}")
    array = value if type(value) is np.ndarray else np.asarray(value)
    if array.ndim > limits.max_rank:
        raise LimitExceeded(
            f"tensor {name!r} has rank {array.ndim}, over max_rank={limits.max_rank} "
            "(ARROWMESH_MAX_RANK); reshape it or raise the limit"
        )
    datatype_of(array)  # raises for dtypes the protocol cannot carry
    if array.dtype.kind in "OSU":
        return array
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)
    return array


def _payload_size(array: Array) -> int:
    if array.dtype.hasobject or array.dtype.kind in "SU":
        return sum(len(b) + 4 for b in _bytes_elements(array))
    return array.nbytes


def _order(array: Array) -> str:
    # A C-contiguous array (including 1-d and 0-d ones) is sent as is; F only when it isn't C.
    return "C" if array.flags.c_contiguous else "F"


def _flat(array: Array) -> Array:
    """A 1-d view in memory order, without copying."""
    return array.reshape(-1, order="A") if array.ndim else array.reshape(1)


def _bytes_elements(array: Array) -> list[bytes]:
    out = []
    for item in array.ravel(order="C").tolist():
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, str):
            out.append(item.encode())
        else:
            raise FrameError(f"BYTES tensors hold bytes or str elements, got {type(item).__name__}")
    return out


def _inline(name: str, array: Array) -> TensorMeta:
    datatype = datatype_of(array)
    shape = tuple(array.shape)
    if datatype == BYTES:
        return TensorMeta(name, BYTES, shape, "C", Placement.INLINE, _bytes_elements(array))
    # tobytes(order="A") copies in memory order: Fortran for F-contiguous arrays
    return TensorMeta(name, datatype, shape, _order(array), Placement.INLINE, array.tobytes("A"))


def _arrow(arrays: Sequence[tuple[str, Array]]) -> tuple[tuple[TensorMeta, ...], list[Buffer], int]:
    metas: list[TensorMeta] = []
    columns: list[pa.Array] = []
    for index, (name, array) in enumerate(arrays):
        datatype = datatype_of(array)
        order = "C"
        if datatype == BYTES:
            values = pa.array(_bytes_elements(array), type=pa.large_binary())
        else:
            order = _order(array)
            storage = _STORAGE[datatype]
            flat = _flat(array)
            values = pa.Array.from_buffers(
                storage, flat.size, [None, pa.py_buffer(flat.view(np.uint8))]
            )
        offsets = pa.py_buffer(np.array([0, len(values)], dtype=np.int64))
        columns.append(
            pa.Array.from_buffers(pa.large_list(values.type), 1, [None, offsets], children=[values])
        )
        metas.append(TensorMeta(name, datatype, tuple(array.shape), order, Placement.ARROW, index))
    batch = pa.RecordBatch.from_arrays(columns, names=[name for name, _ in arrays])
    sink = _Sink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), batch.schema) as writer:
        writer.write_batch(batch)
    return tuple(metas), sink.parts, sink.size


def decode_tensors(
    metas: Sequence[TensorMeta],
    body: memoryview | None,
    limits: Limits,
    shared: Sequence[Array] = (),
) -> dict[str, Array]:
    """Numpy arrays for the tensors of a message: read-only views on `body` where possible.

    `shared` holds, in order, a uint8 view for each SHM-placed tensor (the link validated
    and mapped them). Raises FrameError when the header and body disagree or the body is
    not valid Arrow IPC.
    """
    batch = None
    next_shared = iter(shared)
    out: dict[str, Array] = {}
    for meta in metas:
        if meta.name in out:
            raise FrameError(f"tensor name {meta.name!r} appears twice")
        if len(meta.shape) > limits.max_rank:
            raise LimitExceeded(
                f"tensor {meta.name!r} has rank {len(meta.shape)}, over max_rank={limits.max_rank}"
            )
        if meta.placement is Placement.INLINE:
            out[meta.name] = _from_inline(meta)  # views on `bytes`: read-only already
        elif meta.placement is Placement.SHM:
            out[meta.name] = _from_shared(meta, next(next_shared, None))
        else:
            batch = _read_batch(body) if batch is None else batch
            array = _from_column_checked(meta, batch)
            array.flags.writeable = False
            out[meta.name] = array
    return out


def _count(meta: TensorMeta) -> int:
    return math.prod(meta.shape)


def _from_inline(meta: TensorMeta) -> Array:
    if meta.datatype == BYTES:
        if not isinstance(meta.data, list) or not all(isinstance(b, bytes) for b in meta.data):
            raise FrameError(f"BYTES tensor {meta.name!r} must carry a list of byte strings")
        return _bytes_array(meta, meta.data)
    if not isinstance(meta.data, bytes):
        raise FrameError(f"inline tensor {meta.name!r} must carry bytes")
    dtype = numpy_dtype(meta.datatype)
    expected = _count(meta) * dtype.itemsize
    if len(meta.data) != expected:
        raise FrameError(
            f"tensor {meta.name!r} of shape {meta.shape} {meta.datatype} needs {expected} bytes, "
            f"got {len(meta.data)}"
        )
    return _shaped(np.frombuffer(meta.data, dtype=dtype), meta)


def _from_shared(meta: TensorMeta, view: Array | None) -> Array:
    if view is None:
        raise FrameError(f"tensor {meta.name!r} is in shared memory the link did not map")
    if meta.datatype == BYTES:
        raise FrameError(f"BYTES tensor {meta.name!r} cannot travel by reference")
    dtype = numpy_dtype(meta.datatype)
    expected = _count(meta) * dtype.itemsize
    if view.nbytes != expected:
        raise FrameError(
            f"tensor {meta.name!r} of shape {meta.shape} {meta.datatype} needs {expected} bytes, "
            f"its descriptor covers {view.nbytes}"
        )
    return _shaped(view.view(dtype), meta)


def _bytes_array(meta: TensorMeta, elements: Sequence[bytes]) -> Array:
    if len(elements) != _count(meta):
        raise FrameError(
            f"BYTES tensor {meta.name!r} of shape {meta.shape} needs {_count(meta)} elements, "
            f"got {len(elements)}"
        )
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    array.flags.writeable = False
    return _reshaped(array, meta.shape, meta)


def _shaped(flat: Array, meta: TensorMeta) -> Array:
    if meta.order == "F":
        return _reshaped(flat, meta.shape[::-1], meta).T
    return _reshaped(flat, meta.shape, meta)


def _reshaped(flat: Array, shape: Sequence[int], meta: TensorMeta) -> Array:
    # An empty tensor's other dimensions can still be too big for numpy (found by fuzzing).
    try:
        return flat.reshape(shape)
    except ValueError as exc:
        raise FrameError(f"tensor {meta.name!r} has a shape numpy cannot make: {exc}") from None


def _read_batch(body: memoryview | None) -> pa.RecordBatch:
    if body is None:
        raise FrameError("header places tensors in an Arrow body, but the message has no body")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(body))
        batch = reader.read_next_batch()
        batch.validate(full=True)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, StopIteration, ...
        raise FrameError(f"message body is not a valid Arrow IPC stream: {exc}") from exc
    if batch.num_rows != 1:
        raise FrameError(f"Arrow body must hold one row, got {batch.num_rows}")
    return batch


def _from_column_checked(meta: TensorMeta, batch: pa.RecordBatch) -> Array:
    try:
        return _from_column(meta, batch)
    except FrameError:
        raise
    except Exception as exc:  # pyarrow, on a body that validated but reads as nonsense
        raise FrameError(f"Arrow column of tensor {meta.name!r} is unreadable: {exc}") from exc


def _from_column(meta: TensorMeta, batch: pa.RecordBatch) -> Array:
    index = meta.data
    if not isinstance(index, int) or not 0 <= index < batch.num_columns:
        raise FrameError(f"tensor {meta.name!r} names Arrow column {index!r}, which is absent")
    column = batch.column(index)
    if not pa.types.is_large_list(column.type) or column.null_count:
        raise FrameError(f"Arrow column {index} must be a non-null large_list, got {column.type}")
    values = column.flatten()
    if meta.datatype == BYTES:
        if values.type != pa.large_binary() or values.null_count:
            raise FrameError(f"BYTES tensor {meta.name!r} must be large_binary, got {values.type}")
        return _bytes_array(meta, values.to_pylist())
    dtype = numpy_dtype(meta.datatype)
    if values.type != _STORAGE[meta.datatype] or values.null_count:
        raise FrameError(
            f"tensor {meta.name!r} is {meta.datatype}, but its column holds {values.type}"
        )
    if len(values) != _count(meta):
        raise FrameError(
            f"tensor {meta.name!r} of shape {meta.shape} needs {_count(meta)} elements, "
            f"its column holds {len(values)}"
        )
    data = values.buffers()[1]
    start = values.offset * dtype.itemsize
    flat = np.frombuffer(data, dtype=np.uint8, count=len(values) * dtype.itemsize, offset=start)
    return _shaped(flat.view(dtype), meta)
