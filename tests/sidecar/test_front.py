"""The local HTTP listener's front (sidecar._front) over real sockets: a lane and aiohttp
sharing connections.

The server is a real aiohttp app behind `front_factory` on 127.0.0.1 port 0; callers are
raw sockets, so the bytes (pipelining, splits, malformed heads) are the test's. The lane
here is a small one of the test's own (the front's contract is the `Lane` protocol; the
OIP lane is tested against real model servers in tests/oip_upstream/test_lane.py). Both
the lane and aiohttp answer `POST /lane`, differently, so every answer says who served it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from sidecar._front import (
    HEAD_LIMIT,
    FrontProtocol,
    LaneAnswer,
    LaneRequest,
    front_factory,
    runner_options,
)

WAIT = 10.0


class EchoLane:
    """Serves POST /lane* by answering its body reversed; `decline` bodies go to aiohttp,
    `hold` bodies wait for `release`, `boom` bodies raise."""

    max_body = 1 << 20

    def __init__(self) -> None:
        self.served: list[bytes] = []
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.cancelled = asyncio.Event()

    def wants(self, method: bytes, target: bytes) -> bool:
        return method == b"POST" and target.startswith(b"/lane")

    def takes(self, request: LaneRequest) -> bool:
        return bytes(request.body[:7]) != b"decline"

    async def serve(self, request: LaneRequest) -> LaneAnswer:
        if request.body == b"boom":
            raise RuntimeError("the lane broke")
        if request.body == b"hold":
            self.holding.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        body = bytes(request.body)
        self.served.append(body)
        return LaneAnswer(200, [("Content-Type", "text/plain")], b"lane:" + body[::-1])


@dataclass
class Server:
    address: tuple[str, int]
    lane: EchoLane
    held: asyncio.Event = field(default_factory=asyncio.Event)
    fronts: list[FrontProtocol] = field(default_factory=list)
    aiohttp_seen: list[str] = field(default_factory=list)

    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection, closed at the end of the test."""
        reader, writer = await asyncio.open_connection(*self.address)
        self.writers.append(writer)
        return reader, writer


