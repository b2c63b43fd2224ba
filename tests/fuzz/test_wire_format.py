"""The wire format under hostile input: FrameDecoder and unpack_header raise only FrameError.

tests/transport/test_frame.py feeds garbage after a HELLO and overwrites a few bytes of one
message. Here: near-valid headers, frame sequences whose types, streams and lengths lie,
structural mutations of multi-message streams (frames dropped, duplicated, swapped, length
fields patched), and a differential check that any split of any input decodes the same.
Every run also checks what must never grow: bodies in progress stay within
`max_message_size` and `max_concurrent_streams`, and every pooled buffer comes back.
"""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport import (
    BufferPool,
    FrameDecoder,
    FrameError,
    Header,
    Kind,
    Limits,
    Message,
    decode_tensors,
    pack_header,
    unpack_header,
)
from transport._frame import FRAME, Event, FrameType, GoAway, Hello, ShmControl

from ..transport.helpers import feed, link_bytes, message_bytes
from . import _budget
from ._budget import event
from ._mesh_cases import frame_starts, split_frames
from ._strategies import edge_ints, frame, header_maps, hello, link_streams, pack, stream_ids

pytestmark = pytest.mark.timeout(_budget.timeout())

LIMITS = Limits(
    max_message_size=1 << 20,
    max_header_size=4096,
    max_tensors=8,
    max_rank=6,
    inline_threshold=100,
    chunk_size=512,
    max_concurrent_streams=4,
)


def _check_header(header: Header) -> None:
    """What a decoded header promises to the code that reads it."""
    assert isinstance(header.kind, Kind)
    assert isinstance(header.service, str) and isinstance(header.method, str)
    assert header.timeout is None or (math.isfinite(header.timeout) and 0 <= header.timeout < 1e9)
    assert type(header.body_len) is int and 0 <= header.body_len <= LIMITS.max_message_size
    assert len(header.tensors) <= LIMITS.max_tensors
    for meta in header.tensors:
        assert isinstance(meta.name, str) and isinstance(meta.datatype, str)
        assert len(meta.shape) <= LIMITS.max_rank and all(d >= 0 for d in meta.shape)
        assert meta.order in ("C", "F")
    assert isinstance(header.params, dict)
    assert header.body_ref is None or (isinstance(header.body_ref, list) and not header.body_len)


@_budget.fuzz(examples=150)
@given(header_maps)
def test_near_valid_headers_decode_to_checked_headers_or_raise_frame_error(raw: object) -> None:
    try:
        header = unpack_header(pack(raw), LIMITS)
    except FrameError as exc:
        event(f"refused: {str(exc)[:20]}")
        return
    event("accepted")
    _check_header(header)
    # A decoded header packs to bytes that decode to the same header (bytes compare NaN too).
    again = pack_header(header)
    assert pack_header(unpack_header(again, LIMITS)) == again


def _summary(item: Event) -> tuple[object, ...]:
    """A comparable digest of one event (the body's bytes, not its buffer)."""
    if isinstance(item, Message):
        body = item.body_view()
        return (
            "message",
            item.stream,
            pack_header(item.header),
            None if body is None else bytes(body),
        )
    if isinstance(item, Hello):
        return ("hello", pack(item.fields))
    if isinstance(item, GoAway):
        return ("goaway", item.error.code, item.error.message)
    assert isinstance(item, ShmControl)
    return ("shm", pack(item.fields))


def _decode(data: bytes, cuts: list[int], pool: BufferPool) -> tuple[list[tuple[object, ...]], str]:
    """Feed `data` split at `cuts`, then EOF: event digests and the error ('' for none)."""
    decoder = FrameDecoder(LIMITS, pool)
    digests: list[tuple[object, ...]] = []
    points = sorted({c for c in cuts if 0 < c < len(data)} | {len(data)})
    at = 0
    try:
        for stop in points:
            while at < stop:
                buf = decoder.get_buffer()
                n = min(len(buf), stop - at)
                assert n > 0, "decoder offered an empty buffer"
                buf[:n] = data[at : at + n]
                at += n
                digests.extend(_summary(e) for e in decoder.buffer_updated(n))
                # Bodies in progress never grow past the limits, whatever the frames claim.
                assert decoder._partial_bytes <= LIMITS.max_message_size
                assert decoder.receiving <= LIMITS.max_concurrent_streams
        decoder.eof()
    except FrameError as exc:
        event(f"decoder: {str(exc)[:24]}")
        return digests, type(exc).__name__
    finally:
        decoder.close()
    return digests, ""


def _all_buffers_returned(pool: BufferPool) -> None:
    """Every buffer is back once nothing references it (by refcount: a cycle is collected
    first, so only a true leak fails; gc.collect per example would cost most of the run)."""
    if pool.stats().in_use:
        gc.collect()
    assert pool.stats().in_use == 0, pool.stats()


@_budget.fuzz(examples=120)
@given(link_streams(), st.lists(st.integers(0, 4000), max_size=12))
def test_hostile_frame_sequences_raise_only_frame_error_and_split_anywhere_the_same(
    data: bytes, cuts: list[int]
) -> None:
    pool = BufferPool()
    whole, whole_error = _decode(data, [], pool)
    split, split_error = _decode(data, cuts, pool)
    # Where the input is cut changes nothing: the same error, or the same events.
    assert whole_error == split_error
    if not whole_error:
        assert whole == split
    del whole, split
    _all_buffers_returned(pool)


