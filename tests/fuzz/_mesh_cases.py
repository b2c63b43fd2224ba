"""Random-byte inputs for a mesh listener, and what its answer must look like.

A case is the whole byte stream one hostile (or, as a control, honest) downstream sends on
one connection. Kinds: pure noise; an honest session (a HELLO and requests, which must all
be answered); an honest session mutated (bytes flipped, inserted, cut; frames dropped,
duplicated, swapped; a frame's type, length or stream rewritten); a HELLO followed by
frames of random types and lying lengths; and, when the fuzzer shares the listener's
shared-memory directory, a session that negotiates shared memory with a real probe and
then sends requests whose tensors are descriptors, real or forged.

Generated with `random.Random` (seeded by the run's budget), not hypothesis: a listener
fuzzer wants many cheap inputs on live sockets, and a failure names its seed and case.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import numpy as np

from transport import (
    BufferPool,
    FrameDecoder,
    FrameError,
    Header,
    Kind,
    Limits,
    Placement,
    ShmDomain,
    TensorMeta,
    encode_tensors,
    pack_header,
    unpack_header,
)
from transport._frame import FRAME, MAGIC, FrameType, data_frames, head_frame

from ..transport.helpers import message_bytes
from ._strategies import UINT64_MAX, frame, hello

EDGES: Final = [0, 1, 2, 255, 4096, 65535, 1 << 20, (1 << 31) - 1, 1 << 31, 0xFFFFFFFF]


@dataclass(frozen=True, slots=True)
class MeshCase:
    """One connection's worth of input; `replies` streams an honest session must get back."""

    kind: str
    data: bytes
    replies: frozenset[int] = frozenset()


@dataclass
class ShmPeer:
    """The fuzzer's own place in the listener's shared-memory directory: real probes and
    real descriptors to send (and to forge from), all released by `release_all`."""

    domain: ShmDomain
    holder: str  # the name our placements are held for until release_all
    placed: list[list[Any]] = field(default_factory=list)
    probes: list[list[Any]] = field(default_factory=list)

    def probe(self) -> list[Any]:
        ref, _ = self.domain.probe()
        self.probes.append(ref)
        return ref

    def place(self, array: np.ndarray) -> list[Any] | None:
        ref = self.domain.place(array, self.holder)
        if ref is not None:
            self.placed.append(ref)
        return ref

    def release_all(self) -> None:
        self.domain.release(self.holder, self.placed)
        self.domain.release("probe", self.probes)
        self.placed.clear()
        self.probes.clear()


TENSORS: Final[list[dict[str, object]]] = [
    {"x": np.arange(5, dtype=np.int32)},
    {"x": np.arange(300, dtype=np.float32), "b": np.array([b"ab", b"c"], dtype=object)},
    {},
]


