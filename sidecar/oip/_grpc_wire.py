"""Protobuf wire framing for the tensor bytes of OIP gRPC messages, without copying them.

The generated message classes copy every `bytes` field on parse and again on access, and
take only `bytes` to serialize: three copies of a 64 MiB tensor each way. So the tensor
fields are cut out of, and spliced into, the wire form here, and the generated classes see
only the small rest (names, shapes, parameters):

- `ModelInferRequest.raw_input_contents` is field 7; `split_raw` returns the message
  without it and each entry as a view on the received buffer.
- `ModelInferResponse.raw_output_contents` is field 6; `with_raw` appends the entries
  after the rest of the message as buffers to write in order. Protobuf allows fields in
  any order and merges a repeated field's entries wherever they appear.
- `ModelStreamInferResponse.infer_response` is field 2; `nested` frames a response as it.

Pure functions over bytes (no I/O); malformed input raises `WireError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

RAW_INPUT_CONTENTS: Final = 7
RAW_OUTPUT_CONTENTS: Final = 6
STREAM_INFER_RESPONSE: Final = 2
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def split_raw(data: bytes, field: int = RAW_INPUT_CONTENTS) -> tuple[bytes, list[memoryview]]:
    """`data` without the length-delimited `field`, and that field's entries as views on
    `data`, in order. Raises WireError."""
    view = memoryview(data)
    end = len(data)
    raws: list[memoryview] = []
    kept: list[memoryview] = []
    at = start = 0
    while at < end:
        field_start = at
        key, at = _varint(view, at)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {field_start}")
        if kind == _VARINT:
            _, at = _varint(view, at)
        elif kind == _FIXED64:
            at += 8
        elif kind == _FIXED32:
            at += 4
        elif kind == _LEN:
            length, first = _varint(view, at)
            at = first + length
            if number == field and at <= end:
                kept.append(view[start:field_start])
                raws.append(view[first:at])
                start = at
        else:
            raise WireError(f"unsupported wire type {kind} at byte {field_start}")
        if at > end:
            raise WireError(f"field {number} runs past the end of the {end}-byte message")
    if not raws:
        return data, raws
    kept.append(view[start:end])
    return b"".join(kept), raws


def with_raw(
    head: bytes, raws: Sequence[memoryview], field: int = RAW_OUTPUT_CONTENTS
) -> list[bytes | memoryview]:
    """The message whose other fields are `head`, followed by `raws` as entries of the
    length-delimited `field`: buffers to write in order."""
    parts: list[bytes | memoryview] = [head]
    tag = _key(field)
    for raw in raws:
        parts.append(tag + _encode_varint(raw.nbytes))
        parts.append(raw)
    return parts


def nested(
    parts: list[bytes | memoryview], field: int = STREAM_INFER_RESPONSE
) -> list[bytes | memoryview]:
    """`parts` (one message) framed as the length-delimited `field` of an outer message."""
    size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    return [_key(field) + _encode_varint(size), *parts]


def _key(field: int) -> bytes:
    return _encode_varint(field << 3 | _LEN)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint(view: memoryview, at: int) -> tuple[int, int]:
    """The varint at `at` and the offset after it. Raises WireError."""
    value = shift = 0
    end = len(view)
    while True:
        if at >= end:
            raise WireError(f"a varint runs past the end of the {end}-byte message")
        if shift > 63:
            raise WireError(f"a varint longer than 10 bytes ends at byte {at}")
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