TENSOR_SETS: list[dict[str, object]] = [
    {"x": np.arange(7, dtype=np.int32)},  # inline
    {"x": np.arange(700, dtype=np.float32), "y": np.ones((3, 4), dtype=np.uint8)},  # Arrow body
    {"s": np.array([b"ab", b"", b"xyz"], dtype=object), "b": np.array([True, False])},
    {"f": np.asfortranarray(np.arange(300, dtype=np.int16).reshape(15, 20))},
    {},
]


def _base_streams() -> list[bytes]:
    messages = [message_bytes(2 * i + 1, t, LIMITS) for i, t in enumerate(TENSOR_SETS)]
    cancel = message_bytes(3, {}, LIMITS, kind=Kind.CANCEL)
    ping = message_bytes(9, {}, LIMITS, kind=Kind.PING)
    return [
        link_bytes(messages),
        link_bytes([messages[1], cancel, ping]),
        link_bytes([messages[3], messages[2]]),
    ]


BASE_STREAMS = _base_streams()


Mutation = Callable[[st.DataObject, bytearray], bytearray]


def _overwrite(data: st.DataObject, buf: bytearray) -> bytearray:
    for _ in range(data.draw(st.integers(1, 8), label="bytes")):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    return buf


def _insert(data: st.DataObject, buf: bytearray) -> bytearray:
    at = data.draw(st.integers(0, len(buf)))
    return buf[:at] + data.draw(st.binary(min_size=1, max_size=40)) + buf[at:]


def _delete(data: st.DataObject, buf: bytearray) -> bytearray:
    at = data.draw(st.integers(0, len(buf) - 1))
    return buf[:at] + buf[at + data.draw(st.integers(1, 64)) :]


def _truncate(data: st.DataObject, buf: bytearray) -> bytearray:
    return buf[: data.draw(st.integers(0, len(buf) - 1))]


def _reframe(data: st.DataObject, buf: bytearray) -> bytearray:
    """Drop, duplicate or swap whole frames: every frame well-formed, the sequence not."""
    frames = split_frames(bytes(buf))
    i = data.draw(st.integers(0, len(frames) - 1))
    j = data.draw(st.integers(0, len(frames) - 1))
    op = data.draw(st.sampled_from(["drop", "duplicate", "swap"]))
    if op == "drop":
        del frames[i]
    elif op == "duplicate":
        frames.insert(j, frames[i])
    else:
        frames[i], frames[j] = frames[j], frames[i]
    return bytearray(b"".join(frames))


def _patch_field(data: st.DataObject, buf: bytearray) -> bytearray:
    """Rewrite the type, length or stream id of one frame header."""
    starts = frame_starts(bytes(buf))
    if not starts:
        return buf
    start = data.draw(st.sampled_from(starts))
    magic, ftype, flags, length, stream = FRAME.unpack_from(buf, start)
    field = data.draw(st.sampled_from(["type", "length", "stream"]))
    if field == "type":
        ftype = data.draw(st.integers(0, 255))
    elif field == "length":
        length = data.draw(
            st.integers(0, 0xFFFFFFFF) | edge_ints.filter(lambda v: 0 <= v <= 0xFFFFFFFF)
        )
    else:
        stream = data.draw(stream_ids)
    FRAME.pack_into(buf, start, magic, ftype, flags, length, stream)
    return buf


MUTATIONS: list[Mutation] = [_overwrite, _insert, _delete, _truncate, _reframe, _patch_field]


@_budget.fuzz(examples=150)
@given(st.data())
def test_mutated_valid_streams_raise_only_frame_error_and_return_every_buffer(
    data: st.DataObject,
) -> None:
    buf = bytearray(data.draw(st.sampled_from(BASE_STREAMS), label="base"))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if buf:
            buf = data.draw(st.sampled_from(MUTATIONS), label="mutation")(data, buf)
    cuts = data.draw(st.lists(st.integers(0, len(buf)), max_size=6), label="cuts")
    pool = BufferPool()
    decoder = FrameDecoder(LIMITS, pool)

    def consume() -> None:  # the events it holds end with its frame, before the check
        for got in feed(decoder, bytes(buf), cuts):
            if isinstance(got, Message):
                decode_tensors(got.header.tensors, got.body_view(), LIMITS)
        decoder.eof()

    with contextlib.suppress(FrameError):
        consume()
    decoder.close()
    _all_buffers_returned(pool)


def test_announcing_a_body_commits_no_memory_before_its_bytes_arrive() -> None:
    pool = BufferPool()
    decoder = FrameDecoder(Limits(), pool)
    # Found by fuzzing: the body's buffer was pre-faulted as soon as the HEAD announced it,
    # so 48 bytes committed the whole announced size. Now pages are committed as bytes come.
    announced = 512 << 20
    data = hello() + frame(FrameType.HEAD, 1, pack({"k": int(Kind.REQUEST), "bl": announced}))
    before = _rss()
    try:
        feed(decoder, data)
        assert _rss() - before <= 32 << 20, (before, _rss())
    finally:
        decoder.close()


def _rss() -> int:
    """This process's resident memory, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")
