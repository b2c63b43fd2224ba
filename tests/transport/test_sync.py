"""The blocking link against a real link server running in another thread."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from transport import (
    BufferPool,
    DeadlineExceeded,
    Header,
    Kind,
    Limits,
    LinkClosed,
    LinkServer,
    Message,
    RemoteError,
    Reply,
    SyncLink,
    decode_tensors,
    encode_tensors,
)

LIMITS = Limits(chunk_size=256 * 1024)


@dataclass
class Background:
    """A LinkServer on its own loop and thread; `gate` holds requests for service "slow"."""

    address: str = ""
    pool: BufferPool = field(default_factory=BufferPool)
    handled: int = 0
    gate: threading.Event = field(default_factory=threading.Event)


async def _handler(bg: Background, message: Message) -> Reply:
    if message.header.service == "slow":
        await asyncio.to_thread(bg.gate.wait, 10)
    if message.header.service == "fail":
        raise ValueError("no such luck")
    bg.handled += 1
    tensors = decode_tensors(message.header.tensors, message.body_view(), LIMITS)
    metas, parts, body_len = encode_tensors(tensors, LIMITS)
    return Header(Kind.RESPONSE, body_len=body_len, tensors=metas), parts


@pytest.fixture
def server() -> Iterator[Background]:
    bg = Background()
    ready = threading.Event()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        server = LinkServer(lambda m, d, p: _handler(bg, m), LIMITS, bg.pool)
        bg.address = await server.listen_tcp("127.0.0.1", 0)
        stop.append(asyncio.Event())
        ready.set()
        await stop[0].wait()
        await server.aclose()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),))
    thread.start()
    assert ready.wait(10)
    yield bg
    bg.gate.set()
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(10)
    loop.close()


def call(
    link: SyncLink, service: str, tensors: dict[str, np.ndarray], timeout: float | None = None
) -> dict[str, np.ndarray]:
    metas, parts, body_len = encode_tensors(tensors, LIMITS)
    header = Header(Kind.REQUEST, service, body_len=body_len, tensors=metas)
    reply = link.request(header, parts, timeout=timeout)
    return decode_tensors(reply.header.tensors, reply.body_view(), LIMITS)


def test_small_and_large_requests_round_trip(server: Background) -> None:
    link = SyncLink.connect(server.address, limits=LIMITS)
    for n in (0, 10, 100_000, 5_000_000):
        x = np.arange(n, dtype=np.int32)
        np.testing.assert_array_equal(call(link, "echo", {"x": x})["x"], x)
    assert link.ping() > 0
    link.close()
    assert link.closed


def test_timeout_raises_deadline_exceeded_and_the_link_stays_usable(server: Background) -> None:
    link = SyncLink.connect(server.address, limits=LIMITS)
    with pytest.raises(DeadlineExceeded):
        call(link, "slow", {"x": np.zeros(3)}, timeout=0.2)
    server.gate.set()
    assert not link.closed
    assert call(link, "echo", {"x": np.ones(2)})["x"].sum() == 2  # the late reply is dropped
    link.close()


def test_remote_errors_are_raised_with_their_message(server: Background) -> None:
    link = SyncLink.connect(server.address, limits=LIMITS)
    with pytest.raises(RemoteError, match="no such luck"):
        call(link, "fail", {})
    assert call(link, "echo", {"x": np.ones(1)})["x"][0] == 1
    link.close()


def test_unreachable_address_raises_link_closed() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(LinkClosed, match="cannot connect"):
        SyncLink.connect(f"127.0.0.1:{port}")


def test_a_peer_that_is_not_a_link_raises_link_closed() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=answer_garbage)
    thread.start()
    with pytest.raises(LinkClosed, match="not an arrowmesh link"):
        SyncLink.connect(f"127.0.0.1:{port}", timeout=5)
    thread.join()
    listener.close()


def test_a_closed_link_keeps_raising_link_closed(server: Background) -> None:
    link = SyncLink.connect(server.address, limits=LIMITS)
    link.close()
    with pytest.raises(LinkClosed):
        call(link, "echo", {})
