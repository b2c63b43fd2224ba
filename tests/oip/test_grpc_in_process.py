"""The daemon and a mesh app in this process, on the test's event loop: the gRPC deadline
reaches the app, requests past their deadline end DEADLINE_EXCEEDED, a cancelled stream
cancels what it started, and (blockbuster) nothing the gRPC front door does blocks the loop.

The app is a mesh `LinkServer` that echoes its inputs and records each request's remaining
deadline; a request parameter "sleep" makes it wait that long first.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient
from blockbuster import BlockBuster
from tritonclient.utils import InferenceServerException

import transport
from sidecar._config import load_run_config
from sidecar._daemon import Daemon
from transport import BufferPool, Header, Kind, Limits, LinkServer, Message, Placer, Reply

pytestmark = pytest.mark.timeout(60)


@dataclass
class EchoApp:
    """What the app saw: each request's remaining deadline (None without one), by the
    request's "tag" parameter."""

    remaining: dict[object, float | None] = field(default_factory=dict)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    limits: Limits = field(default_factory=Limits)

    async def handle(self, message: Message, deadline: float | None, place: Placer | None) -> Reply:
        header = message.header
        loop = asyncio.get_running_loop()
        self.remaining[header.params.get("tag")] = (
            None if deadline is None else deadline - loop.time()
        )
        sleep = header.params.get("sleep")
        if isinstance(sleep, float):
            try:
                await asyncio.sleep(sleep)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        inputs = transport.decode_tensors(
            header.tensors, message.body_view(), self.limits, message.shared
        )
        metas, parts, body_len, body_ref = transport.encode_message(inputs, self.limits, place)
        reply = Header(Kind.RESPONSE, traceparent=header.traceparent, body_len=body_len,
                       tensors=metas, body_ref=body_ref)  # fmt: skip
        return reply, parts


@pytest.fixture
async def front_door(
    tmp_path: Path, blockbuster: BlockBuster
) -> AsyncIterator[tuple[str, EchoApp]]:
    """The app and a sidecar fronting it as service "echo"; the sidecar's local gRPC."""
    app = EchoApp()
    server = LinkServer(app.handle, app.limits, BufferPool())
    address = await server.listen_tcp("127.0.0.1", 0)
    static = tmp_path / "mesh.yaml"
    await asyncio.to_thread(static.write_text, "services: {}\n")
    argv = ["--service", "echo", "--app", f"tcp://{address}",
            "--discovery", f"static://{static}", "--mesh-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--admin-addr", "127.0.0.1:0", "--app-health-interval", "0.05"]  # fmt: skip
    config = await asyncio.to_thread(load_run_config, argv, {})
    daemon = Daemon(config, {})
    try:
        await daemon.start()
        async with asyncio.timeout(10):
            # Readiness is a property the app probe (every 50 ms) sets: polled.
            while not daemon.ready:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        yield daemon.addresses["grpc"], app
    finally:
        # grpc.aio joins its poller thread when its last server stops: not ours to fix.
        blockbuster.deactivate()
        try:
            await daemon.aclose()
            await server.aclose()
            gc.collect()
        finally:
            blockbuster.activate()


@pytest.fixture
async def client(front_door: tuple[str, EchoApp]) -> AsyncIterator[Any]:
    c = aioclient.InferenceServerClient(url=front_door[0])
    try:
        yield c
    finally:
        await c.close()


def tensor(x: Any, name: str = "x") -> Any:
    t = aioclient.InferInput(name, list(x.shape), "FP32")
    t.set_data_from_numpy(x)
    return t


async def test_the_grpc_deadline_becomes_the_mesh_requests(
    front_door: tuple[str, EchoApp], client: Any
) -> None:
    _, app = front_door
    x = np.arange(4, dtype=np.float32)
    await client.infer("echo", [tensor(x)], parameters={"tag": "with"}, client_timeout=5)
    await client.infer("echo", [tensor(x)], parameters={"tag": "without"})
    with_deadline = app.remaining["with"]
    # gRPC rounds a timeout up on the wire (fewer digits compress better in HPACK).
    assert with_deadline is not None and 0 < with_deadline <= 6, app.remaining
    assert app.remaining["without"] is None, app.remaining


async def test_a_request_past_its_deadline_is_deadline_exceeded(
    front_door: tuple[str, EchoApp], client: Any
) -> None:
    _, app = front_door
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(InferenceServerException) as caught:
        await client.infer(  # the request's own timeout (µs) is shorter than the call's
            "echo", [tensor(np.ones(2, np.float32))], parameters={"sleep": 30.0},
            timeout=200_000, client_timeout=20,
        )  # fmt: skip
    assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert loop.time() - started < 10
    async with asyncio.timeout(10):
        await app.cancelled.wait()


async def test_a_cancelled_stream_cancels_the_requests_it_started(
    front_door: tuple[str, EchoApp], client: Any
) -> None:
    _, app = front_door

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "echo", "inputs": [tensor(np.ones(2, np.float32))],
               "parameters": {"sleep": 30.0}}  # fmt: skip
        await asyncio.Event().wait()  # the client keeps its side open

    answers = client.stream_infer(requests())
    task = asyncio.get_running_loop().create_task(anext(answers))
    async with asyncio.timeout(10):
        while not app.remaining:  # noqa: ASYNC110  # the app's own record, polled
            await asyncio.sleep(0.01)
    answers.cancel()  # tritonclient's way to end a stream
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(10):
        await app.cancelled.wait()


async def test_large_tensors_and_streams_never_block_the_loop(client: Any) -> None:
    x = np.random.default_rng(3).standard_normal(2 << 20).astype(np.float32)  # 8 MiB
    result = await client.infer("echo", [tensor(x)], client_timeout=20)
    np.testing.assert_array_equal(result.as_numpy("x"), x)

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for i in range(4):
            yield {"model_name": "echo", "inputs": [tensor(x[i::4])], "request_id": str(i)}

    seen = []
    async with asyncio.timeout(20):
        async for result, error in client.stream_infer(requests()):
            assert error is None
            i = int(result.get_response().id)
            np.testing.assert_array_equal(result.as_numpy("x"), x[i::4])
            seen.append(i)
            if len(seen) == 4:
                break
    assert seen == [0, 1, 2, 3]
