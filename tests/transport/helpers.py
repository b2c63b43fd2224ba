"""Byte streams of whole messages, and a feeder that splits them at chosen points."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transport import FrameDecoder, Header, Kind, Limits, encode_tensors, pack_header
from transport._frame import Event, data_frames, head_frame, hello_frame


def message_bytes(
    stream: int, tensors: Mapping[str, Any], limits: Limits, kind: Kind = Kind.REQUEST
) -> bytes:
    """One whole message (HEAD and DATA frames) as bytes."""
    metas, parts, body_len = encode_tensors(tensors, limits)
    header = Header(kind, "svc", "infer", body_len=body_len, tensors=metas)
    pieces: list[Any] = list(head_frame(stream, pack_header(header)))
    for frame in data_frames(stream, parts, limits.chunk_size):
        pieces.extend(frame)
    return b"".join(bytes(memoryview(p).cast("B")) for p in pieces)


def link_bytes(messages: Iterable[bytes]) -> bytes:
    """A HELLO followed by `messages`."""
    return hello_frame() + b"".join(messages)


def feed(decoder: FrameDecoder, data: bytes, cuts: Sequence[int] = ()) -> list[Event]:
    """Write `data` through get_buffer/buffer_updated, never more than up to the next cut."""
    events: list[Event] = []
    points = sorted({c for c in cuts if 0 < c < len(data)} | {len(data)})
    at = 0
    for stop in points:
        while at < stop:
            buf = decoder.get_buffer()
            n = min(len(buf), stop - at)
            assert n > 0, "decoder offered an empty buffer"
            buf[:n] = data[at : at + n]
            at += n
            events.extend(decoder.buffer_updated(n))
    return events