def _random_msgpack(rng: random.Random, depth: int = 0) -> object:
    pick = rng.randrange(9 if depth < 2 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([*EDGES, -1, -(1 << 63), UINT64_MAX, rng.randrange(-9, 99)])
    if pick == 3:
        return rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e300, rng.random()])
    if pick == 4:
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(8)))
    if pick == 5:
        return rng.randbytes(rng.randrange(12))
    if pick in (6, 7):
        return [_random_msgpack(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {
        rng.choice("ksmtblxepr"): _random_msgpack(rng, depth + 1) for _ in range(rng.randrange(5))
    }


def _random_header(rng: random.Random) -> dict[str, object]:
    header: dict[str, object] = {"k": rng.choice([1, 1, 1, 2, 3, 4, 5, 6, 0, 9])}
    for key in rng.sample(["s", "m", "t", "tp", "bl", "x", "e", "p", "br"], rng.randrange(5)):
        header[key] = _random_msgpack(rng)
    if rng.random() < 0.5:
        header["bl"] = rng.choice([rng.randrange(0, 3000), *EDGES])
    return header


class MeshCases:
    """An endless supply of cases for one listener (see the module docstring)."""

    def __init__(
        self, rng: random.Random, limits: Limits, service: str, shm: ShmPeer | None = None
    ):
        self.rng = rng
        self.limits = limits
        self.service = service
        self.shm = shm
        self._kinds: list[tuple[str, Callable[[], MeshCase]]] = [
            ("noise", self._noise),
            ("honest", self._honest),
            ("mutated", self._mutated),
            ("mutated", self._mutated),
            ("frames", self._frames),
            ("frames", self._frames),
        ]
        if shm is not None:
            self._kinds += [("shm", self._shm), ("shm", self._shm)]

    def next(self) -> MeshCase:
        return self.rng.choice(self._kinds)[1]()

    # kinds

    def _noise(self) -> MeshCase:
        start = self.rng.choice([b"", b"AM", hello()])
        return MeshCase("noise", start + self.rng.randbytes(self.rng.randrange(1, 400)))

    def _request(self, stream: int) -> bytes:
        metas, parts, body_len = encode_tensors(self.rng.choice(TENSORS), self.limits)
        header = Header(Kind.REQUEST, self.service, "infer", body_len=body_len, tensors=metas)
        out = b"".join(head_frame(stream, pack_header(header)))
        for frame_parts in data_frames(stream, parts, self.limits.chunk_size):
            out += b"".join(bytes(memoryview(p).cast("B")) for p in frame_parts)
        return out

    def _session(self) -> tuple[bytes, list[int]]:
        streams = [2 * i + 1 for i in range(self.rng.randrange(1, 4))]
        ping = message_bytes(99, {}, self.limits, kind=Kind.PING)
        return hello() + b"".join(self._request(s) for s in streams) + ping, [*streams, 99]

    def _honest(self) -> MeshCase:
        data, streams = self._session()
        return MeshCase("honest", data, frozenset(streams))

    def _mutated(self) -> MeshCase:
        data = bytearray(self._session()[0])
        for _ in range(self.rng.randrange(1, 4)):
            if not data:
                break  # cut to nothing: sent as it is
            data = self.rng.choice(
                [self._flip, self._splice, self._cut, self._reframe, self._patch]
            )(data)
        return MeshCase("mutated", bytes(data))

    def _frames(self) -> MeshCase:
        out = hello() if self.rng.random() < 0.9 else b""
        for _ in range(self.rng.randrange(1, 8)):
            ftype = self.rng.choice([*FrameType, *FrameType, 0, 6, 255])
            stream = self.rng.choice([0, 1, 1, 3, UINT64_MAX, self.rng.randrange(1 << 64)])
            if ftype == FrameType.HEAD:
                payload = msgpack.packb(_random_header(self.rng), use_bin_type=True)
            elif ftype == FrameType.DATA:
                payload = self.rng.randbytes(self.rng.randrange(0, 600))
            else:
                payload = msgpack.packb(_random_msgpack(self.rng), use_bin_type=True)
            length = None if self.rng.random() < 0.8 else self.rng.choice(EDGES)
            out += frame(int(ftype), stream, payload, length)
        return MeshCase("frames", out)

    def _shm(self) -> MeshCase:
        assert self.shm is not None
        shm = self.shm
        probe = shm.probe()
        if self.rng.random() < 0.2:
            probe = self._forge(probe)
        info: dict[str, object] = {
            "domain": shm.domain.token,
            "proc": shm.domain.proc,
            "probe": probe,
        }
        if self.rng.random() < 0.1:
            info[self.rng.choice(list(info))] = _random_msgpack(self.rng)
        out = hello(shm=info)
        streams = []
        for stream in range(1, 2 * self.rng.randrange(1, 4), 2):
            array = np.arange(self.rng.choice([16, 1000, 5000]), dtype=np.int64)
            ref = shm.place(array)
            if ref is None:
                continue
            honest = self.rng.random() < 0.5
            meta = TensorMeta(
                "x", "INT64", array.shape, "C", Placement.SHM, ref if honest else self._forge(ref)
            )
            header = Header(Kind.REQUEST, self.service, "infer", tensors=(meta,))
            out += frame(FrameType.HEAD, stream, pack_header(header))
            streams.append(stream)
        if self.rng.random() < 0.3:
            # Releases naming descriptors, real or not. Entries stay hashable: the unhashable
            # ones are a known finding (test_shm_descriptors.py) pinned on its own.
            release = [self._forge(r, hashable=True) for r in shm.placed[-2:]]
            out += frame(FrameType.SHM, 0, msgpack.packb({"release": release}, use_bin_type=True))
        return MeshCase("shm", out)

    # mutations and forgeries

    def _forge(self, ref: list[Any], hashable: bool = False) -> list[Any]:
        forged = list(ref)
        at = self.rng.randrange(6)
        if at == 0:
            forged[0] = self.rng.choice(
                [ref[0].upper(), "0123456789abcdef-0.arena", "../domain", ""]
            )
        else:
            choices: list[object] = [
                ref[at] + self.rng.randrange(-9, 10),
                self.rng.choice(EDGES),
                -1,
            ]
            if not hashable:
                choices.append(_random_msgpack(self.rng))
            forged[at] = self.rng.choice(choices)
        return forged

    def _flip(self, data: bytearray) -> bytearray:
        for _ in range(self.rng.randrange(1, 6)):
            data[self.rng.randrange(len(data))] = self.rng.randrange(256)
        return data

    def _splice(self, data: bytearray) -> bytearray:
        at = self.rng.randrange(len(data) + 1)
        return data[:at] + self.rng.randbytes(self.rng.randrange(1, 40)) + data[at:]

    def _cut(self, data: bytearray) -> bytearray:
        at = self.rng.randrange(len(data))
        return (
            data[:at] + data[at + self.rng.randrange(1, 64) :]
            if self.rng.random() < 0.5
            else data[:at]
        )

    def _reframe(self, data: bytearray) -> bytearray:
        frames = split_frames(bytes(data))
        if len(frames) < 2:
            return data
        i, j = self.rng.randrange(len(frames)), self.rng.randrange(len(frames))
        op = self.rng.randrange(3)
        if op == 0:
            del frames[i]
        elif op == 1:
            frames.insert(j, frames[i])
        else:
            frames[i], frames[j] = frames[j], frames[i]
        return bytearray(b"".join(frames))

    def _patch(self, data: bytearray) -> bytearray:
        starts = frame_starts(bytes(data))
        if not starts:
            return data
        at = self.rng.choice(starts)
        magic, ftype, flags, length, stream = FRAME.unpack_from(data, at)
        which = self.rng.randrange(3)
        if which == 0:
            ftype = self.rng.randrange(256)
        elif which == 1:
            length = self.rng.choice([*EDGES, max(length - 1, 0), min(length + 1, 0xFFFFFFFF)])
        else:
            stream = self.rng.choice([0, (stream + 2) & UINT64_MAX, UINT64_MAX])
        FRAME.pack_into(data, at, magic, ftype, flags, length, stream)
        return data


def frame_starts(data: bytes) -> list[int]:
    """Where whole frames start in `data`, as far as they parse."""
    starts, at = [], 0
    while at + FRAME.size <= len(data):
        starts.append(at)
        at += FRAME.size + FRAME.unpack_from(data, at)[3]
    return starts


def split_frames(data: bytes) -> list[bytes]:
    """`data` cut into frames (the last one may be partial)."""
    starts = frame_starts(data) or [0]
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


def decoder_refuses(data: bytes, limits: Limits) -> bool:
    """True if a FrameDecoder with `limits` raises FrameError on `data` followed by EOF."""
    decoder = FrameDecoder(limits, BufferPool())
    try:
        view, at = memoryview(data), 0
        while at < len(data):
            buf = decoder.get_buffer()
            n = min(len(buf), len(data) - at)
            buf[:n] = view[at : at + n]
            at += n
            decoder.buffer_updated(n)
        decoder.eof()
    except FrameError:
        return True
    finally:
        decoder.close()
    return False


@dataclass(frozen=True, slots=True)
class MeshAnswer:
    """What a mesh listener sent back: its frames, parsed and checked."""

    problems: list[str]
    goaway: bool
    replied: frozenset[int]  # streams answered (a response, an error or a pong)
    responses: frozenset[int]  # streams answered with a response


def read_answer(answer: bytes, complete: bool) -> MeshAnswer:
    """Check a mesh listener's answer: a HELLO first (or a GOAWAY: the listener answers the
    peer's HELLO, so input it refuses before one is read gets no HELLO), then well-formed
    frames only.

    `complete` is False when the connection was reset (its tail may be missing).
    """
    problems: list[str] = []
    goaway, replied, responses, at, first = False, set(), set(), 0, True
    limits = Limits()
    while at < len(answer):
        if len(answer) - at < FRAME.size:
            if complete:
                problems.append(f"answer ends in a partial frame header at byte {at}")
            break
        magic, ftype, flags, length, stream = FRAME.unpack_from(answer, at)
        payload = answer[at + FRAME.size : at + FRAME.size + length]
        if magic != MAGIC or flags != 0 or ftype not in set(FrameType):
            problems.append(f"malformed frame header at byte {at}: {answer[at : at + 16]!r}")
            break
        if len(payload) < length:
            if complete:
                problems.append(f"answer ends inside a {FrameType(ftype).name} frame")
            break
        if first and ftype not in (FrameType.HELLO, FrameType.GOAWAY):
            problems.append(f"first frame is {FrameType(ftype).name}, not HELLO or GOAWAY")
        first = False
        try:
            if ftype == FrameType.HEAD:
                header = unpack_header(payload, limits)
                if header.kind in (Kind.RESPONSE, Kind.ERROR, Kind.PONG):
                    replied.add(stream)
                if header.kind is Kind.RESPONSE:
                    responses.add(stream)
            elif ftype != FrameType.DATA:
                value = msgpack.unpackb(payload, raw=False)
                if ftype == FrameType.GOAWAY:
                    goaway = True
                    assert isinstance(value, list) and len(value) == 2, value
        except Exception as exc:  # any failure to read our own listener's frame is a finding
            problems.append(f"unreadable {FrameType(ftype).name} frame: {exc!r}")
        at += FRAME.size + length
    return MeshAnswer(problems, goaway, frozenset(replied), frozenset(responses))


def is_http(data: bytes) -> bool:
    """True for input a sniffing listener hands to its HTTP side (not the mesh magic)."""
    return not MAGIC.startswith(data[: len(MAGIC)])
