"""Bad input on every listener of `sidecar run`: a clear error, no crash, nothing leaked."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections.abc import Callable, Iterator

import msgpack
import numpy as np
import pytest

import transport
from sidecar import BlockingMeshClient, RemoteError

from ..conftest import ServeProcess
from .conftest import Sidecar

DOUBLER = """
from sidecar import serve
async def double(inputs):
    return {{"y": inputs["x"] * 2}}
serve(double, service="toy", ready_file={ready!r}, uds_path={uds!r})
"""


HELLO = msgpack.packb({"v": 1})
HELLO_FRAME = struct.pack("<2sBBIQ", b"AM", 1, 0, len(HELLO), 0) + HELLO


def _raw(address: str, data: bytes, half_close: bool = True) -> bytes:
    """Send `data` on a fresh connection; everything the sidecar answers until it closes."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _goaway_message(answer: bytes) -> str:
    """The message of the GOAWAY frame in what a mesh listener answered."""
    at = 0
    while at + 16 <= len(answer):
        _, ftype, _, length, _ = struct.unpack_from("<2sBBIQ", answer, at)
        payload = answer[at + 16 : at + 16 + length]
        if ftype == 4:  # GOAWAY
            return str(msgpack.unpackb(payload)[1])
        at += 16 + length
    return ""


@pytest.fixture
def front(
    serve_process: Callable[[str], ServeProcess], sidecars: Callable[..., Sidecar]
) -> Iterator[Sidecar]:
    replica = serve_process(DOUBLER)
    sidecar = sidecars("toy", app=f"tcp://{replica.mesh}")
    yield sidecar
    assert sidecar.stop() == 0
    assert replica.stop() == 0


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"AM" + b"\xff" * 30, "frame"),  # a mesh magic, then nonsense
        (struct.pack("<2sBBIQ", b"AM", 2, 0, 1, 1) + b"\x80", "hello"),  # a request first
        (HELLO_FRAME + struct.pack("<2sBBIQ", b"AM", 2, 0, 1 << 30, 1), "max_header_size"),
        (HELLO_FRAME + struct.pack("<2sBBIQ", b"AM", 9, 0, 0, 0), "type"),  # unknown frame
        (HELLO_FRAME + struct.pack("<2sBBIQ", b"AM", 2, 0, 3, 1) + b"\xc1\xc1\xc1", "header"),
    ],
)
def test_malformed_mesh_frames_get_a_goaway_saying_why(
    front: Sidecar, data: bytes, says: str
) -> None:
    answer = _raw(front.mesh, data)
    assert says in _goaway_message(answer).lower(), _goaway_message(answer) or answer[:300]
    with BlockingMeshClient(front.mesh) as client:  # still serving
        assert client.infer("toy", {"x": np.ones(3)}, timeout=10)["y"].tolist() == [2, 2, 2]


def test_garbage_that_is_not_mesh_gets_an_http_400_on_the_mesh_port(front: Sidecar) -> None:
    answer = _raw(front.mesh, b"NOT A PROTOCOL\r\n\r\n", half_close=False)
    assert answer.startswith(b"HTTP/1.0 400"), answer[:200]
    answer = _raw(
        front.mesh,
        b"GET /svc/other/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        half_close=False,
    )
    assert b" 400 " in answer.split(b"\r\n")[0] and b"fronts 'toy'" in answer


def test_truncated_request_leaks_nothing(front: Sidecar) -> None:
    head = msgpack.packb({"k": 1, "s": "toy", "m": "infer", "bl": 1 << 20})
    frames = HELLO_FRAME + struct.pack("<2sBBIQ", b"AM", 2, 0, len(head), 1) + head
    frames += struct.pack("<2sBBIQ", b"AM", 3, 0, 1000, 1) + b"\0" * 10  # a cut DATA frame
    _raw(front.mesh, frames)
    with BlockingMeshClient(front.mesh) as client:
        client.infer("toy", {"x": np.ones(3)}, timeout=10)
    assert front.metric("arrowmesh_requests_in_flight") == 0


def test_unknown_service_is_a_clear_unavailable_error(front: Sidecar) -> None:
    with BlockingMeshClient(front.mesh) as client, pytest.raises(RemoteError, match="no-such"):
        client.infer("no-such", {"x": np.ones(1)}, timeout=10)


def test_traceparent_is_kept_end_to_end(front: Sidecar) -> None:
    sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    async def call() -> str | None:
        link = await transport.connect(front.mesh)
        try:
            header = transport.Header(
                transport.Kind.REQUEST, service="toy", method="infer", traceparent=sent
            )
            metas, parts, body_len, _ = transport.encode_message(
                {"x": np.ones(2)}, transport.Limits()
            )
            header.tensors, header.body_len = metas, body_len
            reply = await link.request(header, parts)
            return reply.header.traceparent
        finally:
            await link.aclose()

    assert asyncio.run(call()) == sent
    info = json.loads(front.admin("/endpoints")[1])
    assert isinstance(info, dict)
