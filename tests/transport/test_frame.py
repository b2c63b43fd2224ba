"""The frame decoder: any split of a valid stream decodes the same; bad input is a FrameError."""

from __future__ import annotations

import contextlib
import gc
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport import (
    BufferPool,
    FrameDecoder,
    FrameError,
    Kind,
    LimitExceeded,
    Limits,
    Message,
    decode_tensors,
)
from transport._errors import ErrorCode
from transport._frame import FRAME, MAGIC, FrameType, GoAway, Hello, frame_header, goaway_frame

from .helpers import feed, link_bytes, message_bytes

SMALL_CHUNKS = Limits(chunk_size=1000, inline_threshold=100)


def decode_all(data: bytes, cuts: list[int], limits: Limits = SMALL_CHUNKS) -> list[Message]:
    decoder = FrameDecoder(limits, BufferPool())
    events = feed(decoder, data, cuts)
    decoder.eof()
    assert isinstance(events[0], Hello)
    assert all(isinstance(e, Message) for e in events[1:])
    return [e for e in events[1:] if isinstance(e, Message)]


def interleave(a: bytes, b: bytes) -> bytes:
    """Frames of two messages alternating, as two senders on one link produce them."""

    def frames(data: bytes) -> list[bytes]:
        out, at = [], 0
        while at < len(data):
            length = FRAME.unpack_from(data, at)[3]
            out.append(data[at : at + FRAME.size + length])
            at += FRAME.size + length
        return out

    fa, fb = frames(a), frames(b)
    mixed = [f for pair in zip(fa, fb, strict=False) for f in pair]
    rest = fa[len(fb) :] if len(fa) > len(fb) else fb[len(fa) :]
    return b"".join(mixed + rest)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 60_000), max_size=30), st.integers(0, 3000), st.integers(0, 3000))
def test_any_split_of_interleaved_messages_decodes_the_same(
    cuts: list[int], n1: int, n2: int
) -> None:
    x = np.arange(n1, dtype=np.int32)
    y = np.arange(n2, dtype=np.float64)
    data = link_bytes(
        [
            interleave(
                message_bytes(1, {"x": x}, SMALL_CHUNKS), message_bytes(3, {"y": y}, SMALL_CHUNKS)
            )
        ]
    )
    messages = {m.stream: m for m in decode_all(data, cuts)}
    got_x = decode_tensors(messages[1].header.tensors, messages[1].body_view(), SMALL_CHUNKS)
    got_y = decode_tensors(messages[3].header.tensors, messages[3].body_view(), SMALL_CHUNKS)
    np.testing.assert_array_equal(got_x["x"], x)
    np.testing.assert_array_equal(got_y["y"], y)


def test_byte_by_byte_feeding_decodes_a_large_message() -> None:
    x = np.arange(5000, dtype=np.uint16)
    data = link_bytes([message_bytes(7, {"x": x}, SMALL_CHUNKS)])
    (message,) = decode_all(data, list(range(len(data))))
    np.testing.assert_array_equal(
        decode_tensors(message.header.tensors, message.body_view(), SMALL_CHUNKS)["x"],
        x,
    )


def test_large_payloads_land_directly_in_the_body_buffer() -> None:
    limits = Limits()
    x = np.arange(1 << 20, dtype=np.float32)
    data = link_bytes([message_bytes(1, {"x": x}, limits)])
    decoder = FrameDecoder(limits, BufferPool())
    direct = 0
    at = 0
    events = []
    while at < len(data):
        buf = decoder.get_buffer()
        if buf.nbytes > 300_000:  # larger than scratch's window: a body slice
            direct += min(buf.nbytes, len(data) - at)
        n = min(len(buf), len(data) - at)
        buf[:n] = data[at : at + n]
        at += n
        events.extend(decoder.buffer_updated(n))
    assert direct > 0.9 * x.nbytes
    assert isinstance(events[-1], Message)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
