"""Hypothesis strategies for hostile wire input: msgpack values, near-valid headers, frames.

"Near-valid" beats pure noise for a decoder that checks msgpack first: most random bytes die
in msgpack, while a header map with the right keys and one wrong value reaches every check
behind it. Each field draws either a plausible value or any msgpack value.
"""

from __future__ import annotations

from typing import Final, TypeVar

import msgpack
from hypothesis import strategies as st

from transport import DATATYPES
from transport._errors import ErrorCode
from transport._frame import FRAME, MAGIC, VERSION, FrameType

T = TypeVar("T")

INT64_MIN: Final = -(1 << 63)
UINT64_MAX: Final = (1 << 64) - 1

# Integers msgpack can carry, weighted towards the edges where checks live.
edge_ints = st.sampled_from(
    [0, 1, -1, 2, 7, 255, 256, 4095, 4096, 65535, 65536, 1 << 20, (1 << 31) - 1, 1 << 31,
     (1 << 32) - 1, 1 << 32, (1 << 63) - 1, INT64_MIN, UINT64_MAX]
)  # fmt: skip
msgpack_ints = edge_ints | st.integers(INT64_MIN, UINT64_MAX) | st.integers(-3, 70)
msgpack_scalars = (
    st.none()
    | st.booleans()
    | msgpack_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.binary(max_size=24)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


def rarely(
    usual: st.SearchStrategy[T], rare: st.SearchStrategy[T], odds: int
) -> st.SearchStrategy[T]:
    """`usual`, or about one time in `odds` `rare` (st.one_of merges repeated branches, so
    repeating `usual` would not weigh it)."""

    @st.composite
    def pick(draw: st.DrawFn) -> T:
        return draw(rare if draw(st.integers(0, odds - 1)) == 1 else usual)

    return pick()


def either(plausible: st.SearchStrategy[object], odds: int = 6) -> st.SearchStrategy[object]:
    """A plausible value, or about one time in `odds` anything msgpack can carry."""
    return rarely(plausible, msgpack_values, odds)


datatypes = st.sampled_from([*DATATYPES, "INT128", "bf16", "", "FP8"]) | st.text(max_size=6)
shapes = st.lists(st.integers(-2, 6) | edge_ints, max_size=5)
tensor_data = st.binary(max_size=64) | st.lists(st.binary(max_size=8), max_size=6) | msgpack_ints


def _tensor_entry() -> st.SearchStrategy[object]:
    entry = st.tuples(
        either(st.text(max_size=6)),
        either(datatypes),
        either(shapes),
        either(st.sampled_from(["C", "F", "A", ""])),
        either(st.integers(-1, 3)),
        either(tensor_data),
    ).map(list)
    # A few entries of the wrong arity, the rest right.
    return st.one_of(entry, entry, entry, st.lists(msgpack_values, max_size=7))


tensor_entries = st.lists(_tensor_entry(), max_size=5)
error_fields = st.tuples(
    either(st.sampled_from([c.value for c in ErrorCode] + ["nope"])),
    either(st.text(max_size=20)),
    either(st.none() | st.text(max_size=10)),
).map(list)
shm_refs = st.tuples(
    either(st.text(max_size=30)),
    msgpack_ints,
    msgpack_ints,
    msgpack_ints,
    msgpack_ints,
    msgpack_ints,
).map(list)

kinds = st.sampled_from([1, 2, 3, 4, 5, 6])
header_maps = st.fixed_dictionaries(
    {"k": either(kinds, odds=10)},
    optional={
        "s": either(st.text(max_size=10)),
        "m": either(st.sampled_from(["infer", ""])),
        "t": either(st.floats(0, 100) | st.floats() | st.integers(-1, 10)),
        "tp": either(st.text(max_size=60)),
        "bl": either(st.integers(0, 3000) | edge_ints),
        "x": either(tensor_entries),
        "e": either(error_fields),
        "p": either(st.dictionaries(st.text(max_size=6), msgpack_scalars, max_size=4)),
        "br": either(shm_refs),
        "zz": msgpack_values,  # unknown keys are ignored
    },
)


def pack(value: object) -> bytes:
    """msgpack bytes of `value`, as peers write them."""
    return msgpack.packb(value, use_bin_type=True)


def frame(
    ftype: int, stream: int, payload: bytes, length: int | None = None, flags: int = 0
) -> bytes:
    """A frame whose length field says `length` (default: the truth)."""
    size = len(payload) if length is None else length
    return FRAME.pack(MAGIC, ftype, flags, size, stream) + payload


def hello(**fields: object) -> bytes:
    """A well-formed HELLO frame."""
    return frame(FrameType.HELLO, 0, pack({"v": VERSION, **fields}))


frame_types = rarely(st.sampled_from([int(t) for t in FrameType]), st.integers(0, 255), 6)
stream_ids = st.sampled_from([0, 1, 2, 3, 5, UINT64_MAX]) | st.integers(0, UINT64_MAX)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """One frame, mostly of a real type with a payload that fits it, its length sometimes lying."""
    ftype = draw(frame_types)
    stream = draw(stream_ids)
    if ftype == FrameType.HEAD:
        payload = pack(draw(header_maps))
    elif ftype == FrameType.HELLO:
        payload = pack(draw(either(st.dictionaries(st.text(max_size=4), msgpack_values))))
    elif ftype == FrameType.GOAWAY:
        payload = pack(draw(either(error_fields.map(lambda e: e[:2]))))
    elif ftype == FrameType.SHM:
        release = st.lists(either(shm_refs), max_size=3)
        fields = st.fixed_dictionaries({}, optional={"ack": msgpack_values, "release": release})
        payload = pack(draw(either(fields)))
    else:
        payload = draw(st.binary(max_size=300))
    length = draw(rarely(st.none(), st.integers(0, len(payload) + 40) | edge_ints, 4))
    if length is not None:
        length = min(max(length, 0), 0xFFFFFFFF)
    flags = draw(rarely(st.just(0), st.integers(0, 255), 10))
    return frame(ftype, stream, payload, length, flags)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A HEAD whose `bl` announces a body, then DATA frames that carry it (or lie about it)."""
    body = draw(st.binary(max_size=600))
    header = draw(header_maps)
    header["bl"] = draw(either(st.just(len(body)) | st.integers(0, 700), odds=4))
    header["k"] = draw(either(st.sampled_from([1, 2, 3]), odds=8))
    stream = draw(st.sampled_from([1, 3, 5]) | stream_ids)
    chunk = draw(st.integers(1, 700))
    out = frame(FrameType.HEAD, stream, pack(header))
    for at in range(0, len(body), chunk):
        out += frame(FrameType.DATA, draw(st.just(stream) | stream_ids), body[at : at + chunk])
    return out


@st.composite
def link_streams(draw: st.DrawFn) -> bytes:
    """What a hostile peer sends: usually a HELLO first, then frames, maybe trailing noise."""
    first = draw(rarely(st.just(hello()), frames(), 5))
    body = b"".join(draw(st.lists(rarely(messages(), frames(), 3), max_size=6)))
    tail = draw(rarely(st.just(b""), st.binary(max_size=40), 4))
    return first + body + tail
