"""Stream links over real sockets: multiplexing, back-pressure, cancellation, bad peers."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import msgpack
import numpy as np
import pytest

from transport import (
    BufferPool,
    Cancelled,
    DeadlineExceeded,
    ErrorCode,
    Header,
    Kind,
    LimitExceeded,
    Limits,
    LinkClosed,
    LinkServer,
    Message,
    RemoteError,
    Reply,
    StreamLink,
    connect,
    decode_tensors,
    encode_tensors,
)
from transport._frame import FRAME, MAGIC, FrameType, frame_header, hello_frame
from transport._shm import ShmDomain
from transport._sniff import _HeadDeadline

LIMITS = Limits(chunk_size=64 * 1024)


def request(
    tensors: dict[str, np.ndarray], limits: Limits = LIMITS, service: str = "svc"
) -> tuple[Header, list[object]]:
    metas, parts, body_len = encode_tensors(tensors, limits)
    return Header(Kind.REQUEST, service, "infer", body_len=body_len, tensors=metas), parts


def tensors_of(message: Message, limits: Limits = LIMITS) -> dict[str, np.ndarray]:
    return decode_tensors(message.header.tensors, message.body_view(), limits)


async def echo(message: Message, deadline: float | None, place: object = None) -> Reply:
    inputs = tensors_of(message)
    metas, parts, body_len = encode_tensors(inputs, LIMITS)
    return Header(Kind.RESPONSE, body_len=body_len, tensors=metas), parts


class Served:
    def __init__(self, server: LinkServer, address: str, pool: BufferPool) -> None:
        self.server, self.address, self.pool = server, address, pool


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    servers: list[LinkServer] = []

    async def _start(
        handler: Callable[..., Awaitable[Reply]] = echo,
        limits: Limits = LIMITS,
        uds: Path | None = None,
    ) -> Served:
        pool = BufferPool()
        server = LinkServer(handler, limits, pool)
        servers.append(server)
        address = await (server.listen_unix(str(uds)) if uds else server.listen_tcp("127.0.0.1", 0))
        return Served(server, address, pool)

    yield _start
    for server in servers:
        await server.aclose()


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110  # the counters polled here have no event
            await asyncio.sleep(0.01)


async def assert_no_leaks(served: Served, *pools: BufferPool) -> None:
    gc.collect()
    await eventually(lambda: served.server.in_flight == 0, "requests to finish")
    await eventually(lambda: served.server.connections == 0, "connections to close")
    for pool in (served.pool, *pools):
        await eventually(lambda p=pool: p.stats().in_use == 0, "buffers to return")  # type: ignore[misc]


async def test_many_concurrent_requests_share_one_connection(
    start: Callable[..., Awaitable[Served]],
) -> None:
    served = await start()
    client_pool = BufferPool()
    link = await connect(served.address, limits=LIMITS, pool=client_pool)
    sizes = [0, 1, 100, 70_000, 1 << 20, 3_000_000] * 8

    async def one(i: int, n: int) -> None:
        x = np.full(n, i, dtype=np.int16)
        reply = await link.request(*request({"x": x, "i": np.array(i)}))
        out = tensors_of(reply)
        assert int(out["i"]) == i
        np.testing.assert_array_equal(out["x"], x)

    await asyncio.gather(*(one(i, n) for i, n in enumerate(sizes)))
    assert served.server.connections == 1
    await link.aclose()
    await assert_no_leaks(served, client_pool)


async def test_unix_socket_link_carries_the_same_messages(
    start: Callable[..., Awaitable[Served]], tmp_path: Path
) -> None:
    served = await start(uds=tmp_path / "s.sock")
    assert served.address.startswith("unix:")
    link = await connect(served.address, limits=LIMITS)
    x = np.arange(500_000, dtype=np.float64)
    np.testing.assert_array_equal(tensors_of(await link.request(*request({"x": x})))["x"], x)
    assert await link.ping() >= 0
    await link.aclose()


async def test_handler_errors_arrive_as_remote_errors_and_the_link_keeps_working(
    start: Callable[..., Awaitable[Served]],
) -> None:
    async def failing(message: Message, deadline: float | None, place: object = None) -> Reply:
        if message.header.service == "bad":
            raise RemoteError(ErrorCode.HANDLER_ERROR, "model exploded", "ValueError")
        return await echo(message, deadline, place)

    served = await start(failing)
    link = await connect(served.address, limits=LIMITS)
    with pytest.raises(RemoteError, match="model exploded") as info:
        await link.request(*request({}, service="bad"))
    assert info.value.remote_type == "ValueError"
    assert tensors_of(await link.request(*request({"x": np.ones(3)})))["x"].sum() == 3
    await link.aclose()


async def test_cancelled_request_stops_the_handler_and_frees_buffers(
    start: Callable[..., Awaitable[Served]],
) -> None:
    entered, stopped = asyncio.Event(), asyncio.Event()

    async def slow(message: Message, deadline: float | None, place: object = None) -> Reply:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    served = await start(slow)
    client_pool = BufferPool()
    link = await connect(served.address, limits=LIMITS, pool=client_pool)
    call = asyncio.create_task(link.request(*request({"x": np.zeros(1 << 20)})))
    await entered.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    async with asyncio.timeout(5):
        await stopped.wait()
    assert link.in_flight == 0
    await link.aclose()
    await assert_no_leaks(served, client_pool)


async def test_expired_deadline_fails_on_both_sides(
    start: Callable[..., Awaitable[Served]],
) -> None:
    stopped = asyncio.Event()
    seen: list[float | None] = []

    async def slow(message: Message, deadline: float | None, place: object = None) -> Reply:
        seen.append(message.header.timeout)
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    served = await start(slow)
    link = await connect(served.address, limits=LIMITS)
    loop = asyncio.get_running_loop()
    with pytest.raises(DeadlineExceeded):
        await link.request(*request({"x": np.zeros(10)}), deadline=loop.time() + 0.2)
    async with asyncio.timeout(5):
        await stopped.wait()
    assert seen and seen[0] is not None and 0 < seen[0] <= 0.2
    await link.aclose()


async def test_server_enforces_the_budget_it_was_given(
    start: Callable[..., Awaitable[Served]],
) -> None:
    async def slow(message: Message, deadline: float | None, place: object = None) -> Reply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    served = await start(slow)
    link = await connect(served.address, limits=LIMITS)
    header, parts = request({"x": np.zeros(10)})
    from dataclasses import replace

    with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.100 s passed"):
        await link.request(replace(header, timeout=0.1), parts)  # no client-side deadline
    await link.aclose()
    await assert_no_leaks(served)


async def test_server_stops_reading_at_max_concurrent_streams(
    start: Callable[..., Awaitable[Served]],
) -> None:
    release = asyncio.Event()
    peak = 0

    async def gated(message: Message, deadline: float | None, place: object = None) -> Reply:
        nonlocal peak
        peak = max(peak, served.server.in_flight)
        await release.wait()
        return await echo(message, deadline, place)

    limits = Limits(chunk_size=64 * 1024, max_concurrent_streams=2)
    served = await start(gated, limits)
    link = await connect(served.address, limits=limits)
    calls = [
        asyncio.create_task(link.request(*request({"i": np.array(i)}, limits))) for i in range(10)
    ]
    await eventually(lambda: served.server.in_flight == 2, "two requests in progress")
    await asyncio.sleep(0.1)  # would let more requests in, if reading were not paused
    assert served.server.in_flight == 2
    release.set()
    replies = await asyncio.gather(*calls)
    assert sorted(int(tensors_of(r, limits)["i"]) for r in replies) == list(range(10))
    assert peak <= 2
    await link.aclose()


async def test_a_slow_reader_applies_back_pressure_without_unbounded_buffers(
    start: Callable[..., Awaitable[Served]],
) -> None:
    served = await start()
    link = await connect(served.address, limits=LIMITS)
    assert link._transport is not None
    link._transport.pause_reading()  # the client stops reading replies
    x = np.zeros(32 << 20, dtype=np.uint8)
    call = asyncio.create_task(link.request(*request({"x": x})))
    await eventually(lambda: served.server.in_flight == 1, "the server to be replying")
    await asyncio.sleep(0.2)
    (conn,) = served.server._connections
    assert conn._transport is not None
    assert conn._transport.get_write_buffer_size() <= 8 << 20  # waiting, not queueing 32 MiB
    link._transport.resume_reading()
    assert tensors_of(await call)["x"].nbytes == x.nbytes
    await link.aclose()


async def test_connecting_to_nothing_raises_link_closed() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(LinkClosed, match="cannot connect"):
        await connect(f"127.0.0.1:{port}")


async def test_requests_in_flight_fail_with_link_closed_when_the_server_goes(
    start: Callable[..., Awaitable[Served]],
) -> None:
    entered = asyncio.Event()

    async def slow(message: Message, deadline: float | None, place: object = None) -> Reply:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    served = await start(slow)
    link = await connect(served.address, limits=LIMITS)
    call = asyncio.create_task(link.request(*request({})))
    await entered.wait()
    await served.server.aclose()
    with pytest.raises(LinkClosed):
        await call


async def test_oversized_outgoing_header_is_refused_before_sending(
    start: Callable[..., Awaitable[Served]],
) -> None:
    served = await start()
    limits = Limits(max_header_size=4096, inline_threshold=1000)
    link = await connect(served.address, limits=limits)
    header = Header(Kind.REQUEST, "x" * 5000)
    with pytest.raises(LimitExceeded, match="max_header_size=4096"):
        await link.request(header)
    await link.aclose()


# Bad peers, speaking raw bytes over a plain socket.


async def raw_exchange(address: str, payload: bytes, *, half_close: bool = True) -> bytes:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    if half_close:
        writer.write_eof()
    async with asyncio.timeout(10):
        data = await reader.read()  # until the server closes
    writer.close()
    return data


def goaway_of(data: bytes) -> tuple[str, str]:
    at = 0
    while at < len(data):
        _, ftype, _, length, _ = FRAME.unpack_from(data, at)
        if ftype == FrameType.GOAWAY:
            code, message = msgpack.unpackb(data[at + FRAME.size : at + FRAME.size + length])
            return code, message
        at += FRAME.size + length
    raise AssertionError(f"no GOAWAY frame in {data[:100]!r}")


HEAD = FrameType.HEAD


def head(stream: int, header: dict[str, object]) -> bytes:
    payload = msgpack.packb(header)
    return frame_header(HEAD, stream, len(payload)) + payload


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (b"\x00" * 64, "invalid_argument", "not an arrowmesh link"),
        (b"GET / HTTP/1.1\r\n\r\n", "invalid_argument", "not an arrowmesh link"),
        (
            hello_frame() + frame_header(HEAD, 1, 10) + b"abc",
            "invalid_argument",
            "middle of a frame",
        ),
        (hello_frame() + frame_header(HEAD, 1, 50 << 20), "resource_exhausted", "max_header_size"),
        (
            hello_frame() + head(1, {"k": 1, "bl": 1 << 40}),
            "resource_exhausted",
            "max_message_size",
        ),
        (
            hello_frame()
            + head(1, {"k": 1, "bl": 100})
            + frame_header(FrameType.DATA, 1, 1000)
            + b"x" * 1000,
            "invalid_argument",
            "100 bytes left",
        ),
        (
            hello_frame()
            + head(1, {"k": 1, "bl": 10_000})
            + frame_header(FrameType.DATA, 1, 5000)
            + b"x" * 5000,
            "invalid_argument",
            "incomplete",
        ),
        (
            hello_frame() + frame_header(HEAD, 1, 3) + b"\xc1\xc1\xc1",
            "invalid_argument",
            "not valid msgpack",
        ),
        (hello_frame() + head(1, {"k": 42}), "invalid_argument", "unknown message kind"),
        (
            hello_frame() + head(1, {"k": 1, "x": [["a", "FP32", [1] * 100, "C", 0, b""]]}),
            "resource_exhausted",
            "max_rank",
        ),
        (hello_frame() + head(0, {"k": 1}), "invalid_argument", "stream 0"),
        (hello_frame() + head(1, {"k": 2}), "invalid_argument", "cannot accept a RESPONSE"),
    ],
    ids=[
        "zeros",
        "http",
        "truncated",
        "huge-header",
        "huge-body",
        "lying-data",
        "short-body",
        "bad-msgpack",
        "bad-kind",
        "rank",
        "stream-0",
        "wrong-kind",
    ],
)
async def test_bad_input_gets_a_goaway_that_says_why_and_leaks_nothing(
    start: Callable[..., Awaitable[Served]], payload: bytes, code: str, message: str
) -> None:
    served = await start(
        limits=Limits(chunk_size=64 * 1024, max_header_size=1 << 20, max_message_size=1 << 30)
    )
    reply = await raw_exchange(served.address, payload)
    got_code, got_message = goaway_of(reply)
    assert got_code == code
    assert message in got_message
    link = await connect(served.address, limits=LIMITS)  # the server still serves others
    assert tensors_of(await link.request(*request({"x": np.ones(5)})))["x"].sum() == 5
    await link.aclose()
    await assert_no_leaks(served)


async def test_request_with_undecodable_tensors_gets_an_error_reply_not_a_closed_link(
    start: Callable[..., Awaitable[Served]],
) -> None:
    served = await start()
    link = await connect(served.address, limits=LIMITS)
    header = Header(
        Kind.REQUEST, "svc", tensors=encode_tensors({"x": np.zeros(4, np.int8)}, LIMITS)[0]
    )
    from dataclasses import replace

    lying = replace(header, tensors=(replace(header.tensors[0], shape=(9,)),))
    with pytest.raises(RemoteError, match="needs 9 bytes") as info:
        await link.request(lying)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert not link.closed
    await link.aclose()


async def test_peer_vanishing_mid_body_returns_the_partial_buffer(
    start: Callable[..., Awaitable[Served]],
) -> None:
    served = await start()
    host, port = served.address.rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        hello_frame()
        + head(1, {"k": 1, "bl": 8 << 20})
        + frame_header(FrameType.DATA, 1, 1 << 20)
        + b"z" * (1 << 20)
    )
    await writer.drain()
    await eventually(lambda: served.pool.stats().in_use == 1, "the body buffer to be leased")
    writer.transport.abort()
    await assert_no_leaks(served)


async def test_cancel_mid_upload_lets_the_server_drop_the_partial_body(
    start: Callable[..., Awaitable[Served]],
) -> None:
    served = await start()
    link: StreamLink = await connect(served.address, limits=LIMITS)
    assert link._transport is not None
    call = asyncio.create_task(link.request(*request({"x": np.zeros(64 << 20, np.uint8)})))
    await eventually(lambda: served.pool.stats().in_use >= 1, "the upload to start")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert tensors_of(await link.request(*request({"y": np.ones(2)})))["y"].sum() == 2
    await eventually(lambda: served.pool.stats().in_use == 0, "the partial body to be dropped")
    await link.aclose()


async def test_server_side_cancel_reaches_the_caller(
    start: Callable[..., Awaitable[Served]],
) -> None:
    served = await start()
    link = await connect(served.address, limits=LIMITS)
    reply_to: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()
    link._pending[99] = reply_to
    (conn,) = served.server._connections
    conn.send_control(99, Kind.CANCEL)
    with pytest.raises(Cancelled):
        await reply_to
    del link._pending[99]
    await link.aclose()


async def test_drain_serves_requests_already_sent_and_refuses_new_ones() -> None:
    """A draining server tells its links; their callers finish in-flight requests only."""
    import transport

    started, release = asyncio.Event(), asyncio.Event()

    async def slow(
        message: transport.Message, deadline: float | None, placer: object
    ) -> transport.Reply:
        started.set()
        await release.wait()
        return transport.Header(transport.Kind.RESPONSE), []

    server = transport.LinkServer(slow, transport.Limits(), transport.BufferPool())
    address = await server.listen_tcp("127.0.0.1", 0)
    link = await transport.connect(address)
    try:
        pending = asyncio.ensure_future(
            link.request(transport.Header(transport.Kind.REQUEST, service="s"))
        )
        await started.wait()
        drained = asyncio.ensure_future(server.drain(10.0))
        async with asyncio.timeout(5.0):
            while not link.closed:  # noqa: ASYNC110  # a protocol flag: the GOAWAY arrived
                await asyncio.sleep(0.01)
        with pytest.raises(transport.LinkClosed, match="draining"):
            await link.request(transport.Header(transport.Kind.REQUEST, service="s"))
        release.set()
        reply = await pending  # the request already sent is answered
        assert reply.header.kind is transport.Kind.RESPONSE
        assert await drained is True
    finally:
        await link.aclose()
        await server.aclose()


class _Silent:
    """A TCP server that accepts and never answers: counts connections and their ends."""

    def __init__(self) -> None:
        self.accepted = 0
        self.ended = 0
        self.changed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.changed.set()
        await reader.read()  # until the other end closes
        self.ended += 1
        self.changed.set()
        writer.close()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(5.0):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def domain(shm_dir: Path) -> Iterator[ShmDomain]:
    made = ShmDomain(shm_dir)  # outside the loop: it makes files
    yield made
    made.close()


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_connect_that_never_hears_hello_closes_its_socket_and_lease(
    how: str, domain: ShmDomain
) -> None:
    # Found by the CI soak: a connect cancelled while waiting for the peer's HELLO (a
    # request's deadline, a hedge's loser) left its socket open and its shm probe leased.
    silent = _Silent()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        if how == "timeout":
            with pytest.raises(LinkClosed, match="timed out"):
                await connect(f"127.0.0.1:{port}", shm=domain, timeout=0.3)
        else:
            opening = asyncio.create_task(connect(f"127.0.0.1:{port}", shm=domain))
            await silent.until(lambda: silent.accepted == 1)
            await asyncio.sleep(0)  # let it write its HELLO and wait for the peer's
            opening.cancel()
            with pytest.raises(asyncio.CancelledError):
                await opening
        await silent.until(lambda: silent.ended == 1)
        assert domain.stats().leases == 0
    finally:
        server.close()
        await server.wait_closed()


async def _read_to_end(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(5.0):
        return await reader.read()  # until the server closes


@pytest.mark.parametrize("sniffing", [False, True])
async def test_a_connection_that_never_says_hello_is_closed_and_costs_no_lease(
    sniffing: bool, domain: ShmDomain
) -> None:
    server = LinkServer(echo, LIMITS, BufferPool(), domain, hello_timeout=0.3)
    try:
        if sniffing:  # the mesh port: HTTP is told from mesh links by the first bytes
            address = await server.listen_tcp("127.0.0.1", 0, other=asyncio.Protocol)
        else:
            address = await server.listen_tcp("127.0.0.1", 0)
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(MAGIC[:1] if sniffing else b"")  # not enough to tell
            await eventually(lambda: server.connections == int(not sniffing), "the accept")
            assert domain.stats().leases == 0  # no HELLO from the peer, no probe from us
            answer = await _read_to_end(reader)
        finally:
            writer.close()
        if not sniffing:
            assert b"no HELLO within 0.3 s" in answer
            assert server.refused == 1  # counted, and logged at DEBUG only
        await eventually(lambda: server.connections == 0, "the close")
        assert domain.stats().leases == 0
    finally:
        await server.aclose()


async def test_a_peer_that_never_answers_our_probe_gives_its_lease_back(
    domain: ShmDomain,
) -> None:
    server = LinkServer(echo, LIMITS, BufferPool(), domain, hello_timeout=0.3)
    try:
        host, port = (await server.listen_tcp("127.0.0.1", 0)).rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        try:
            # Claims our domain, so the server sends its probe, then never acknowledges it.
            claim = {"domain": domain.token, "proc": "0" * 16, "probe": ["x", 0, 0, 0, 0, 1]}
            writer.write(hello_frame(shm=claim))
            await eventually(lambda: domain.stats().leases == 1, "the server's probe")
            await eventually(lambda: domain.stats().leases == 0, "the probe to lapse", 3.0)
            assert server.connections == 1  # still open: the network path stays usable
        finally:
            writer.close()
    finally:
        await server.aclose()


class _Http(asyncio.Protocol):
    """The other protocol of a sniffing listener: answers each complete request head."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.parametrize("complete", [False, True])