async def _start(keepalive: float = 75.0) -> AsyncIterator[Server]:
    lane = EchoLane()
    server = Server(("", 0), lane)

    async def slow(request: web.Request) -> web.Response:
        server.aiohttp_seen.append(request.path)
        return web.Response(text=f"slow {request.match_info['n']}")

    async def lane_route(request: web.Request) -> web.Response:
        body = await request.read()
        server.aiohttp_seen.append(request.path)
        return web.Response(body=b"aiohttp:" + body)

    async def upload(request: web.Request) -> web.Response:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.Response(text=f"uploaded {size}")

    async def held(request: web.Request) -> web.Response:
        await server.held.wait()
        return web.Response(text="held")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await response.write(part)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=8 << 20)
    app.router.add_get("/slow/{n}", slow)
    app.router.add_post("/lane", lane_route)
    app.router.add_post("/upload", upload)
    app.router.add_get("/held", held)
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app, **runner_options())
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    factory = front_factory(runner.server, lane, keepalive)

    def made() -> FrontProtocol:
        front = factory()
        assert isinstance(front, FrontProtocol)
        server.fronts.append(front)
        return front

    listener = await loop.create_server(made, "127.0.0.1", 0)
    server.address = listener.sockets[0].getsockname()[:2]
    try:
        yield server
    finally:
        server.held.set()
        lane.release.set()
        for writer in server.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        listener.close()
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for started in _start():
        yield started


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer: status, headers (lower-case names), body (length or chunked)."""
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    return status, headers, body
                body += chunk[:-2]
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    return (head + "".join(f"{h}\r\n" for h in extra) + "\r\n").encode() + body


def get(path: str, *extra: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in extra)).encode() + (
        b"\r\n"
    )


async def closed(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(WAIT):
        return await reader.read() == b""


async def test_the_lane_and_aiohttp_take_turns_on_one_keep_alive_connection(server: Server) -> None:
    reader, writer = await server.connect()
    exchanges = [
        (get("/slow/1"), b"slow 1"),
        (post("/lane", b"abc"), b"lane:cba"),
        (get("/slow/2"), b"slow 2"),
        (post("/lane", b"xyz"), b"lane:zyx"),
        (post("/lane", b"decline"), b"aiohttp:decline"),
        (post("/lane?x=1", b"q"), b"lane:q"),
        (get("/stream"), b"one,two,three"),
        (post("/lane", b"end"), b"lane:dne"),
    ]
    for request, expected in exchanges:
        writer.write(request)
        status, _, body = await read_answer(reader)
        assert (status, body) == (200, expected)
    assert server.lane.served == [b"abc", b"xyz", b"q", b"end"]
    writer.close()


async def test_pipelined_requests_are_answered_in_order_however_the_bytes_are_split(
    server: Server,
) -> None:
    batch = [
        (post("/lane", b"first"), {b"lane:tsrif"}),
        (get("/slow/1"), {b"slow 1"}),
        (post("/lane", b"second"), {b"lane:dnoces", b"aiohttp:second"}),
        (post("/upload", b"u" * 3000), {b"uploaded 3000"}),
        (post("/lane", b"third"), {b"lane:driht", b"aiohttp:third"}),
    ]
    data = b"".join(request for request, _ in batch)
    rng = random.Random(7)
    for trial in range(40):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 12))) if trial else []
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        reader, writer = await server.connect()
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        for _, expected in batch:
            status, _, body = await read_answer(reader)
            assert status == 200 and body in expected, (trial, cuts, body)
        writer.close()


async def test_the_lane_waits_for_an_answer_aiohttp_still_owes(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(get("/held") + post("/lane", b"abc"))
    await writer.drain()
    async with asyncio.timeout(WAIT):  # both in: /lane too is aiohttp's, behind /held
        while not server.fronts or server.fronts[0].with_aiohttp < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    server.held.set()
    assert (await read_answer(reader))[2] == b"held"
    assert (await read_answer(reader))[2] == b"aiohttp:abc"
    assert server.lane.served == []
    writer.write(post("/lane", b"now"))  # aiohttp owes nothing now: the lane's
    assert (await read_answer(reader))[2] == b"lane:won"
    writer.close()


async def test_a_request_behind_the_lanes_waits_for_its_answer(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(post("/lane", b"hold") + get("/slow/9"))
    await writer.drain()
    async with asyncio.timeout(WAIT):
        await server.lane.holding.wait()
    assert server.aiohttp_seen == []  # not fed to aiohttp while the lane owes its answer
    server.lane.release.set()
    assert (await read_answer(reader))[2] == b"lane:dloh"
    assert (await read_answer(reader))[2] == b"slow 9"
    writer.close()


@pytest.mark.parametrize(
    ("request_bytes", "why"),
    [
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"3\r\nabc\r\n0\r\n\r\n", "chunked"),
        (b"GET /slow/1 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", "HTTP/1.0"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue"
         b"\r\n\r\nabc", "expect"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n folded\r\n\r\nabc", "fold"),
    ],
)  # fmt: skip
async def test_a_head_read_only_by_aiohttp_hands_it_the_connection(
    server: Server, request_bytes: bytes, why: str
) -> None:
    reader, writer = await server.connect()
    writer.write(request_bytes)
    status, _, _ = await read_answer(reader)
    if why == "fold":
        assert status == 400  # aiohttp's parser refuses it, and closes
        assert await closed(reader)
        return
    if why == "expect":
        assert status == 100  # the interim answer, then the real one
        status, _, _ = await read_answer(reader)
    assert status == 200
    if why == "HTTP/1.0":
        writer.close()
        return
    writer.write(post("/lane", b"abc"))  # aiohttp owns the connection from now on
    assert (await read_answer(reader))[2] == b"aiohttp:abc"
    assert server.lane.served == []
    writer.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"GET /slow/1 HTTP/1.1\r\nX: " + b"a" * HEAD_LIMIT,
        b"POST /lane HTTP/1.1\r\nContent-Length: abc\r\n\r\nabc",
        b"POST /lane HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /lane HTTP/1.1\r\nContent-Length : 3\r\n\r\nabc",
        b"POST /lane HTTP/1.1\nContent-Length: 3\r\n\r\nabc",
    ],
)
async def test_garbage_gets_aiohttps_400_and_the_connection_closes(
    server: Server, garbage: bytes
) -> None:
    reader, writer = await server.connect()
    writer.write(garbage)
    status, _, _ = await read_answer(reader)
    assert 400 <= status < 500
    assert await closed(reader)
    assert server.lane.served == []


async def test_a_large_body_streams_to_aiohttp_and_the_lane_serves_next(server: Server) -> None:
    reader, writer = await server.connect()
    size = 4 << 20
    writer.write(f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    block = b"z" * 65536
    for _ in range(size // len(block)):
        writer.write(block)
        await writer.drain()
    assert (await read_answer(reader))[2] == f"uploaded {size}".encode()
    big = b"x" * ((1 << 20) + 1)
    writer.write(post("/lane", big))  # over the lane's max_body: aiohttp's
    assert (await read_answer(reader))[2] == b"aiohttp:" + big
    writer.write(post("/lane", b"small"))
    assert (await read_answer(reader))[2] == b"lane:llams"
    writer.close()


async def test_connection_close_is_aiohttps_and_it_closes_after_answering(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(post("/lane", b"abc", "Connection: close"))
    assert (await read_answer(reader))[2] == b"aiohttp:abc"
    assert await closed(reader)


async def test_a_lane_that_raises_answers_500_and_the_connection_goes_on(server: Server) -> None:
    reader, writer = await server.connect()
    writer.write(post("/lane", b"boom"))
    status, headers, body = await read_answer(reader)
    assert status == 500 and b"the lane broke" in body
    assert headers["content-type"] == "application/json"
    writer.write(post("/lane", b"ok"))
    assert (await read_answer(reader))[2] == b"lane:ko"
    writer.close()


async def test_a_caller_gone_mid_request_cancels_the_lanes_work(server: Server) -> None:
    _, writer = await server.connect()
    writer.write(post("/lane", b"hold"))
    async with asyncio.timeout(WAIT):
        await server.lane.holding.wait()
    writer.close()
    async with asyncio.timeout(WAIT):
        await server.lane.cancelled.wait()


async def test_an_idle_connection_closes_after_keepalive_but_not_mid_request() -> None:
    keepalive = 0.3
    async for server in _start(keepalive):
        reader, writer = await server.connect()
        writer.write(post("/lane", b"hold"))
        async with asyncio.timeout(WAIT):
            await server.lane.holding.wait()
        with pytest.raises(TimeoutError):  # three keep-alives pass: a request in flight
            async with asyncio.timeout(3 * keepalive):
                await reader.read(1)
        server.lane.release.set()
        assert (await read_answer(reader))[2] == b"lane:dloh"
        loop = asyncio.get_running_loop()
        idle_from = loop.time()
        assert await closed(reader)
        assert loop.time() - idle_from >= keepalive * 0.9
        writer.close()


async def test_a_truncated_lane_request_leaves_nothing_behind(server: Server) -> None:
    _, writer = await server.connect()
    writer.write(post("/lane", b"x" * 100)[:-50])  # half the body, then gone
    await writer.drain()
    writer.close()
    async with asyncio.timeout(WAIT):
        while not server.fronts or server.fronts[0].open:  # noqa: ASYNC110  # no event for it
            await asyncio.sleep(0.01)
    assert server.lane.served == []
    assert server.fronts[0].buffered == 0


async def test_a_large_lane_body_is_collected_into_a_pooled_buffer_however_it_arrives(
    server: Server,
) -> None:
    rng = random.Random(11)
    body = rng.randbytes(300_000)  # over POOLED_FROM
    declined = b"decline" + body
    data = post("/lane", body) + get("/slow/3") + post("/lane", declined) + post("/lane", b"s")
    for trial in range(8):
        cuts = sorted(rng.sample(range(1, len(data)), 20)) if trial else []
        reader, writer = await server.connect()
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            writer.write(data[a:b])
            await writer.drain()
        assert (await read_answer(reader))[2] == b"lane:" + body[::-1]
        assert (await read_answer(reader))[2] == b"slow 3"
        assert (await read_answer(reader))[2] == b"aiohttp:" + declined  # whole, in order
        assert (await read_answer(reader))[2] in (b"lane:s", b"aiohttp:s")
        writer.close()
    assert all(front.buffered == 0 for front in server.fronts)
