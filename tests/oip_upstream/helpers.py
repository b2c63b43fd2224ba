"""What the real-server tests share: inputs of every datatype, comparisons, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import transport
from sidecar import DeadlineExceeded, RemoteError
from transport import ErrorCode, Header, Kind

from ..e2e.conftest import Sidecar

Array = npt.NDArray[Any]

# Input name -> numpy dtype; the echo models answer `out_<name>`.
NUMERIC: dict[str, npt.DTypeLike] = {
    "bool": np.bool_,
    "i8": np.int8,
    "i16": np.int16,
    "i32": np.int32,
    "i64": np.int64,
    "u8": np.uint8,
    "u16": np.uint16,
    "u32": np.uint32,
    "u64": np.uint64,
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
}


def every_datatype(utf8_only: bool = False) -> dict[str, Array]:
    """One 2x3 tensor of each datatype the servers take (BYTES: any bytes, or UTF-8 only)."""
    rng = np.random.default_rng(8)
    out: dict[str, Array] = {}
    for name, dtype in NUMERIC.items():
        kind = np.dtype(dtype).kind
        if kind == "b":
            out[name] = rng.integers(0, 2, (2, 3)).astype(np.bool_)
        elif kind in "iu":
            info = np.iinfo(dtype)
            out[name] = rng.integers(info.min, info.max, (2, 3), dtype=dtype, endpoint=True)
        else:
            out[name] = (rng.standard_normal((2, 3)) * 100).astype(dtype)
    words = [b"", b"a", "\u00e9t\u00e9".encode(), b"tensor", b"x" * 100]
    words.append("utf-8 \u2713".encode() if utf8_only else b"\xff\x00\xfe")
    out["bytes"] = np.array(words, dtype=object).reshape(2, 3)
    return out


def same(got: Array, want: Array) -> bool:
    """Same datatype, shape and values (bit for bit; BYTES element by element)."""
    if want.dtype == object:
        return got.dtype == object and got.shape == want.shape and got.tolist() == want.tolist()
    return (
        got.dtype == want.dtype
        and got.shape == want.shape
        and np.array_equal(got.view(np.uint8), want.view(np.uint8))
    )


def is_deadline(exc: BaseException) -> bool:
    """The client's own deadline passed, or the sidecar answered DEADLINE_EXCEEDED."""
    if isinstance(exc, DeadlineExceeded):
        return True
    return isinstance(exc, RemoteError) and exc.code is ErrorCode.DEADLINE_EXCEEDED


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a blocking `predicate` (in a worker thread) until it holds, or fail."""
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(predicate):  # noqa: ASYNC110  # no event to wait on
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def readyz(front: Sidecar, status: int, timeout: float = 30.0) -> None:
    """Wait until the sidecar's /readyz answers `status`."""
    await eventually(lambda: front.admin("/readyz")[0] == status, f"/readyz {status}", timeout)


async def signature(front: Sidecar, service: str) -> dict[str, object]:
    """What the sidecar answers a mesh "metadata" request for `service` with."""
    link = await transport.connect(front.mesh)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        header = Header(Kind.REQUEST, service=service, method="metadata")
        reply = await link.request(header, [], deadline=deadline)
        return reply.header.params
    finally:
        await link.aclose()