async def test_the_http_side_of_a_sniffing_port_closes_a_slow_loris(complete: bool) -> None:
    server = LinkServer(echo, LIMITS, BufferPool(), hello_timeout=0.3)
    try:
        address = await server.listen_tcp("127.0.0.1", 0, other=_Http)
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"\r\n" if complete else b""))
            await writer.drain()
            if complete:
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 204")
                with pytest.raises(TimeoutError):  # its request is in: it may stay idle
                    async with asyncio.timeout(0.6):
                        await reader.read(1)
            else:
                async with asyncio.timeout(5):
                    assert await reader.read() == b""  # closed at the deadline
        finally:
            writer.close()
    finally:
        await server.aclose()


async def test_a_request_head_is_seen_to_end_across_reads() -> None:
    # The blank line that ends a head may arrive split in any way.
    loop = asyncio.get_running_loop()
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for cut in range(1, len(head)):
        timer = loop.call_later(60, lambda: None)
        inner = _Http()
        guard = _HeadDeadline(inner, timer)
        guard.connection_made(_NullTransport())
        guard.data_received(head[:cut])
        assert not timer.cancelled()
        guard.data_received(head[cut:])
        assert timer.cancelled(), cut
        assert inner.buffer == b""  # the inner protocol got every byte, the head whole


class _NullTransport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass
