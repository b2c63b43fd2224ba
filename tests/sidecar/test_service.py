"""serve()'s Service and MeshClient together, in one process, over real sockets."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import transport
from sidecar import (
    DeadlineExceeded,
    HandlerError,
    InvalidInput,
    MeshClient,
    RemoteError,
    Service,
    Unavailable,
)
from transport import ErrorCode, Header, Kind

Arrays = dict[str, npt.NDArray[Any]]


async def async_double(inputs: Arrays) -> Arrays:
    return {"y": inputs["x"] * 2}


def sync_double(inputs: Arrays) -> Arrays:
    return {"y": inputs["x"] * 2}


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    services: list[Service] = []

    async def _start(handler: Any, service: str = "double") -> Service:
        svc = Service(handler, service=service)
        await svc.start()
        services.append(svc)
        return svc

    yield _start
    for svc in services:
        await svc.aclose()


@pytest.mark.parametrize("handler", [async_double, sync_double], ids=["async", "sync"])
async def test_sync_and_async_handlers_serve_requests(
    started: Callable[..., Awaitable[Service]], handler: Any
) -> None:
    svc = await started(handler)
    async with MeshClient(svc.address) as client:
        out = await client.infer("double", {"x": np.arange(5, dtype=np.float32)})
    np.testing.assert_array_equal(out["y"], np.arange(5, dtype=np.float32) * 2)


async def test_handler_exception_reaches_the_caller_typed_and_the_service_keeps_serving(
    started: Callable[..., Awaitable[Service]],
) -> None:
    def picky(inputs: Arrays) -> Arrays:
        if inputs["x"].sum() < 0:
            raise ValueError("negative input is not allowed")
        return {"y": inputs["x"]}

    svc = await started(picky)
    async with MeshClient(svc.address) as client:
        with pytest.raises(HandlerError, match="negative input is not allowed") as info:
            await client.infer("double", {"x": -np.ones(3)})
        assert info.value.remote_type == "ValueError"
        assert info.value.code is ErrorCode.HANDLER_ERROR
        assert (await client.infer("double", {"x": np.ones(3)}))["y"].sum() == 3
    assert svc.stats.requests == 2 and svc.stats.failures == 1


async def test_handler_returning_something_else_than_a_dict_is_a_handler_error(
    started: Callable[..., Awaitable[Service]],
) -> None:
    async def wrong(inputs: Arrays) -> Any:
        return [1, 2, 3]

    svc = await started(wrong)
    async with MeshClient(svc.address) as client:
        with pytest.raises(HandlerError, match="expected a dict of arrays"):
            await client.infer("double", {})


async def test_handler_output_that_cannot_be_sent_is_a_handler_error(
    started: Callable[..., Awaitable[Service]],
) -> None:
    async def complex_out(inputs: Arrays) -> Arrays:
        return {"z": np.zeros(2, dtype=np.complex128)}

    svc = await started(complex_out)
    async with MeshClient(svc.address) as client:
        with pytest.raises(HandlerError, match="cannot be sent"):
            await client.infer("double", {})


async def test_unknown_service_is_not_found(started: Callable[..., Awaitable[Service]]) -> None:
    svc = await started(async_double)
    async with MeshClient(svc.address) as client:
        with pytest.raises(RemoteError, match="unknown service 'triple'") as info:
            await client.infer("triple", {"x": np.ones(1)})
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_inputs_the_protocol_cannot_carry_raise_invalid_input_before_sending(
    started: Callable[..., Awaitable[Service]],
) -> None:
    svc = await started(async_double)
    async with MeshClient(svc.address) as client:
        with pytest.raises(InvalidInput, match="complex"):
            await client.infer("double", {"x": np.ones(2, dtype=np.complex64)})
    assert svc.stats.requests == 0


async def test_timeout_raises_deadline_exceeded_and_cancels_the_handler(
    started: Callable[..., Awaitable[Service]],
) -> None:
    cancelled = asyncio.Event()

    async def stuck(inputs: Arrays) -> Arrays:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    svc = await started(stuck)
    async with MeshClient(svc.address) as client:
        with pytest.raises(DeadlineExceeded):
            await client.infer("double", {}, timeout=0.1)
        async with asyncio.timeout(5):
            await cancelled.wait()
        assert isinstance(DeadlineExceeded("x"), TimeoutError)


async def test_many_concurrent_callers_share_one_connection(
    started: Callable[..., Awaitable[Service]],
) -> None:
    svc = await started(async_double)
    async with MeshClient(svc.address) as client:
        outs = await asyncio.gather(
            *(
                client.infer("double", {"x": np.full(1000 * (i % 7), i, np.int64)})
                for i in range(200)
            )
        )
        assert svc.server.connections == 1
    for i, out in enumerate(outs):
        assert (out["y"] == 2 * i).all() and out["y"].size == 1000 * (i % 7)


async def test_connections_option_spreads_callers_over_several_links(
    started: Callable[..., Awaitable[Service]],
) -> None:
    svc = await started(async_double)
    async with MeshClient(svc.address, connections=3) as client:
        await asyncio.gather(*(client.infer("double", {"x": np.ones(10)}) for _ in range(30)))
        assert 1 <= svc.server.connections <= 3


async def test_unreachable_service_raises_unavailable() -> None:
    async with MeshClient("127.0.0.1:1") as client:
        with pytest.raises(Unavailable, match="cannot connect"):
            await client.infer("x", {})


async def test_client_reconnects_after_the_service_restarts_on_the_same_address(
    started: Callable[..., Awaitable[Service]],
) -> None:
    svc = await started(async_double)
    port = int(svc.address.rsplit(":", 1)[1])
    async with MeshClient(svc.address) as client:
        await client.infer("double", {"x": np.ones(1)})
        await svc.aclose()
        with pytest.raises(Unavailable):
            await client.infer("double", {"x": np.ones(1)})
        again = Service(async_double, service="double", port=port)
        await again.start()
        try:
            assert (await client.infer("double", {"x": np.ones(1)}))["y"][0] == 2
        finally:
            await again.aclose()


async def test_outputs_are_read_only_views_and_buffers_return_when_dropped(
    started: Callable[..., Awaitable[Service]],
) -> None:
    svc = await started(async_double)
    async with MeshClient(svc.address, shm_dir="") as client:  # the network path
        out = await client.infer("double", {"x": np.ones(1 << 20, np.float32)})
        assert not out["y"].flags.writeable
        assert client.pool.stats().in_use == 1
        del out
        gc.collect()
        assert client.pool.stats().in_use == 0
    assert svc.pool.stats().in_use == 0


def test_bad_addresses_are_rejected_up_front() -> None:
    with pytest.raises(InvalidInput, match="HOST:PORT"):
        MeshClient("nonsense")
    with pytest.raises(ValueError, match="at least 1"):
        MeshClient("127.0.0.1:1", connections=0)


async def test_pings_are_answered_with_the_load_and_whether_the_app_serves() -> None:
    running, release = asyncio.Event(), asyncio.Event()

    async def app(inputs: Arrays) -> Arrays:
        if "fail" in inputs:
            raise RuntimeError("the model is broken")
        if "wait" in inputs:
            running.set()
            await release.wait()
        return {}

    async with Service(app, service="app", queue_limit=4) as svc:
        link = await transport.connect(svc.address)

        async def pong() -> dict[str, object]:
            reply = await link.request(
                Header(Kind.PING), deadline=asyncio.get_running_loop().time() + 5
            )
            return reply.header.params

        try:
            assert await pong() == {"healthy": True, "load": [0, 4]}
            async with MeshClient(svc.address, shm_dir="") as client, asyncio.timeout(10):
                waiting = asyncio.create_task(client.infer("app", {"wait": np.ones(1)}))
                await running.wait()
                assert await pong() == {"healthy": True, "load": [1, 4]}
                release.set()
                await waiting
                for _ in range(5):  # the link answers all along; the app fails every request
                    with pytest.raises(HandlerError):
                        await client.infer("app", {"fail": np.ones(1)})
                assert await pong() == {"healthy": False, "load": [0, 4]}
                await client.infer("app", {"x": np.ones(1)})
                assert (await pong())["healthy"] is True
        finally:
            await link.aclose()


async def test_a_reply_says_how_long_the_replica_took(
    started: Callable[..., Awaitable[Service]],
) -> None:
    async def nap(inputs: Arrays) -> Arrays:
        await asyncio.sleep(0.05)
        return inputs

    svc = await started(nap, "nap")
    link = await transport.connect(svc.address)
    try:
        metas, parts, body_len = transport.encode_tensors({"x": np.ones(3)}, transport.Limits())
        header = transport.Header(
            transport.Kind.REQUEST, "nap", "infer", body_len=body_len, tensors=metas
        )
        began = time.perf_counter()
        reply = await link.request(header, parts)
        observed = time.perf_counter() - began
    finally:
        await link.aclose()
    took = reply.header.params["took"]
    assert isinstance(took, float) and 0.05 <= took <= observed
