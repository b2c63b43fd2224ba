"""Forged shared-memory descriptors: refused with FrameError, never read outside their lease.

Two domains in the per-test directory stand for two processes (tests/transport/test_shm.py
does the same). `a` places a tensor for `b`; the fuzzer forges descriptors from that live
one — arena names (a's, b's own, well-formed names of no process, paths, junk), slots,
generations, tokens, offsets and lengths (edges, off by a little, of the wrong type) — and
hands them to `b.adopt`, `b.read_probe` and a link's handshake. A descriptor is honoured
only if it matches the live lease and its range lies inside it; everything else is a
FrameError that holds and reads nothing. Leases all end when the test does.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport import FrameError, ShmDomain
from transport._handshake import ShmHandshake

from . import _budget
from ._budget import event
from ._strategies import edge_ints, msgpack_values, rarely

pytestmark = pytest.mark.timeout(_budget.timeout())

SLOT, GENERATION, TOKEN, OFFSET, NBYTES = 1, 2, 3, 4, 5


@pytest.fixture
def domains(shm_dir: Path) -> Iterator[tuple[ShmDomain, ShmDomain]]:
    a = ShmDomain(shm_dir, arena_size=1 << 20, slots=64, reap_interval=30.0)
    b = ShmDomain(shm_dir, arena_size=1 << 20, slots=64, reap_interval=30.0)
    yield a, b
    b.close()
    a.close()


def _names(a: ShmDomain, b: ShmDomain, real: str) -> st.SearchStrategy[object]:
    other_proc = "0123456789abcdef"
    return st.sampled_from(
        [real, f"{b.proc}-0.arena", f"{a.proc}-1.arena", f"{other_proc}-0.arena",
         f"{a.proc}.lock", "domain", "../" + real, f"{real}/", real.upper(), "", real + "\0"]
    ) | st.text(max_size=30)  # fmt: skip


def _forge(draw: st.DrawFn, value: int) -> object:
    """A field of a forged descriptor: kept, nudged, any integer, or the wrong type."""
    how = draw(st.sampled_from(["keep"] * 12 + ["nudge"] * 4 + ["edge", "edge", "any", "type"]))
    if how == "keep":
        return value
    if how == "nudge":
        return value + draw(st.integers(-9, 9))
    if how == "edge":
        return draw(edge_ints)
    if how == "any":
        return draw(st.integers())
    return draw(msgpack_values)


@st.composite
def forgeries(draw: st.DrawFn, a: ShmDomain, b: ShmDomain, real: list[object]) -> list[object]:
    ref: list[object] = [draw(rarely(st.just(real[0]), _names(a, b, str(real[0])), 3))]
    ref += [_forge(draw, int(v)) for v in real[1:]]  # type: ignore[call-overload]
    return draw(rarely(st.just(ref), st.lists(msgpack_values, max_size=7), 10))


def _honest(a: ShmDomain, ref: list[object]) -> bool:
    """True if `ref` names a live lease of `a` and lies inside it (what adopt may honour)."""
    key = (ref[0], ref[SLOT])
    if not (type(ref[SLOT]) is int and all(type(v) is int for v in ref[1:])):
        return False
    lease = a._leases.get(key)  # type: ignore[arg-type]
    if lease is None:
        return False
    g = lease.grant
    start, nbytes = ref[OFFSET], ref[NBYTES]
    assert isinstance(start, int) and isinstance(nbytes, int)
    return (
        (ref[GENERATION], ref[TOKEN]) == (g.generation, g.token)
        and nbytes >= 0
        and g.offset <= start
        and start + nbytes <= g.offset + g.length
    )


def test_forged_descriptors_are_refused_and_honest_ones_read_only_their_lease(
    domains: tuple[ShmDomain, ShmDomain],
) -> None:
    a, b = domains
    payload = np.arange(3000, dtype=np.int64)  # 24000 bytes: a 32 KiB block, room to nudge
    real = a.place(payload, b.proc)
    assert real is not None
    arena = a._own[real[0]]
    lease_bytes = arena.data[real[OFFSET] : real[OFFSET] + real[NBYTES]].copy()

    @_budget.fuzz(examples=200)
    @given(forgeries(a, b, real))
    def adopt(ref: list[object]) -> None:
        before = (a.stats().leases, b.stats().leases, b.stats().bytes_by_reference)
        try:
            holder, (view,) = b.adopt([ref], a.proc, lambda refs: None)
        except FrameError as exc:
            event(f"refused: {str(exc)[:30]}")
            assert (a.stats().leases, b.stats().leases, b.stats().bytes_by_reference) == before
            return
        event("honoured")
        assert _honest(a, ref), f"adopt honoured a descriptor outside any live lease: {ref!r}"
        start, nbytes = ref[OFFSET], ref[NBYTES]
        assert isinstance(start, int) and isinstance(nbytes, int)
        mapped = b._peers[real[0]]
        assert view.__array_interface__["data"][0] == mapped.address + start
        assert view.nbytes == nbytes and not view.flags.writeable
        rel = start - real[OFFSET]
        if rel >= 0 and rel + nbytes <= len(lease_bytes):
            assert bytes(view) == bytes(lease_bytes[rel : rel + nbytes])
        del holder, view

    adopt()
    a.release(b.proc, [real])
    gc.collect()
    assert a.stats().leases == 0 and b.stats().leases == 0


def test_forged_probe_descriptors_are_refused_or_read_inside_the_probe(
    domains: tuple[ShmDomain, ShmDomain],
) -> None:
    a, b = domains
    probe, nonce = a.probe()

    @_budget.fuzz(examples=150)
    @given(forgeries(a, b, probe))
    def read(ref: list[object]) -> None:
        try:
            got = b.read_probe(ref, a.proc)
        except FrameError:
            return
        assert _honest(a, ref), f"read_probe read outside any live lease: {ref!r}"
        assert len(got) == ref[NBYTES]
        if ref[OFFSET] == probe[OFFSET]:  # past the nonce: the rest of its (zeroed) block
            assert got[: len(nonce)] == nonce[: len(got)]

    read()
    a.release("probe", [probe])
    assert a.stats().leases == 0


release_entries = st.lists(
    rarely(
        st.tuples(st.text(max_size=4), msgpack_values, msgpack_values, msgpack_values,
                  msgpack_values, msgpack_values).map(list),
        msgpack_values,
        4,
    ),
    max_size=4,
)  # fmt: skip
shm_fields = st.fixed_dictionaries(
    {}, optional={"ack": msgpack_values, "release": release_entries | msgpack_values}
)


def _negotiated(a: ShmDomain, b: ShmDomain) -> ShmHandshake:
    """`b`'s side of a link whose peer is `a` and proved it shares the directory."""
    shake = ShmHandshake(b, lambda refs: None)
    shake.hello()
    probe, _ = a.probe()
    answer = shake.on_peer_hello({"domain": b.token, "proc": a.proc, "probe": probe})
    assert answer is not None and answer["ack"] is not None
    a.release("probe", [probe])
    return shake


# Found by fuzzing: an unhashable slot in a release raised TypeError out of the link.
def test_release_entry_with_an_unhashable_slot_raises_only_frame_error(
    domains: tuple[ShmDomain, ShmDomain],
) -> None:
    a, b = domains
    shake = _negotiated(a, b)
    try:
        shake.on_control({"release": [["x", [], 0, 0, 0, 0]]})
    except FrameError:
        pass
    finally:
        shake.settle()
        shake.close()


def test_hostile_shm_control_frames_raise_at_most_frame_error(
    domains: tuple[ShmDomain, ShmDomain],
) -> None:
    a, b = domains
    shake = _negotiated(a, b)
    mine = b.place(np.ones(100), a.proc)  # a lease of b's that a hostile release may name
    assert mine is not None

    @_budget.fuzz(examples=100)
    @given(shm_fields)
    def control(fields: dict[str, object]) -> None:
        try:
            shake.on_control(fields)
        except FrameError:
            pass
        except TypeError as exc:  # the finding above: recorded, not failed, so fuzzing goes on
            if "unhashable" not in str(exc):
                raise
            event(f"finding: {exc}")

    control()
    shake.settle()
    shake.close()
    b.release(a.proc, [mine])
    assert b.stats().leases == 0
