"""Frames on a stream link, and the sans-IO decoder that reassembles messages from them.

Every frame starts with 16 bytes, little-endian:

    magic "AM" (2) | type (1) | flags (1, zero) | payload length (u32) | stream id (u64)

HELLO (stream 0) opens each direction with a msgpack map {"v": version, ...}.
HEAD carries a message header (msgpack, at most `max_header_size`); its `bl` field says
how many body bytes follow in DATA frames of the same stream, in order, each at most
`chunk_size` when we send them. Frames of different streams interleave, so one large
tensor never holds up a small request. GOAWAY (stream 0) carries [code, message] and
precedes a close.

The decoder reads frame headers and small payloads into a scratch buffer, and lets the
bytes of a DATA frame land straight in the message's pooled body buffer (`get_buffer`
points there), so a large tensor is copied once, by the kernel. After such a direct read
it offers only a small window of scratch, so the next read does not pull the following
chunk through scratch as well.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import msgpack

from ._errors import ErrorCode, FrameError, LimitExceeded
from ._header import ErrorInfo, Header, Kind, check_header_size, unpack_header
from ._limits import KiB, Limits
from ._pool import BufferPool, RecvBuffer

MAGIC: Final = b"AM"
VERSION: Final = 1
FRAME = struct.Struct("<2sBBIQ")
FRAME_SIZE: Final = FRAME.size
_MAX_FRAME_PAYLOAD: Final = 0xFFFFFFFF
_SMALL_WINDOW: Final = 4 * KiB
_BODY_KINDS: Final = frozenset({Kind.REQUEST, Kind.RESPONSE, Kind.ERROR})


class FrameType(IntEnum):
    """What a frame carries."""

    HELLO = 1
    HEAD = 2
    DATA = 3
    GOAWAY = 4
    SHM = 5  # stream 0: shared-memory probe answers and lease releases


@dataclass(frozen=True, slots=True)
class Hello:
    """The peer opened its side of the link."""

    fields: dict[str, object]


@dataclass(frozen=True, slots=True)
class Message:
    """A whole received message: its header and, if it has one, its pooled body."""

    stream: int
    header: Header
    body: RecvBuffer | None
    shared: tuple[Any, ...] = ()  # uint8 views of SHM-placed tensors, in header order
    holder: object = None  # keeps those descriptors held until the message is dropped
    shared_body: Any = None  # uint8 view of an Arrow IPC body in shared memory

    def body_view(self) -> memoryview | None:
        """The body as a memoryview that keeps its buffer leased, or None without a body."""
        if self.shared_body is not None:
            return memoryview(self.shared_body)
        return None if self.body is None else self.body.memory()


@dataclass(frozen=True, slots=True)
class ShmControl:
    """The peer answers our shared-memory probe, or releases descriptors we sent it."""

    fields: dict[str, object]


@dataclass(frozen=True, slots=True)
class GoAway:
    """The peer is closing the link, and says why."""

    error: ErrorInfo


Event = Hello | Message | GoAway | ShmControl


def frame_header(ftype: FrameType, stream: int, length: int) -> bytes:
    """The 16 bytes that open a frame."""
    return FRAME.pack(MAGIC, ftype, 0, length, stream)


def hello_frame(**fields: object) -> bytes:
    """A HELLO frame announcing our protocol version and `fields`."""
    payload = msgpack.packb({"v": VERSION, **fields}, use_bin_type=True)
    return frame_header(FrameType.HELLO, 0, len(payload)) + payload


def shm_frame(**fields: object) -> bytes:
    """A SHM control frame (probe answer, releases)."""
    payload = msgpack.packb(fields, use_bin_type=True)
    return frame_header(FrameType.SHM, 0, len(payload)) + payload


def goaway_frame(code: ErrorCode, message: str) -> bytes:
    """A GOAWAY frame telling the peer why we close."""
    payload = msgpack.packb([code.value, message], use_bin_type=True)
    return frame_header(FrameType.GOAWAY, 0, len(payload)) + payload


def data_frames(
    stream: int, parts: Sequence[bytes | memoryview | object], chunk_size: int
) -> Iterator[list[bytes | memoryview]]:
    """The DATA frames of a body made of `parts`, each as a list of buffers to write in order."""
    chunk: list[bytes | memoryview] = []
    room = chunk_size
    for part in parts:
        view = memoryview(part).cast("B")  # type: ignore[arg-type]  # any buffer: bytes, pa.Buffer
        while view.nbytes:
            piece = view[:room]
            chunk.append(piece)
            room -= piece.nbytes
            view = view[piece.nbytes :]
            if room == 0:
                yield [frame_header(FrameType.DATA, stream, chunk_size), *chunk]
                chunk, room = [], chunk_size
    if chunk:
        yield [frame_header(FrameType.DATA, stream, chunk_size - room), *chunk]


class _Partial:
    __slots__ = ("body", "filled", "header", "view")

    def __init__(self, header: Header, body: RecvBuffer) -> None:
        self.header = header
        self.body = body
        self.view = body.writable
        self.filled = 0


class FrameDecoder:
    """Turns received bytes into events; raises FrameError (or LimitExceeded) on bad input.

    Use: write into `get_buffer()`, then call `buffer_updated(n)` for the events; at end of
    input call `eof()`. After an error the decoder is unusable: close the link.
    """

    def __init__(self, limits: Limits, pool: BufferPool) -> None:
        self._limits = limits
        self._pool = pool
        self._scratch = bytearray(max(256 * KiB, FRAME_SIZE + limits.max_header_size))
        self._mv = memoryview(self._scratch)
        self._start = 0
        self._end = 0
        self._window = len(self._scratch)
        self._direct: memoryview | None = None
        self._direct_stream = 0
        self._partials: dict[int, _Partial] = {}
        self._partial_bytes = 0
        self._hello = False

    @property
    def receiving(self) -> int:
        """Streams whose body is partly received."""
        return len(self._partials)

    def get_buffer(self) -> memoryview:
        """Where the next received bytes must be written."""
        if self._direct is not None:
            return self._direct
        return self._mv[self._end : self._end + self._window]

    def buffer_updated(self, nbytes: int) -> list[Event]:
        """Account for `nbytes` written into the last `get_buffer()`; return completed events."""
        events: list[Event] = []
        if self._direct is not None:
            self._direct_received(nbytes, events)
            return events
        self._end += nbytes
        self._window = len(self._scratch)
        self._parse(events)
        return events

    def eof(self) -> None:
        """The peer closed its side; raises FrameError if that cut a frame or a body short."""
        if self._direct is not None or self._end > self._start:
            pending = self._end - self._start
            raise FrameError(
                f"connection closed in the middle of a frame ({pending} bytes pending)"
            )
        if self._partials:
            stream, part = next(iter(self._partials.items()))
            raise FrameError(
                f"connection closed with the body of stream {stream} incomplete: "
                f"got {part.filled} of {part.header.body_len} bytes"
            )

    def discard(self, stream: int) -> None:
        """Forget the partly received body of `stream` (the peer cancelled it)."""
        part = self._partials.pop(stream, None)
        if part is not None:
            self._partial_bytes -= part.header.body_len

    def close(self) -> None:
        """Drop partly received bodies, returning their buffers."""
        self._partials.clear()
        self._partial_bytes = 0
        self._direct = None

    def _direct_received(self, nbytes: int, events: list[Event]) -> None:
        assert self._direct is not None
        part = self._partials[self._direct_stream]
        part.filled += nbytes
        self._direct = self._direct[nbytes:]
        if self._direct.nbytes == 0:
            self._direct = None
            self._window = _SMALL_WINDOW
            if part.filled == part.header.body_len:
                self._complete(self._direct_stream, events)

    def _parse(self, events: list[Event]) -> None:
        mv = self._mv
        while self._end - self._start >= FRAME_SIZE:
            magic, ftype, flags, length, stream = FRAME.unpack_from(mv, self._start)
            if magic != MAGIC or flags != 0:
                raise FrameError(
                    f"bad frame start {bytes(mv[self._start : self._start + 4])!r}: "
                    "this is not an arrowmesh link, or the stream is out of step"
                )
            if ftype == FrameType.DATA:
                if self._data(stream, length, events):
                    return
                continue
            check_header_size(length, self._limits)
            if self._end - self._start < FRAME_SIZE + length:
                break
            payload = mv[self._start + FRAME_SIZE : self._start + FRAME_SIZE + length]
            self._start += FRAME_SIZE + length
            self._control(ftype, stream, payload, events)
        self._compact()

    def _compact(self) -> None:
        if self._start == self._end:
            self._start = self._end = 0
        elif self._start:
            pending = self._end - self._start
            self._mv[:pending] = self._mv[self._start : self._end]
            self._start, self._end = 0, pending

    def _data(self, stream: int, length: int, events: list[Event]) -> bool:
        """Consume a DATA frame; True when the rest of its payload is to be read directly."""
        part = self._partials.get(stream)
        if part is None:
            raise FrameError(f"DATA frame for stream {stream}, which has no body in progress")
        remaining = part.header.body_len - part.filled
        if length == 0 or length > remaining:
            raise FrameError(
                f"DATA frame of {length} bytes for stream {stream}, "
                f"whose body has {remaining} bytes left"
            )
        at = self._start + FRAME_SIZE
        take = min(self._end - at, length)
        part.view[part.filled : part.filled + take] = self._mv[at : at + take]
        part.filled += take
        self._start = at + take
        if take < length:
            self._start = self._end = 0
            self._direct = part.view[part.filled : part.filled + length - take]
            self._direct_stream = stream
            return True
        if part.filled == part.header.body_len:
            self._complete(stream, events)
        return False

    def _complete(self, stream: int, events: list[Event]) -> None:
        part = self._partials.pop(stream)
        self._partial_bytes -= part.header.body_len
        events.append(Message(stream, part.header, part.body))

    def _control(self, ftype: int, stream: int, payload: memoryview, events: list[Event]) -> None:
        if not self._hello:
            if ftype != FrameType.HELLO:
                raise FrameError("the first frame on a link must be HELLO")
            self._hello = True
            events.append(Hello(_hello_fields(payload)))
        elif ftype == FrameType.HEAD:
            self._head(stream, unpack_header(payload, self._limits), events)
        elif ftype == FrameType.GOAWAY:
            events.append(GoAway(_goaway_error(payload)))
        elif ftype == FrameType.SHM:
            fields = _unpack(payload, "SHM")
            if not isinstance(fields, dict):
                raise FrameError("SHM payload must be a map")
            events.append(ShmControl(fields))
        else:
            raise FrameError(f"unexpected frame type {ftype} on stream {stream}")

    def _head(self, stream: int, header: Header, events: list[Event]) -> None:
        if stream == 0:
            raise FrameError("HEAD frame on stream 0, which is reserved for the link")
        if header.kind == Kind.CANCEL:
            self.discard(stream)
            events.append(Message(stream, header, None))
            return
        if stream in self._partials:
            raise FrameError(f"HEAD frame for stream {stream}, whose body is still arriving")
        if not header.body_len:
            events.append(Message(stream, header, None))
            return
        if header.kind not in _BODY_KINDS:
            raise FrameError(f"a {header.kind.name} message cannot carry a body")
        if self._partial_bytes + header.body_len > self._limits.max_message_size:
            raise LimitExceeded(
                f"bodies in progress on this link would reach "
                f"{self._partial_bytes + header.body_len} bytes, over max_message_size="
                f"{self._limits.max_message_size} (ARROWMESH_MAX_MESSAGE_SIZE)"
            )
        if len(self._partials) >= self._limits.max_concurrent_streams:
            raise LimitExceeded(
                f"{len(self._partials)} bodies in progress, at max_concurrent_streams="
                f"{self._limits.max_concurrent_streams} (ARROWMESH_MAX_CONCURRENT_STREAMS)"
            )
        self._partials[stream] = _Partial(header, self._pool.acquire(header.body_len))
        self._partial_bytes += header.body_len


def _unpack(payload: memoryview, what: str) -> object:
    try:
        return msgpack.unpackb(payload, raw=False, max_ext_len=0)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise FrameError(f"{what} payload is not valid msgpack: {exc}") from exc


def _hello_fields(payload: memoryview) -> dict[str, object]:
    fields = _unpack(payload, "HELLO")
    if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
        raise FrameError("HELLO payload must be a map with string keys")
    if fields.get("v") != VERSION:
        raise FrameError(f"peer speaks link version {fields.get('v')!r}, we speak {VERSION}")
    return fields


def _goaway_error(payload: memoryview) -> ErrorInfo:
    raw = _unpack(payload, "GOAWAY")
    if not isinstance(raw, list) or len(raw) != 2 or not all(isinstance(x, str) for x in raw):
        raise FrameError("GOAWAY payload must be [code, message]")
    codes = {c.value: c for c in ErrorCode}
    return ErrorInfo(codes.get(raw[0], ErrorCode.INTERNAL), raw[1])


def head_frame(stream: int, packed_header: bytes) -> list[bytes]:
    """A HEAD frame for an already packed header, as buffers to write in order."""
    if len(packed_header) > _MAX_FRAME_PAYLOAD:
        raise LimitExceeded(f"header of {len(packed_header)} bytes cannot be framed")
    return [frame_header(FrameType.HEAD, stream, len(packed_header)), packed_header]
