"""The protocol-neutral core of sidecar.oip, in process: datatypes, requests, regions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sidecar.oip
from sidecar.oip import (
    DATATYPES,
    OipError,
    ShmRef,
    StatsBook,
    SystemShmRegistry,
    from_json,
    from_raw,
    infer_response,
    numpy_dtype,
    parse_infer_request,
    raw_parts,
    serialize_bytes,
    to_json,
)
from sidecar.oip._model import InferResponse, OutputTensor
from sidecar.oip._server import _staged
from transport import ShmDomain

pytestmark = pytest.mark.timeout(60)

FIXED = [d for d in DATATYPES if d != "BYTES"]


def test_all_matches_the_public_names() -> None:
    public = {
        name
        for name, value in vars(sidecar.oip).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(sidecar.oip.__all__) == public
    assert sidecar.oip.__all__ == sorted(sidecar.oip.__all__, key=lambda s: (not s.isupper(), s))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), datatype=st.sampled_from(FIXED))
def test_fixed_width_tensors_round_trip_raw_as_views(data: Any, datatype: str) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    dtype = numpy_dtype(datatype)
    raw = data.draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize,
                              max_size=int(np.prod(shape)) * dtype.itemsize))  # fmt: skip
    array = np.frombuffer(raw, dtype=np.uint8).copy()
    if datatype == "BOOL":
        array %= 2
    array = array.view(dtype).reshape(shape)
    (part,) = raw_parts(array)
    back = from_raw("x", datatype, shape, part)
    assert back.shape == array.shape and back.dtype == array.dtype
    assert back.tobytes() == array.tobytes()
    assert back.base is not None  # a view, not a copy


@settings(max_examples=60, deadline=None)
@given(items=st.lists(st.binary(max_size=40), max_size=8))
def test_bytes_tensors_round_trip_length_prefixed(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    raw = serialize_bytes(array)
    assert len(raw) == sum(4 + len(b) for b in items)
    assert from_raw("w", "BYTES", [len(items)], memoryview(raw)).tolist() == items


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=64), count=st.integers(0, 6))
def test_garbage_bytes_tensors_raise_only_oip_errors(garbage: bytes, count: int) -> None:
    with contextlib.suppress(OipError):
        from_raw("w", "BYTES", [count], memoryview(garbage))


def test_a_huge_shape_is_refused_before_anything_is_allocated() -> None:
    with pytest.raises(OipError, match="needs 1000000000000 elements"):
        from_raw("w", "BYTES", [10**6, 10**6], memoryview(b"\0" * 8))
    with pytest.raises(OipError, match="input byte size mismatch"):
        from_raw("x", "FP64", [10**6, 10**6], memoryview(b"\0" * 8))
    with pytest.raises(OipError, match="unexpected number of elements 1"):
        from_json("x", "INT32", [10**6, 10**6], [1])


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips_through_json(datatype: str) -> None:
    values: Any = {
        "BOOL": [True, False], "BYTES": ["a", "\u00e9"], "FP16": [0.5, -2.0],
        "FP32": [0.1, 3.5], "FP64": [1e300, -0.1], "BF16": [1.5, -3.0],
    }.get(datatype, [0, 7])  # fmt: skip
    array = from_json("x", datatype, [2], values)
    assert array.dtype == numpy_dtype(datatype)
    again = to_json("x", array)
    assert from_json("x", datatype, [2], json.loads(json.dumps(again))).tolist() == array.tolist()


def test_json_tensors_may_be_nested_row_major() -> None:
    array = from_json("x", "INT32", [2, 2], [[1, 2], [3, 4]])
    assert array.tolist() == [[1, 2], [3, 4]]


def test_a_bf16_input_may_come_as_json_numbers() -> None:
    body = {"inputs": [{"name": "h", "datatype": "BF16", "shape": [2], "data": [1.5, -2.0]}]}
    request = parse_infer_request("m", "", json.dumps(body).encode())
    data = request.inputs[0].data
    assert data is not None and data.dtype == ml_dtypes.bfloat16
    assert data.tolist() == [1.5, -2.0]


def test_binary_inputs_are_cut_from_the_body_in_order() -> None:
    a, b = np.arange(3, dtype=np.int16), np.array([True, False])
    body = {
        "id": "7",
        "parameters": {"binary_data_output": True, "custom": "x"},
        "inputs": [
            {"name": "a", "datatype": "INT16", "shape": [3],
             "parameters": {"binary_data_size": 6}},
            {"name": "j", "datatype": "UINT8", "shape": [1], "data": [9]},
            {"name": "b", "datatype": "BOOL", "shape": [2],
             "parameters": {"binary_data_size": 2}},
        ],
        "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
    }  # fmt: skip
    request = parse_infer_request(
        "m", "2", json.dumps(body).encode(), memoryview(a.tobytes() + b.tobytes())
    )
    assert request.id == "7" and request.model_version == "2" and request.binary_output
    got = {t.name: t.data for t in request.inputs}
    assert got["a"] is not None and got["a"].tolist() == [0, 1, 2]
    assert got["b"] is not None and got["b"].tolist() == [True, False]
    assert [(o.name, o.binary) for o in request.outputs] == [("a", False), ("b", None)]


def test_a_response_puts_binary_outputs_after_its_json() -> None:
    x = np.arange(4, dtype=np.float32)
    response = InferResponse("m", "1", "id-1", (
        OutputTensor("x", "FP32", (4,), x, binary=True),
        OutputTensor("y", "INT8", (2,), np.array([1, -1], np.int8)),
        OutputTensor("z", "FP32", (4,), None, shm=ShmRef("r", 16)),
    ))  # fmt: skip
    header, parts = infer_response(response)
    document = json.loads(header)
    assert document["id"] == "id-1"
    assert document["outputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}},
        {"name": "y", "datatype": "INT8", "shape": [2], "data": [1, -1]},
        {"name": "z", "datatype": "FP32", "shape": [4]},
    ]
    assert b"".join(parts) == x.tobytes()


def test_statistics_split_successes_from_failures() -> None:
    book = StatsBook()
    book.observe("m", True, 100, 5, input_ns=10, infer_ns=80, output_ns=10)
    book.observe("m", False, 40, 9)
    stats = book.stats("m", "1")
    assert (stats.success.count, stats.success.ns, stats.fail.count, stats.fail.ns) == (
        1,
        100,
        1,
        40,
    )
    assert stats.compute_infer.ns == 80 and stats.last_inference_ms == 9
    assert book.stats("other", "1").inference_count == 0


@pytest.fixture
def region() -> Iterator[tuple[str, shared_memory.SharedMemory]]:
    key = f"/oip-core-{uuid.uuid4().hex[:8]}"
    memory = shared_memory.SharedMemory(key, create=True, size=4096)
    try:
        yield key, memory
    finally:
        memory.close()
        with contextlib.suppress(FileNotFoundError):
            memory.unlink()


@pytest.fixture
async def registry() -> AsyncIterator[SystemShmRegistry]:
    registry = SystemShmRegistry()
    try:
        yield registry
    finally:
        await registry.aclose()


async def test_a_region_unregistered_while_borrowed_stays_mapped_until_returned(
    region: tuple[str, shared_memory.SharedMemory], registry: SystemShmRegistry
) -> None:
    key, memory = region
    assert memory.buf is not None
    await registry.register("r", key, 1024, 2048)
    assert [s.byte_size for s in registry.status()] == [2048]
    with registry.borrow(ShmRef("r", 8, offset=4)) as view:
        view[:] = 7
        registry.unregister("r")
        with pytest.raises(OipError, match="Unable to find system shared memory region"):
            registry.status("r")
        view[0] = 9  # still mapped: the request that borrowed it finishes its work
    assert bytes(memory.buf[1028:1036]) == b"\x09" + b"\x07" * 7
    assert len(registry) == 0


async def test_regions_are_checked_against_their_object(
    region: tuple[str, shared_memory.SharedMemory], registry: SystemShmRegistry
) -> None:
    key, _ = region
    with pytest.raises(OipError, match="invalid args"):
        await registry.register("r", key, 4000, 200)
    with pytest.raises(OipError, match="not a shared-memory key"):
        await registry.register("r", "/a/b", 0, 8)
    await registry.register("r", key, 0, 100)
    with pytest.raises(OipError, match="already in manager"):
        await registry.register("r", key, 0, 100)
    with (
        pytest.raises(OipError, match="Invalid offset \\+ byte size"),
        registry.borrow(ShmRef("r", 8, 96)),
    ):
        pass
    await registry.aclose()
    assert registry.status() == []


async def test_a_region_whose_object_the_client_unlinked_is_reaped(
    region: tuple[str, shared_memory.SharedMemory], registry: SystemShmRegistry
) -> None:
    key, memory = region
    await registry.register("kept", key, 0, 64)
    assert await registry.reap() == []
    await asyncio.to_thread(memory.unlink)  # the client destroys it without unregistering
    assert await registry.reap() == ["kept"]
    assert registry.status() == []


async def test_large_region_inputs_are_staged_once_for_a_shm_hop(shm_dir: Path) -> None:
    # Inputs read from a client's region go to an arena in a worker thread (split across
    # cores) and then by reference; a retry reuses the staged copy.
    domain = await asyncio.to_thread(ShmDomain, shm_dir)
    try:
        region = np.arange(1 << 20, dtype=np.float32)  # 4 MiB, as read from a region
        small = np.arange(4, dtype=np.float32)
        staged: dict[str, Any] = {}
        inputs = {"x": region, "small": small}
        first = await _staged(inputs, {"x", "small"}, domain, staged)
        again = await _staged(inputs, {"x", "small"}, domain, staged)
        assert first["x"] is again["x"] is staged["x"] and first["small"] is small
        np.testing.assert_array_equal(first["x"], region)
        assert domain.stats().leases == 1
        assert domain.place(first["x"], "peer") is not None
        assert domain.stats().bytes_copied == 0  # by reference: only the staging copy
    finally:
        await asyncio.to_thread(domain.close)