def test_garbage_after_hello_raises_only_frame_error(garbage: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(SMALL_CHUNKS, BufferPool())
    with contextlib.suppress(FrameError):
        feed(decoder, link_bytes([garbage]), cuts)
        decoder.eof()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupting_any_byte_of_a_valid_stream_raises_only_frame_error(data: st.DataObject) -> None:
    stream = bytearray(
        link_bytes([message_bytes(1, {"x": np.arange(600, dtype=np.int64)}, SMALL_CHUNKS)])
    )
    for _ in range(data.draw(st.integers(1, 4))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    pool = BufferPool()
    decoder = FrameDecoder(SMALL_CHUNKS, pool)

    def consume() -> None:  # its frame, and the events it holds, end before the check
        for event in feed(decoder, bytes(stream)):
            if isinstance(event, Message):
                decode_tensors(event.header.tensors, event.body_view(), SMALL_CHUNKS)
        decoder.eof()

    with contextlib.suppress(FrameError):
        consume()
    decoder.close()
    gc.collect()
    assert pool.stats().in_use == 0


def test_truncated_frame_raises_frame_error_at_eof() -> None:
    data = link_bytes([message_bytes(1, {"x": np.arange(10_000, dtype=np.int8)}, SMALL_CHUNKS)])
    for cut in (len(data) - 1, len(data) - 900, 25, 5):
        decoder = FrameDecoder(SMALL_CHUNKS, BufferPool())
        feed(decoder, data[:cut])
        with pytest.raises(FrameError, match="closed"):
            decoder.eof()


def test_first_frame_must_be_hello() -> None:
    decoder = FrameDecoder(SMALL_CHUNKS, BufferPool())
    with pytest.raises(FrameError, match="first frame"):
        feed(decoder, message_bytes(1, {}, SMALL_CHUNKS))


def test_wrong_magic_says_this_is_not_a_link() -> None:
    decoder = FrameDecoder(SMALL_CHUNKS, BufferPool())
    with pytest.raises(FrameError, match="not an arrowmesh link"):
        feed(decoder, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


def test_oversized_header_raises_limit_exceeded_naming_the_setting() -> None:
    limits = Limits(max_header_size=4096, inline_threshold=100)
    decoder = FrameDecoder(limits, BufferPool())
    with pytest.raises(LimitExceeded, match="max_header_size=4096"):
        feed(decoder, link_bytes([frame_header(FrameType.HEAD, 1, 70_000)]))


def test_body_over_max_message_size_raises_limit_exceeded() -> None:
    limits = Limits(max_message_size=1 << 20, inline_threshold=100)
    data = link_bytes(
        [message_bytes(1, {"x": np.zeros(1 << 19, np.int32)}, Limits(inline_threshold=100))]
    )
    with pytest.raises(LimitExceeded, match="max_message_size"):
        feed(FrameDecoder(limits, BufferPool()), data)


def test_data_frame_longer_than_its_body_raises_frame_error() -> None:
    data = bytearray(link_bytes([message_bytes(1, {"x": np.zeros(500, np.int32)}, SMALL_CHUNKS)]))
    hello_len = FRAME.size + FRAME.unpack_from(data, 0)[3]
    head_len = FRAME.size + FRAME.unpack_from(data, hello_len)[3]
    at = hello_len + head_len
    struct.pack_into("<I", data, at + 4, 10**9)  # a DATA frame that lies about its length
    with pytest.raises(FrameError, match="left"):
        feed(FrameDecoder(SMALL_CHUNKS, BufferPool()), bytes(data))


def test_data_for_an_unknown_stream_raises_frame_error() -> None:
    with pytest.raises(FrameError, match="no body in progress"):
        feed(
            FrameDecoder(SMALL_CHUNKS, BufferPool()),
            link_bytes([frame_header(FrameType.DATA, 9, 4) + b"abcd"]),
        )


def test_cancel_discards_a_partial_body_and_returns_its_buffer() -> None:
    pool = BufferPool()
    decoder = FrameDecoder(SMALL_CHUNKS, pool)
    whole = message_bytes(1, {"x": np.zeros(5000, np.int64)}, SMALL_CHUNKS)
    cancel = message_bytes(1, {}, SMALL_CHUNKS, kind=Kind.CANCEL)
    feed(decoder, link_bytes([whole[:3000]]))
    assert pool.stats().in_use == 1
    decoder.close()
    assert pool.stats().in_use == 0
    decoder = FrameDecoder(SMALL_CHUNKS, pool)
    first_frames = whole[: FRAME.size + FRAME.unpack_from(whole, 0)[3]]
    events = feed(decoder, link_bytes([first_frames, cancel]))
    assert [e.header.kind for e in events if isinstance(e, Message)] == [Kind.CANCEL]
    assert pool.stats().in_use == 0 and decoder.receiving == 0


def test_goaway_is_reported_with_its_reason() -> None:
    events = feed(
        FrameDecoder(SMALL_CHUNKS, BufferPool()),
        link_bytes([goaway_frame(ErrorCode.PROTOCOL_ERROR, "bye")]),
    )
    assert isinstance(events[1], GoAway)
    assert events[1].error.message == "bye"


def test_hello_from_another_version_is_refused() -> None:
    import msgpack

    payload = msgpack.packb({"v": 99})
    with pytest.raises(FrameError, match="version 99"):
        feed(
            FrameDecoder(SMALL_CHUNKS, BufferPool()),
            FRAME.pack(MAGIC, FrameType.HELLO, 0, len(payload), 0) + payload,
        )
